"""Small random datamodel problems (fixed-size random subsets, margins with a sparse linear signal) and the
scikit-learn oracle the solver is held to."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import Lasso


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


def rows_of(masks, column, n_train):
    """The models a target is fitted on: all, or for a training target those that left it out (eq. 9)."""
    return ~masks[:, column] if column < n_train else np.ones(len(masks), dtype=bool)


def objective(x, y, w, b, lam):
    """scikit-learn's Lasso objective on rows x, y."""
    r = y - b - x @ w
    return r @ r / (2 * len(y)) + lam * np.abs(w).sum()


def sklearn_lasso(x, y, lam):
    """scikit-learn's Lasso, converged far past the solver's tolerance."""
    return Lasso(alpha=lam, tol=1e-12, max_iter=1_000_000).fit(x, y)
