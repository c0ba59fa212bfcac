"""Inter-annotator agreement: how far the leak votes agree beyond what chance would give.

Cohen's κ (Cohen 1960) compares two annotators on the items both rated; Fleiss' κ (Fleiss 1971)
summarises any number of annotators per item. Both are (p_o − p_e) / (1 − p_e): observed
agreement corrected by the agreement expected from the label frequencies alone.
"""
from __future__ import annotations

import numpy as np


def cohen_kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's κ of two annotators' labels on the same items (sklearn.metrics.cohen_kappa_score).

    a, b : ndarray of shape (n_items,), any hashable labels
    Returns nan when κ is undefined: no items, or both annotators always gave one same label (p_e = 1);
    those are checked here because scikit-learn raises or warns on them.
    """
    a, b = np.asarray(a), np.asarray(b)
    if len(a) == 0 or len(np.unique(np.concatenate([a, b]))) < 2:
        return float("nan")
    from sklearn.metrics import cohen_kappa_score  # (sklearn takes seconds to import: not at page start)

    return float(cohen_kappa_score(a, b))


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' κ from a table of how many annotators put each item in each category.

    counts : int ndarray of shape (n_items, n_categories); row i sums to n_i, the annotators of item i.
    Items may have different n_i: an item's agreement P_i is the fraction of its n_i (n_i − 1) ordered
    annotator pairs that agree, P̄ their mean, and P_e the chance agreement of the pooled category
    frequencies. With a constant n this is Fleiss (1971) exactly. Items with fewer than two
    annotators carry no agreement and are left out. Returns nan when undefined (no such item, P_e = 1).
    """
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.sum(axis=1)
    counts, n = counts[n >= 2], n[n >= 2]
    if len(n) == 0:
        return float("nan")
    per_item = ((counts * (counts - 1)).sum(axis=1)) / (n * (n - 1))
    p_bar = per_item.mean()
    p_category = counts.sum(axis=0) / n.sum()
    p_e = float(np.sum(p_category ** 2))
    if p_e == 1.0:
        return float("nan")
    return float((p_bar - p_e) / (1.0 - p_e))


def pairwise_cohen_kappa(ratings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cohen's κ of every pair of annotators on the items both rated.

    ratings : float ndarray of shape (n_items, n_annotators); nan where an annotator did not rate the item
    Returns (kappa, overlap), each of shape (n_annotators, n_annotators): κ (nan where undefined or
    where the pair shares no item) and the number of items both rated. The diagonal holds each
    annotator's own item count and κ = 1.
    """
    ratings = np.asarray(ratings, dtype=np.float64)
    rated = ~np.isnan(ratings)
    n_annotators = ratings.shape[1]
    overlap = rated.T.astype(np.int64) @ rated.astype(np.int64)
    kappa = np.full((n_annotators, n_annotators), np.nan)
    for i in range(n_annotators):
        kappa[i, i] = 1.0 if overlap[i, i] else np.nan
        for j in range(i + 1, n_annotators):
            both = rated[:, i] & rated[:, j]
            kappa[i, j] = kappa[j, i] = cohen_kappa(ratings[both, i], ratings[both, j])
    return kappa, overlap


def category_counts(ratings: np.ndarray, categories: np.ndarray) -> np.ndarray:
    """The Fleiss table from a ratings matrix.

    ratings : float ndarray of shape (n_items, n_annotators), nan = not rated
    categories : ndarray of shape (n_categories,)
    Returns int ndarray of shape (n_items, n_categories).
    """
    ratings = np.asarray(ratings, dtype=np.float64)
    return np.stack([(ratings == c).sum(axis=1) for c in np.asarray(categories, dtype=np.float64)], axis=1)
