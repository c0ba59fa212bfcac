"""Independent oracles the tests hold the code to: scikit-learn's Lasso, brute-force cosine, a brute-force kNN graph.

One module, so no test file imports another's helpers.
"""
from __future__ import annotations

import warnings

import numpy as np
from scipy.spatial.distance import pdist, squareform
from sklearn.exceptions import ConvergenceWarning
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


def rows_of(masks, column, n_train):
    """The models a target is fitted on: all, or for a training target those that left it out (eq. 9)."""
    return ~masks[:, column] if column < n_train else np.ones(len(masks), dtype=bool)


def objective(x, y, w, b, lam):
    """scikit-learn's Lasso objective on rows x, y."""
    r = y - b - x @ w
    return r @ r / (2 * len(y)) + lam * np.abs(w).sum()


def sklearn_datamodels(masks, margins, columns, alpha: float, *, eq9: bool = True, **lasso_kw) -> tuple[np.ndarray, np.ndarray]:
    """Datamodels of targets `columns` by scikit-learn's Lasso(alpha, **lasso_kw): the test fixtures' one stand-in fit.

    masks : (n_models, n_train) bool; margins : (n_models, n_targets). The test targets (every column when
    eq9=False) share one multi-target fit on all models; a training target is fitted alone on the models that left
    it out (eq. 9). Returns weights float32 (len(columns), n_train) and intercepts float64 (len(columns),).
    """
    n_train, columns = masks.shape[1], np.asarray(columns)
    x = masks.astype(np.float64)
    weights, intercepts = np.zeros((len(columns), n_train), dtype=np.float32), np.zeros(len(columns))
    shared = columns >= n_train if eq9 else np.ones(len(columns), dtype=bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if shared.any():
            fit = Lasso(alpha=alpha, **lasso_kw).fit(x, margins[:, columns[shared]])
            weights[shared], intercepts[shared] = fit.coef_, fit.intercept_
        for j in np.flatnonzero(~shared):
            rows = ~masks[:, columns[j]]
            fit = Lasso(alpha=alpha, **lasso_kw).fit(x[rows], margins[rows, columns[j]])
            weights[j], intercepts[j] = fit.coef_, fit.intercept_
    return weights, intercepts


def save_test_target_lasso(run_dir, alpha: float) -> None:
    """weights.npy of run_dir from sklearn_datamodels of its test targets (training targets left at zero)."""
    masks, margins = np.load(run_dir / "masks.npy"), np.load(run_dir / "margins.npy")
    n_train, n_targets = masks.shape[1], margins.shape[1]
    weights = np.zeros((n_targets, n_train), dtype=np.float32)
    weights[n_train:] = sklearn_datamodels(masks, margins, np.arange(n_train, n_targets), alpha, tol=1e-3, max_iter=2000)[0]
    np.save(run_dir / "weights.npy", weights)


def sklearn_lasso(x, y, lam):
    """scikit-learn's Lasso, converged far past the solver's tolerance."""
    return Lasso(alpha=lam, tol=1e-12, max_iter=1_000_000).fit(x, y)


def tie_rule_best(scores, rtol: float) -> int:
    """The step a path picks from its validation scores (large λ first) by a plain loop: a step is the new
    best only when its score is below the best so far by more than rtol relatively (the larger λ wins ties)."""
    best, best_score = 0, np.inf
    for k, s in enumerate(scores):
        if s < (best_score if np.isinf(best_score) else best_score * (1 - rtol)):
            best, best_score = k, s
    return best


def unit(x, dtype=np.float64) -> np.ndarray:
    """Rows scaled to unit L2 norm; zero rows stay zero."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norms > 0, norms, 1)).astype(dtype)


def brute_force_cosine_knn(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k most similar other rows by dot product (cosine for unit rows), by a full stable sort."""
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    order = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(sim, order, 1)


def brute_force_knn_rbf(x: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """The kNN RBF affinity built independently: each point's k nearest by a full sort, symmetrised, RBF-weighted."""
    d2 = squareform(pdist(x.astype(np.float64), "sqeuclidean"))
    edges = np.zeros(d2.shape, dtype=bool)
    for i, row in enumerate(d2):
        nearest = [j for j in np.argsort(row, kind="stable") if j != i][:k]
        edges[i, nearest] = edges[nearest, i] = True
    gamma = 1 / np.median(d2[edges])
    return np.where(edges, np.exp(-gamma * d2), 0.0) + np.eye(len(x)), gamma
