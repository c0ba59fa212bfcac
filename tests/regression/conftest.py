"""Small random datamodel problems: fixed-size random subsets and margins with a sparse linear signal."""
from __future__ import annotations

import numpy as np
import pytest


def random_problem(n_models: int = 160, n_train: int = 24, n_test: int = 4, alpha: float = 0.5,
                   noise: float = 0.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """masks (n_models, n_train) bool with round(alpha·n_train) ones per row, margins (n_models, n_train + n_test)."""
    rng = np.random.default_rng(seed)
    size = int(round(alpha * n_train))
    masks = np.zeros((n_models, n_train), dtype=bool)
    for i in range(n_models):
        masks[i, rng.choice(n_train, size, replace=False)] = True
    n_targets = n_train + n_test
    w = rng.normal(size=(n_train, n_targets)) * (rng.random((n_train, n_targets)) < 0.25)
    w[np.arange(n_train), np.arange(n_train)] = 2.0  # a training example helps itself
    margins = masks @ w + noise * rng.normal(size=(n_models, n_targets)) + 1.0
    return masks, margins.astype(np.float32)


@pytest.fixture(scope="module")
def problem():
    return random_problem()
