"""Train-test leakage: candidate lists, the annotators' votes, and what the votes say.

    candidates   top weights, feature and pixel neighbours, rank fusion, the review queue
    analysis     the leakage part of `analyze`: RUN/leakage/, recall on planted leaks
    duplicates   every train-test pair within a pixel radius: the ground truth on a real dataset
    annotations  the annotation database (SQLAlchemy)
    scores       annotation scores per pair, leakage scores per image
    agreement    inter-annotator agreement (Cohen's and Fleiss' κ)
"""
