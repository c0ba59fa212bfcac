"""The one top-k: which entries of a score vector come first, and the one rule for zero, negative and NaN.

The rule, everywhere (the CLI's `--remove top:k`, the pages' "add the top 10", the support search, the
leakage candidates, the PCA extremes, the target lists):
- `top_k` returns the k largest scores, largest first; `bottom_k` the k smallest, smallest first.
- Ties go to the lower index first, so a result never depends on the sort's algorithm.
- NaN is never returned.
- `signed=True` (the default, for weights and attribution scores): only strictly positive scores are
  top, only strictly negative ones bottom. A datamodel weight w_j is the estimated change in the target's
  margin from including training image j (Ilyas et al. 2022, §2), so a zero weight neither helps nor hurts
  and is never offered: a sparse datamodel with 2 positive weights gives 2 images for top 10, not 10.
- `signed=False` (for coordinates and statistics, where zero is an ordinary value): every finite score ranks.
A partition finds the candidates, and only they are sorted: a query costs O(n + k log k), which is what
lets a page ask for one row of a 50,000-image run on every rerun.
"""
from __future__ import annotations

import numpy as np

# Marks an empty slot of a row in top_k_rows (a row with fewer than k eligible scores).
NO_INDEX = -1


def top_k(scores: np.ndarray, k: int, signed: bool = True) -> np.ndarray:
    """Indices of the k largest scores, largest first (the rule above).

    scores : ndarray of shape (n,). Returns int64 of shape (m,), m ≤ min(k, n): fewer when fewer scores
    are eligible (signed: strictly positive; always: not NaN).
    """
    row = top_k_rows(np.asarray(scores)[None], k, signed)[0]
    return row[row != NO_INDEX]


def bottom_k(scores: np.ndarray, k: int, signed: bool = True) -> np.ndarray:
    """Indices of the k smallest scores, smallest first (signed: strictly negative ones only)."""
    row = top_k_rows(np.asarray(scores)[None], k, signed, largest=False)[0]
    return row[row != NO_INDEX]


def top_k_rows(scores: np.ndarray, k: int, signed: bool = True, largest: bool = True) -> np.ndarray:
    """top_k (largest=False: bottom_k) of every row at once.

    scores : ndarray of shape (n_rows, n). Returns int64 of shape (n_rows, min(k, n)); a row with fewer
    eligible scores ends in NO_INDEX.
    """
    scores = np.asarray(scores)
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)  # float rows keep their dtype: negation is exact, so is the order
    n_rows, n = scores.shape
    k = max(0, min(int(k), n))
    out = np.full((n_rows, k), NO_INDEX, dtype=np.int64)
    if k == 0 or n_rows == 0:
        return out
    # cost: ascending is the order wanted; an ineligible score costs +inf and is dropped at the end.
    cost = -scores if largest else scores.copy()
    ineligible = np.isnan(scores) | ((scores <= 0) if largest else (scores >= 0)) if signed else np.isnan(scores)
    cost[ineligible] = np.inf
    part = np.argpartition(cost, k - 1, axis=1)[:, :k] if k < n else np.tile(np.arange(n), (n_rows, 1))
    # A tie at the k-th cost may have put a higher index in place of a lower one: those rows are redone exactly.
    kth = np.take_along_axis(cost, part, axis=1).max(axis=1, keepdims=True)
    tied = ((cost == kth).sum(axis=1) > (np.take_along_axis(cost, part, axis=1) == kth).sum(axis=1)) & (kth[:, 0] < np.inf)
    for r in np.flatnonzero(tied):
        part[r] = np.argsort(cost[r], kind="stable")[:k]
    part = np.sort(part, axis=1)  # by index first, so the stable sort below breaks ties by the lower index
    picked = np.take_along_axis(cost, part, axis=1)
    order = np.argsort(picked, axis=1, kind="stable")
    part, picked = np.take_along_axis(part, order, axis=1), np.take_along_axis(picked, order, axis=1)
    out[:] = np.where(np.isinf(picked) & (picked > 0), NO_INDEX, part)
    return out
