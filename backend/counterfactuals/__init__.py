"""Counterfactuals: remove (or relabel) training images, predict the change, verify by retraining.

    removal     removal sets (the paper's heuristics) and which requests are refused
    predict     predicted margin change −Σ w over the set; retraining through the retrain store
    support     certified data support (brittleness, §4.1.1)
    evaluation  the Figure 8 experiment: predicted against retrained
"""
