"""The streamed PCA of datamodel embeddings against scikit-learn's exact PCA."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA as SkPCA

from backend.store.rows import read_rows
from tests.oracles import unit
from backend.structure.embeddings import (EmbeddingRows, HeldEmbeddings, components_for, count_sketch, embed_targets, extremes,
                                fit_pca, project, sketch_hash, unit_rows)


def low_rank_plus_noise(n: int, d: int, rank: int, seed: int = 0) -> np.ndarray:
    """Rows with a decaying spectrum, like datamodel embeddings: a few strong directions over isotropic noise."""
    rng = np.random.default_rng(seed)
    scales = 3.0 * 0.7 ** np.arange(rank)
    return (rng.normal(size=(n, rank)) * scales @ rng.normal(size=(rank, d)) + rng.normal(size=(n, d))).astype(np.float32)


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    x = low_rank_plus_noise(300, 120, rank=8)
    x[7] = 0.0  # a target whose datamodel is empty
    path = tmp_path_factory.mktemp("emb") / "weights.npy"
    np.save(path, x)
    return np.load(path, mmap_mode="r")




def test_read_rows_matches_indexing_for_runs_gaps_and_views(weights_file):
    rows = np.array([0, 1, 2, 10, 11, 50, 299])
    np.testing.assert_array_equal(read_rows(weights_file, rows), np.asarray(weights_file)[rows])
    tail = weights_file[100:]  # a view of the memmap: must not be read from the file's start
    np.testing.assert_array_equal(read_rows(tail, np.array([0, 5])), np.asarray(weights_file)[[100, 105]])


def test_unit_rows_keeps_zero_rows_zero():
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(unit_rows(x).numpy(), [[0.6, 0.8], [0.0, 0.0]])


def test_exact_pca_matches_sklearn_full_pca_on_every_component(weights_file):
    x = unit(np.asarray(weights_file, dtype=np.float64))
    sk = SkPCA(n_components=10, svd_solver="full").fit(x)
    pca = fit_pca(EmbeddingRows(weights_file, block_rows=37), 10, method="exact")
    np.testing.assert_allclose(pca.components, sk.components_, atol=1e-4)
    np.testing.assert_allclose(pca.explained_variance, sk.explained_variance_, rtol=1e-4)
    np.testing.assert_allclose(pca.explained_variance_ratio, sk.explained_variance_ratio_, rtol=1e-4)
    np.testing.assert_allclose(pca.mean, sk.mean_, atol=1e-6)


def test_randomized_pca_matches_sklearn_full_pca(weights_file):
    x = unit(np.asarray(weights_file, dtype=np.float64))
    sk = SkPCA(n_components=10, svd_solver="full").fit(x)
    pca = fit_pca(EmbeddingRows(weights_file, block_rows=37), 10, method="randomized", n_iter=6)
    # Same sign convention as scikit-learn, so components compare directly.
    np.testing.assert_allclose(pca.components[:8], sk.components_[:8], atol=2e-3)
    # The signal components are exact; the last two sit in the noise floor, where a randomized SVD is close.
    np.testing.assert_allclose(pca.explained_variance[:8], sk.explained_variance_[:8], rtol=1e-4)
    np.testing.assert_allclose(pca.explained_variance_ratio, sk.explained_variance_ratio_, rtol=1e-2)
    np.testing.assert_allclose(pca.mean, sk.mean_, atol=1e-6)
    coords = project(torch.from_numpy(x.astype(np.float32)), pca).numpy()
    np.testing.assert_allclose(coords[:, :8], sk.transform(x)[:, :8], atol=5e-3)


@pytest.mark.parametrize("method", ["exact", "randomized"])
def test_pca_of_a_row_subset_is_the_pca_of_those_rows(weights_file, method):
    rows = np.arange(0, 300, 3)
    x = unit(np.asarray(weights_file, dtype=np.float64)[rows])
    sk = SkPCA(n_components=5, svd_solver="full").fit(x)
    pca = fit_pca(EmbeddingRows(weights_file, rows, block_rows=16), 5, method=method, n_iter=6)
    assert pca.n_samples == len(rows)
    np.testing.assert_allclose(pca.explained_variance[:4], sk.explained_variance_[:4], rtol=5e-3)
    assert np.isclose(pca.total_variance, np.var(x, axis=0, ddof=1).sum(), rtol=1e-5)


@pytest.mark.parametrize("method", ["exact", "randomized"])
def test_more_components_than_dimensions_is_capped(method):
    x = np.random.default_rng(1).normal(size=(50, 6)).astype(np.float32)
    pca = fit_pca(EmbeddingRows(x), 20, method=method)
    sk = SkPCA(svd_solver="full").fit(unit(x.astype(np.float64)))
    assert pca.components.shape == (6, 6)
    np.testing.assert_allclose(pca.explained_variance_ratio.sum(), 1.0, rtol=1e-5)
    np.testing.assert_allclose(pca.explained_variance, sk.explained_variance_, rtol=1e-4)


def test_progress_reaches_one():
    seen = []
    fit_pca(EmbeddingRows(np.eye(10, dtype=np.float32)), 3, method="randomized", n_iter=2,
            progress=lambda done, of, _unit: seen.append(done / of))
    assert seen[-1] == pytest.approx(1.0) and seen == sorted(seen) and len(seen) == 2 * 2 + 2


def test_components_for_counts_leading_components():
    ratio = np.array([0.4, 0.3, 0.2, 0.05])
    assert components_for(ratio, 0.5) == 2
    assert components_for(ratio, 0.9) == 3
    assert components_for(ratio, 0.4) == 1
    assert components_for(ratio, 0.99) is None


def test_count_sketch_is_a_signed_bucket_matrix_product():
    x = torch.randn(5, 40)
    buckets, signs = sketch_hash(40, 8, seed=3)
    dense = torch.zeros(40, 8)
    dense[torch.arange(40), buckets] = signs
    torch.testing.assert_close(count_sketch(x, buckets, signs, 8), x @ dense)


def test_count_sketch_preserves_inner_products_on_average():
    rng = np.random.default_rng(0)
    a, b = unit(rng.normal(size=(2, 20_000)))
    exact = float(a @ b)
    estimates = []
    for seed in range(20):
        buckets, signs = sketch_hash(20_000, 1024, seed)
        sa, sb = count_sketch(torch.from_numpy(np.stack([a, b]).astype(np.float32)), buckets, signs, 1024)
        estimates.append(float(sa @ sb))
    # Standard error of the mean of 20 sketches is about sqrt(1/1024)/sqrt(20) = 0.007.
    assert abs(np.mean(estimates) - exact) < 0.03


@pytest.mark.parametrize("k", [0, 1, 12, 400])
def test_extremes_equal_a_stable_full_sort_including_ties(k):
    values = np.round(np.random.default_rng(3).normal(size=1000), 1).astype(np.float32)  # many ties
    top, bottom = extremes(values, k)  # backend.ranking's rule: ties to the lower index, on both sides
    np.testing.assert_array_equal(top, np.argsort(-values, kind="stable")[:k])
    np.testing.assert_array_equal(bottom, np.argsort(values, kind="stable")[:k])


def sparse_embeddings(n=240, d=3000, nnz=25, seed=0) -> np.ndarray:
    """Rows with nnz non-zeros each, half of them on a shared block of columns (so the spectrum has structure)."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, d), dtype=np.float32)
    for i in range(n):
        x[i, rng.integers(0, d, nnz)] = rng.normal(size=nnz)
        x[i, (i % 4) * 50 + rng.integers(0, 50, nnz)] += rng.normal(1.0, 0.3, nnz)
    x[11] = 0.0  # an empty datamodel
    return x


