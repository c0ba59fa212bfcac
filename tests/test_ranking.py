"""The one top-k (backend.ranking) against a brute-force sort of (score, index) pairs: ties, zeros, negatives, NaN."""
from __future__ import annotations

import numpy as np
import pytest

from backend.ranking import NO_INDEX, bottom_k, top_k, top_k_rows


def brute(scores, k, signed, largest):
    """The rule written out: eligible scores sorted by (score, index), descending scores for `largest`."""
    keep = [i for i, s in enumerate(scores) if not np.isnan(s) and (not signed or (s > 0 if largest else s < 0))]
    return [i for _, i in sorted(((-scores[i] if largest else scores[i]), i) for i in keep)][:k]


@pytest.mark.parametrize("k", [1, 3, 10, 60, 500])
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_top_and_bottom_k_follow_the_rule(k, signed, dtype):
    rng = np.random.default_rng(k)
    scores = np.round(rng.normal(size=300), 1)  # many ties, and about 1 in 25 exactly zero
    scores = scores.astype(dtype) if dtype is not np.int64 else np.round(scores * 3).astype(np.int64)
    if dtype is not np.int64:
        scores[rng.random(300) < 0.05] = np.nan
    assert top_k(scores, k, signed).tolist() == brute(scores, k, signed, True)
    assert bottom_k(scores, k, signed).tolist() == brute(scores, k, signed, False)
    assert top_k(scores, k, signed).dtype == np.int64


def test_two_positive_weights_give_two_images_for_top_ten():
    # The example: a sparse datamodel with 2 positive weights.
    w = np.zeros(50)
    w[[7, 31]] = [0.2, 0.5]
    w[[3]] = -0.1
    assert top_k(w, 10).tolist() == [31, 7]
    assert bottom_k(w, 10).tolist() == [3]
    assert top_k(w, 10, signed=False).tolist() == [31, 7] + [0, 1, 2, 4, 5, 6, 8, 9]


def test_rows_pad_with_no_index_and_equal_the_one_row_version():
    rng = np.random.default_rng(0)
    rows = np.round(rng.normal(size=(9, 40)), 1).astype(np.float32)
    rows[rng.random(rows.shape) < 0.6] = 0.0
    rows[0] = 0.0
    for largest, one in ((True, top_k), (False, bottom_k)):
        got = top_k_rows(rows, 12, largest=largest)
        assert got.shape == (9, 12)
        for r, row in enumerate(rows):
            want = one(row, 12).tolist()
            assert got[r].tolist() == want + [NO_INDEX] * (12 - len(want))


def test_empty_and_zero_k():
    assert top_k(np.zeros(0), 5).tolist() == [] and top_k(np.ones(4), 0).tolist() == []
    assert top_k_rows(np.ones((2, 3)), 10).shape == (2, 3)
