"""backend.datamodels.queries against brute force (full sorts), including sparse rows, ties to zero and NaNs."""
from __future__ import annotations

import numpy as np
import pytest

from backend.datamodels.queries import class_members, sparsity, top_weights, weight_profile
from backend.training.target_stats import lowest_targets


def brute_top(weights, k):
    positive = [j for j in np.argsort(-weights, kind="stable") if weights[j] > 0][:k]
    negative = [j for j in np.argsort(weights, kind="stable") if weights[j] < 0][:k]
    return positive, negative


@pytest.mark.parametrize("k", [1, 5, 50, 2000])
@pytest.mark.parametrize("density", [1.0, 0.05, 0.0])
def test_top_weights_match_a_full_sort(k, density):
    rng = np.random.default_rng(k)
    weights = rng.standard_normal(1000).astype(np.float32)
    weights[rng.random(1000) >= density] = 0
    positive, negative = top_weights(weights, k)
    want_pos, want_neg = brute_top(weights, k)
    assert positive.tolist() == want_pos and negative.tolist() == want_neg
    assert positive.dtype == np.int64 and negative.dtype == np.int64


def test_top_weights_reads_memmaps(tmp_path):
    weights = np.random.default_rng(0).standard_normal((3, 400)).astype(np.float32)
    np.save(tmp_path / "w.npy", weights)
    mapped = np.load(tmp_path / "w.npy", mmap_mode="r")
    for got, want in zip(top_weights(mapped[1], 7), brute_top(weights[1], 7)):
        assert got.tolist() == want


def test_weight_profile_is_the_sorted_nonzero_weights():
    rng = np.random.default_rng(1)
    weights = rng.standard_normal(500) * (rng.random(500) < 0.2)
    indices, values = weight_profile(weights)
    nonzero = np.flatnonzero(weights)
    assert sorted(indices.tolist()) == nonzero.tolist()
    assert np.all(np.diff(values) <= 0) and np.array_equal(values, weights[indices])
    assert sparsity(weights) == len(nonzero)


def test_weight_profile_keeps_both_ends_when_capped():
    weights = np.random.default_rng(2).standard_normal(10_000)
    indices, values = weight_profile(weights, max_points=100)
    order = np.argsort(-weights)
    assert indices.tolist() == order[:50].tolist() + order[-50:].tolist()
    assert np.all(np.diff(values) <= 0)


def test_class_members_and_lowest_targets_stay_inside_the_split():
    rng = np.random.default_rng(3)
    labels = rng.integers(4, size=300)
    members = class_members(labels, 200, 300, 2)
    assert members.tolist() == [c for c in range(200, 300) if labels[c] == 2]
    mean_margin = rng.standard_normal(300)
    mean_margin[[205, 250]] = np.nan
    got = lowest_targets(mean_margin, 200, 300, 10)
    finite = [c for c in range(200, 300) if np.isfinite(mean_margin[c])]
    assert got.tolist() == sorted(finite, key=lambda c: mean_margin[c])[:10]
    assert lowest_targets(np.full(300, np.nan), 200, 300, 10).tolist() == []
