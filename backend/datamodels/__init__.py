"""Datamodels: one LASSO per target from masks to margins, how well they predict, and queries on them.

    lasso       batched LASSO paths (FISTA) on 0/1 designs
    fit         the `fit` stage (fit_run): λ selection on a validation split, refit, weights.npy
    evaluation  the `eval` stage (evaluate_run): held-out LDS, sample complexity, Table 5
    quality     the eval stage's outputs read back for the dashboard
    queries     a target's top weights and weight profile (the Neighbours page)
"""
