"""Spectral clustering of embeddings against scikit-learn run on the raw points, and brute-force quality."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.distance import pdist, squareform
from sklearn.cluster import SpectralClustering
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score, silhouette_samples, silhouette_score

from backend.structure.clusters import (cluster_each_class, distance_blocks, knn_rbf_affinity, nmi, silhouettes,
                                       spectral_clusters)
from tests.oracles import brute_force_knn_rbf


def blobs(n=120, centers=4, seed=0):
    x, y = make_blobs(n_samples=n, centers=centers, n_features=30, cluster_std=2.0, random_state=seed)
    return x.astype(np.float32), y




@pytest.mark.parametrize("block_rows", [7, None])
def test_distance_blocks_tile_the_brute_force_squared_distances(block_rows):
    x, _ = blobs()
    d2 = squareform(pdist(x.astype(np.float64), "sqeuclidean"))
    tiles = list(distance_blocks(torch.from_numpy(x), block_rows))
    assert [lo for lo, _, _ in tiles] == list(range(0, len(x), block_rows or len(x)))
    np.testing.assert_allclose(np.concatenate([t.numpy() for _, _, t in tiles]), d2, rtol=1e-4, atol=1e-2)


@pytest.mark.parametrize("block_rows", [5, None])
def test_affinity_is_the_rbf_weighted_symmetric_knn_graph(block_rows):
    x, _ = blobs()
    ours, gamma = knn_rbf_affinity(torch.from_numpy(x), 7, block_rows)
    theirs, their_gamma = brute_force_knn_rbf(x, 7)
    assert np.isclose(gamma, their_gamma, rtol=1e-5)
    np.testing.assert_allclose(ours.toarray(), theirs, atol=1e-5)  # float32 Gram products


@pytest.mark.parametrize("block_rows", [11, None])
def test_silhouettes_equal_sklearns_including_a_singleton_cluster(block_rows):
    x, y = blobs()
    labels = y.copy()
    labels[0] = 4  # a cluster of one point: silhouette 0
    np.testing.assert_allclose(silhouettes(torch.from_numpy(x), labels, block_rows), silhouette_samples(x, labels),
                               atol=1e-4)


@pytest.mark.filterwarnings("ignore:Graph is not fully connected")  # well-separated blobs: the oracle warns
def test_clusters_equal_sklearn_spectral_clustering_of_that_affinity():
    x, y = blobs()
    ours = spectral_clusters(torch.from_numpy(x), 4, seed=0)
    affinity, gamma = brute_force_knn_rbf(x, 10)
    theirs = SpectralClustering(4, affinity="precomputed", random_state=0).fit_predict(affinity)
    assert np.isclose(ours.gamma, gamma, rtol=1e-4)
    assert adjusted_rand_score(theirs, ours.labels) == 1.0
    assert nmi(ours, y) == 1.0
    assert np.isclose(ours.quality()["silhouette"], silhouette_score(x, ours.labels), atol=1e-4)


def test_quality_reports_sizes_largest_first_and_per_cluster_silhouettes():
    x, _ = blobs(n=100, centers=[[0] * 30, [12] * 30], seed=1)
    x = np.concatenate([x, x[:30] + 0.01])  # make the first blob larger
    c = spectral_clusters(torch.from_numpy(x), 2)
    q = c.quality()
    assert q["sizes"] == sorted(q["sizes"], reverse=True) and sum(q["sizes"]) == len(x)
    assert c.layout.shape == (len(x), 2) and np.isfinite(c.layout).all()
    for k, s in enumerate(q["cluster_silhouettes"]):
        assert np.isclose(s, c.silhouette[c.labels == k].mean())


def test_each_class_is_clustered_alone_and_tiny_classes_form_one_cluster():
    x, y = blobs(n=90, centers=3)
    labels = np.where(np.arange(90) < 2, 9, y)  # class 9 has two members
    per_class = cluster_each_class(torch.from_numpy(x), labels, 2)
    assert sorted(per_class) == sorted(np.unique(labels).tolist())
    for c, clustering in per_class.items():
        assert len(clustering.labels) == (labels == c).sum()
    assert per_class[9].k == 1 and per_class[9].quality()["silhouette"] is None
    assert all(per_class[c].k == 2 for c in (0, 1, 2))


def test_a_class_of_three_points_clusters_without_scipy_refusing_the_sparse_layout():
    """Three points: ARPACK cannot give 3 eigenvectors of a sparse 3x3 affinity; the dense path does."""
    x = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0]])
    clustering = spectral_clusters(x, 2)
    assert clustering.layout.shape == (3, 2) and np.isfinite(clustering.layout).all()
    assert clustering.labels[0] == clustering.labels[1] != clustering.labels[2]


def test_clustering_never_allocates_a_dense_n_by_n_matrix():
    """A fresh process clusters 6,000 points: its resident set grows by less than one n × n float64."""
    n = 6000
    code = f"""
import resource, numpy as np, torch
from sklearn.datasets import make_blobs
from backend.structure.clusters import spectral_clusters
x = torch.from_numpy(make_blobs(n_samples={n}, centers=5, n_features=16, random_state=0)[0].astype(np.float32))
spectral_clusters(x[:50], 2)  # libraries' own first-use allocations
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
labels = spectral_clusters(x, 5).labels
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before, len(np.unique(labels)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2]).stdout.split()
    grown_bytes, k = int(out[0]) * 1024, int(out[1])
    assert k == 5 and grown_bytes < n * n * 8  # the dense version held three
