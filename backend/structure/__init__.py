"""Structure of datamodel space (Ilyas et al. 2022, §4.3, App. I and J).

    embeddings       unit datamodel embeddings and their PCA
    clusters         spectral clusters of test targets
    similar_targets  targets with similar datamodels (faiss kNN)
    faithfulness     App. J: remove a component's extreme examples, retrain, measure
    analyze          the structure half of the `analyze` stage: all of the above, written to RUN/structure/
"""
