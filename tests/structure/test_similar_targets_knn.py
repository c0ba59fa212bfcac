"""faiss neighbours against a brute-force cosine ranking."""
from __future__ import annotations

import numpy as np
from sklearn.datasets import make_blobs

from backend.structure.similar_targets import nearest_targets
from tests.oracles import brute_force_cosine_knn, unit


def unit32(x):
    return unit(x, np.float32)






def test_exact_search_equals_brute_force_and_never_returns_self():
    x = unit32(np.random.default_rng(0).normal(size=(200, 16)))
    nb, sim = nearest_targets(x, 5)
    want_nb, want_sim = brute_force_cosine_knn(x, 5)
    np.testing.assert_array_equal(nb, want_nb)
    np.testing.assert_allclose(sim, want_sim, atol=1e-5)
    assert not (nb == np.arange(200)[:, None]).any()


def test_duplicates_still_exclude_self():
    x = unit32(np.random.default_rng(1).normal(size=(10, 4)))
    x = np.concatenate([x, x])  # every vector twice: ties at similarity 1
    nb, sim = nearest_targets(x, 3)
    assert not (nb == np.arange(20)[:, None]).any()
    np.testing.assert_array_equal(nb[:, 0], np.r_[np.arange(10, 20), np.arange(10)])
    np.testing.assert_allclose(sim[:, 0], 1.0, atol=1e-5)


def test_k_is_capped_at_n_minus_one():
    nb, sim = nearest_targets(unit32(np.eye(4)), 10)
    assert nb.shape == sim.shape == (4, 3)


def test_inverted_file_index_above_threshold_recalls_the_true_neighbours():
    x, _ = make_blobs(n_samples=3000, centers=30, n_features=24, random_state=0)
    x = unit32(x)
    nb, _ = nearest_targets(x, 10, ivf_threshold=1000)
    want, _ = brute_force_cosine_knn(x, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(nb, want)])
    assert recall > 0.9
