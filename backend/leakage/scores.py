"""From leak votes to scores: the paper's annotation score per pair and leakage score per test image.

Ilyas et al. (2022, Sec. 4.3, Fig. 11): a pair's *annotation score* is the fraction of its
annotators who marked it "same scene / near duplicate"; a test image's *leakage score* is the
largest annotation score among its candidates.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:  # (the database layer loads SQLAlchemy; scoring reads the votes' fields alone)
    from backend.leakage.annotations import Vote


@dataclass(frozen=True)
class PairScores:
    """One row per voted (test, train) pair, sorted by test then train.

    test, train : int64 ndarray of shape (n_pairs,)
    n_votes, n_leak : int64 ndarray of shape (n_pairs,), annotators who voted / who marked a leak
    """

    test: np.ndarray
    train: np.ndarray
    n_votes: np.ndarray
    n_leak: np.ndarray

    @property
    def score(self) -> np.ndarray:
        """float ndarray of shape (n_pairs,): the annotation score n_leak / n_votes."""
        return self.n_leak / np.maximum(self.n_votes, 1)

    @property
    def conflict(self) -> np.ndarray:
        """bool ndarray of shape (n_pairs,): annotators disagree (some, not all, marked a leak)."""
        return (self.n_leak > 0) & (self.n_leak < self.n_votes)


def pair_scores(votes: Sequence[Vote]) -> PairScores:
    """Count the votes of each (test, train) pair."""
    if not votes:
        empty = np.zeros(0, dtype=np.int64)
        return PairScores(empty, empty, empty, empty)
    keys = np.array([(v.test, v.train) for v in votes], dtype=np.int64)
    leak = np.array([v.is_leak for v in votes], dtype=np.int64)
    pairs, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    return PairScores(
        test=pairs[:, 0], train=pairs[:, 1],
        n_votes=np.bincount(inverse, minlength=len(pairs)).astype(np.int64),
        n_leak=np.bincount(inverse, weights=leak, minlength=len(pairs)).astype(np.int64),
    )


def image_scores(pairs: PairScores) -> tuple[np.ndarray, np.ndarray]:
    """(tests, leakage score): each voted test image's largest annotation score over its candidates.

    Returns int64 ndarray of shape (n_images,) sorted, and float ndarray of shape (n_images,).
    """
    tests, inverse = np.unique(pairs.test, return_inverse=True)
    best = np.zeros(len(tests))
    np.maximum.at(best, inverse, pairs.score)
    return tests, best


def rating_matrix(votes: Sequence[Vote]) -> tuple[list[str], PairScores, np.ndarray]:
    """The votes as an items × annotators table for the agreement statistics.

    Returns (annotator names sorted, the pairs as items, ratings float ndarray of shape
    (n_pairs, n_annotators) with 1 = leak, 0 = not a leak, nan = not voted).
    """
    pairs = pair_scores(votes)
    names = sorted({v.annotator for v in votes})
    ratings = np.full((len(pairs.test), len(names)), np.nan)
    if votes:
        column = {name: i for i, name in enumerate(names)}
        row = {(t, s): i for i, (t, s) in enumerate(zip(pairs.test.tolist(), pairs.train.tolist()))}
        for v in votes:
            ratings[row[(v.test, v.train)], column[v.annotator]] = float(v.is_leak)
    return names, pairs, ratings
