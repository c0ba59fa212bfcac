"""Exact cosine neighbours, held sparse or dense, against a brute-force cosine ranking."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.structure.embeddings import SPARSE_MAX_DENSITY, EmbeddingRows, HeldEmbeddings
from backend.structure.similar_targets import nearest_targets
from tests.oracles import brute_force_cosine_knn, unit


def unit32(x):
    return unit(x, np.float32)


def sparse_rows(n=300, d=400, nnz=8, seed=0):
    """Rows with nnz non-zeros each, in groups sharing most of their support (so neighbours are meaningful)."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, d), dtype=np.float32)
    support = rng.integers(0, d, size=(n // 10, nnz))
    for i in range(n):
        cols = np.where(rng.random(nnz) < 0.7, support[i // 10], rng.integers(0, d, nnz))
        x[i, cols] = rng.normal(size=nnz)
    x[5] = 0  # an empty datamodel
    return x


def held(x, block_rows=None):
    return HeldEmbeddings(EmbeddingRows(x, block_rows=block_rows))


@pytest.mark.parametrize("block_rows", [1, 7, None])
def test_sparse_embeddings_are_held_sparse_and_searched_exactly(block_rows):
    x = sparse_rows()
    h = held(x, block_rows=17)
    assert h.sparse and h.matrix.nnz == np.count_nonzero(x)
    nb, sim = nearest_targets(h, 10, block_rows=block_rows)
    want_nb, want_sim = brute_force_cosine_knn(unit32(x), 10)
    exact = unit32(x) @ unit32(x).T
    np.testing.assert_allclose(sim, want_sim, atol=1e-5)
    np.testing.assert_allclose(np.take_along_axis(exact, nb, 1), sim, atol=1e-5)
    # Most cosines are exactly 0 (disjoint supports), so ties make the indices differ; each row's list is
    # still distinct, never itself, and identical wherever it stands clear of ties.
    assert all(len(set(row)) == 10 for row in nb) and not (nb == np.arange(len(x))[:, None]).any()
    clear = want_sim[:, -1] > np.sort(np.where(np.eye(len(x), dtype=bool), -np.inf, exact), 1)[:, -11] + 1e-4
    assert clear.sum() > 100
    np.testing.assert_array_equal(np.sort(nb[clear], 1), np.sort(want_nb[clear], 1))


def test_dense_embeddings_switch_to_dense_midway_and_give_the_same_neighbours():
    x = sparse_rows()
    x[200:] = np.random.default_rng(2).normal(size=(100, x.shape[1]))  # dense rows after 200 sparse ones
    h = held(x, block_rows=50)
    assert not h.sparse and isinstance(h.matrix, torch.Tensor) and h.matrix.shape == x.shape
    np.testing.assert_allclose(h.matrix.numpy(), unit32(x), atol=1e-6)
    nb, sim = nearest_targets(h, 5, block_rows=64)
    np.testing.assert_allclose(sim, brute_force_cosine_knn(unit32(x), 5)[1], atol=1e-5)
    assert np.count_nonzero(x[:200]) <= SPARSE_MAX_DENSITY * x[:200].size < np.count_nonzero(x)


def test_exact_search_equals_brute_force_and_never_returns_self():
    x = unit32(np.random.default_rng(0).normal(size=(200, 16)))
    nb, sim = nearest_targets(held(x), 5)
    want_nb, want_sim = brute_force_cosine_knn(x, 5)
    np.testing.assert_array_equal(nb, want_nb)
    np.testing.assert_allclose(sim, want_sim, atol=1e-5)
    assert not (nb == np.arange(200)[:, None]).any()


def test_duplicates_still_exclude_self():
    x = unit32(np.random.default_rng(1).normal(size=(10, 4)))
    x = np.concatenate([x, x])  # every vector twice: ties at similarity 1
    nb, sim = nearest_targets(held(x), 3)
    assert not (nb == np.arange(20)[:, None]).any()
    np.testing.assert_array_equal(nb[:, 0], np.r_[np.arange(10, 20), np.arange(10)])
    np.testing.assert_allclose(sim[:, 0], 1.0, atol=1e-5)


def test_k_is_capped_at_n_minus_one():
    nb, sim = nearest_targets(held(unit32(np.eye(4))), 10)
    assert nb.shape == sim.shape == (4, 3)


def test_blocks_searched_on_threads_equal_the_one_thread_search():
    h = held(sparse_rows())
    one = nearest_targets(h, 6, block_rows=13, workers=1)
    threaded = nearest_targets(h, 6, block_rows=13, workers=3)
    np.testing.assert_array_equal(threaded[0], one[0])
    np.testing.assert_array_equal(threaded[1], one[1])
