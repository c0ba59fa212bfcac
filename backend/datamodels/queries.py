"""Queries behind the neighbours page: a target's strongest datamodel weights and how to find targets.

A datamodel weight w_j is the estimated change in the target's margin from including training image j
(Ilyas et al. 2022, §2): the top positive weights are the training images that most help the
prediction, the top negative ones those that most hurt it. Every function reads one weights row
(n_train floats) or the labels, so a query costs the same at CIFAR scale as on digits.
"""
from __future__ import annotations

import numpy as np

from backend.ranking import bottom_k, top_k


def top_weights(weights: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The training images with the k largest positive and the k most negative weights (backend.ranking's rule).

    weights : ndarray of shape (n_train,), one target's datamodel
    Returns (positive, negative): int64 index arrays of length at most k, positive by weight
    descending, negative by weight ascending (most negative first). Zero weights are never returned,
    so a sparse datamodel may give fewer than k of either.
    """
    return top_k(weights, k), bottom_k(weights, k)


def weight_profile(weights: np.ndarray, max_points: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """The nonzero weights sorted from most positive to most negative, for a profile chart.

    weights : ndarray of shape (n_train,)
    Returns (indices, values) of shape (n,): training-image indices and their weights. When more than
    max_points weights are nonzero, only the max_points // 2 largest and smallest are kept; the middle
    of the profile is the flat part near zero.
    """
    weights = np.asarray(weights)
    nonzero = np.flatnonzero(weights)
    if len(nonzero) > max_points:
        half = max_points // 2
        positive, negative = top_weights(weights, half)
        order = np.concatenate([positive, negative[::-1]])
    else:
        order = nonzero[np.argsort(-weights[nonzero], kind="stable")]
    return order.astype(np.int64), weights[order]


def sparsity(weights: np.ndarray) -> int:
    """Number of nonzero weights of one datamodel (weights : ndarray of shape (n_train,))."""
    return int(np.count_nonzero(weights))


def class_members(labels: np.ndarray, start: int, stop: int, label: int) -> np.ndarray:
    """Target columns in [start, stop) whose label is `label`, ascending.

    labels : ndarray of shape (n_targets,); [start, stop) is a split's column range, e.g. the test set.
    """
    return start + np.flatnonzero(np.asarray(labels[start:stop]) == label).astype(np.int64)


def fitted_targets(lam) -> np.ndarray:
    """bool (n_targets,) from lam.npy: the targets with a datamodel. `fit --targets` leaves every target it did
    not fit with NaN λ and bias and zero weights (an import of part of a release leaves NaN λ too)."""
    return np.isfinite(np.asarray(lam))
