"""Margins stored as float16 (`train --dtype float16`) fit and evaluate as float32 ones do: the held-out
LDS moves by far less than the issue's 0.005 bound (digits, 1,000 models: see README "Run directory format")."""
from __future__ import annotations

import numpy as np

from backend.datamodels.evaluation import lds
from backend.datamodels.fit import fit_datamodels


def test_float16_margins_fit_to_the_same_lds_as_float32():
    rng = np.random.default_rng(0)
    n_train, n_targets, n_fit, n_heldout = 40, 70, 400, 200
    truth = rng.normal(0, 1, (n_targets, n_train)) * (rng.random((n_targets, n_train)) < 0.2)
    masks = rng.random((n_fit + n_heldout, n_train)) < 0.5
    # Margins of the size real ones have (a few units), with model noise: float16 keeps ~3 significant digits.
    margins = (masks @ truth.T + 2.0 + rng.normal(0, 1.0, (len(masks), n_targets))).astype(np.float32)
    results = {}
    for dtype in (np.float32, np.float16):
        stored = margins.astype(dtype)
        fit = fit_datamodels(masks[:n_fit], stored[:n_fit], n_train, n_lambdas=10)
        results[dtype] = lds(fit.weights, fit.bias, masks[n_fit:], stored[n_fit:], n_train)["spearman"]
    assert np.all(np.isfinite(results[np.float16]))
    assert abs(np.mean(results[np.float16]) - np.mean(results[np.float32])) < 0.005
