"""Structure of datamodel space (Ilyas et al. 2022, §4.3, App. I and J).

    embeddings       unit datamodel embeddings and their PCA
    clusters         spectral clusters of test targets
    map_layout       the embeddings map: a 2-D t-SNE of every target's PCA coordinates
    similar_targets  targets with similar datamodels, and one target's nearest rows in any stored space
    faithfulness     App. J: remove a component's extreme examples, retrain, measure
    analyze          the structure half of the `analyze` stage: all of the above, written to RUN/structure/
"""