def test_pca_of_held_sparse_rows_is_the_streamed_pca_and_sklearns():
    x = sparse_embeddings()
    held = HeldEmbeddings(EmbeddingRows(x, block_rows=50))
    assert held.sparse
    np.testing.assert_allclose(held.matrix.toarray(), unit(x, np.float32), atol=1e-7)
    rows = np.arange(0, len(x), 2)
    streamed = fit_pca(EmbeddingRows(x, rows, block_rows=31), 8, method="randomized", n_iter=6)
    products = fit_pca(EmbeddingRows(held, rows), 8, method="randomized", n_iter=6)
    np.testing.assert_allclose(products.components, streamed.components, atol=1e-5)
    np.testing.assert_allclose(products.explained_variance, streamed.explained_variance, rtol=1e-5)
    np.testing.assert_allclose(products.mean, streamed.mean, atol=1e-7)
    assert products.total_variance == pytest.approx(streamed.total_variance, rel=1e-6)
    # The leading direction stands clear of the rest, so the randomized SVD finds it exactly.
    sk = SkPCA(n_components=8, svd_solver="full").fit(unit(x[rows]))
    np.testing.assert_allclose(products.explained_variance[0], sk.explained_variance_[0], rtol=1e-4)
    np.testing.assert_allclose(products.components[0], sk.components_[0], atol=1e-3)


@pytest.mark.parametrize("sketch_dim", [256, 5000])
def test_embedding_held_sparse_rows_equals_the_streamed_embedding(sketch_dim):
    x = sparse_embeddings()
    pca = fit_pca(EmbeddingRows(x), 6, method="randomized")
    streamed = embed_targets(EmbeddingRows(x, block_rows=37), pca, sketch_dim, seed=2)
    seen = []
    products = embed_targets(EmbeddingRows(HeldEmbeddings(EmbeddingRows(x))), pca, sketch_dim, seed=2,
                             progress=lambda done, of, _unit: seen.append(done / of))
    np.testing.assert_allclose(products[0], streamed[0], atol=1e-6)
    np.testing.assert_allclose(products[1], streamed[1], atol=1e-6)
    assert products[1].shape == (len(x), min(sketch_dim, x.shape[1])) and seen[-1] == 1.0
    assert products[0].dtype == products[1].dtype == np.float32
