"""Spectral clusters of test targets in datamodel-embedding space (Ilyas et al. 2022, App. I).

The paper clusters the (unit-normalised) datamodel embeddings of each class's test targets with
spectral clustering on an RBF affinity, and finds sub-populations (e.g. one pose, one background).

Datamodels are sparse, so most pairs of embeddings are nearly orthogonal (on digits the median squared
distance between unit embeddings is 2.0, i.e. cosine 0) and only a few neighbours are close. A dense
RBF affinity then has no good width: a wide kernel connects everything almost equally and a narrow one
leaves most points isolated. So the RBF weights sit on the symmetrised k-nearest-neighbour graph
(von Luxburg 2007, §2.2; k = 10, scikit-learn's default for its kNN affinity), with the median
heuristic over the graph's edges for the width. Raw pixels go through the identical procedure.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import sparse
from sklearn.cluster import SpectralClustering
from sklearn.manifold import spectral_embedding
from sklearn.metrics import normalized_mutual_info_score, silhouette_samples
from sklearn.neighbors import kneighbors_graph

from backend.store.run_dir import RunError, read_json, write_array, write_json
from backend.store.schema import (CLUSTERS, CLUSTERS_ALL, CLUSTERS_BY_CLASS, LAYOUT_ALL, LAYOUT_BY_CLASS, SILHOUETTE_ALL,
                                  SILHOUETTE_BY_CLASS)


def squared_distances(x: torch.Tensor) -> np.ndarray:
    """Pairwise squared Euclidean distances of rows x (n, d), float64 ndarray of shape (n, n), via one Gram product."""
    gram = (x @ x.T).double().cpu().numpy()
    sq = np.diag(gram).copy()
    d2 = sq[:, None] + sq[None, :] - 2 * gram
    np.maximum(d2, 0, out=d2)
    np.fill_diagonal(d2, 0)
    return d2


N_NEIGHBORS = 10


def knn_rbf_affinity(d2: np.ndarray, n_neighbors: int = N_NEIGHBORS) -> tuple[sparse.csr_matrix, float]:
    """RBF affinity on the symmetrised k-nearest-neighbour graph, and its gamma.

    d2 : ndarray of shape (n, n), squared distances. Points i and j are joined when either is among the
    other's n_neighbors nearest (self excluded); the edge weighs exp(-gamma·d2[i, j]) with gamma =
    1 / median of d2 over the edges. Returns a sparse (n, n) matrix with ones on the diagonal.
    """
    n = len(d2)
    # Squared distances rank neighbours as distances do; "precomputed" with include_self=False skips i itself.
    graph = kneighbors_graph(d2, min(n_neighbors, n - 1), metric="precomputed", include_self=False)
    rows, cols = (graph + graph.T).nonzero()
    edge_d2 = d2[rows, cols]
    median = float(np.median(edge_d2))
    gamma = 1.0 / median if median > 0 else 1.0
    affinity = sparse.csr_matrix((np.exp(-gamma * edge_d2), (rows, cols)), shape=(n, n)) + sparse.identity(n, format="csr")
    return affinity, gamma


@dataclass
class Clustering:
    """Spectral clustering of n points.

    labels     : int ndarray of shape (n,), cluster ids 0..k-1
    layout     : float32 ndarray of shape (n, 2), the two leading non-trivial spectral coordinates
    silhouette : float ndarray of shape (n,), each point's silhouette (NaN where undefined)
    gamma      : the RBF gamma used
    """

    labels: np.ndarray
    layout: np.ndarray
    silhouette: np.ndarray
    gamma: float

    @property
    def k(self) -> int:
        return int(self.labels.max()) + 1 if len(self.labels) else 0

    def quality(self) -> dict:
        """Sizes and mean silhouettes, overall and per cluster (None where undefined)."""
        return {"k": self.k, "gamma": self.gamma, "silhouette": _mean_or_none(self.silhouette),
                "sizes": [int((self.labels == c).sum()) for c in range(self.k)],
                "cluster_silhouettes": [_mean_or_none(self.silhouette[self.labels == c]) for c in range(self.k)]}


def _mean_or_none(values: np.ndarray) -> float | None:
    return float(np.mean(values)) if len(values) and np.isfinite(values).all() else None


def spectral_clusters(x: torch.Tensor, n_clusters: int, seed: int = 0, n_neighbors: int = N_NEIGHBORS) -> Clustering:
    """Spectral clustering (scikit-learn) of the rows of x (n, d) on their kNN-graph RBF affinity.

    k is capped at n - 1; fewer than three points form one cluster with a zero layout.
    """
    n = x.shape[0]
    if n < 3 or n_clusters < 2:
        return Clustering(np.zeros(n, dtype=np.int32), np.zeros((n, 2), dtype=np.float32), np.full(n, np.nan), 1.0)
    d2 = squared_distances(x)
    affinity, gamma = knn_rbf_affinity(d2, n_neighbors)
    if n <= 3 and hasattr(affinity, "toarray"):
        # The 2-D layout asks ARPACK for 3 eigenvectors, which a sparse 3x3 matrix cannot give (scipy's
        # eigsh raises TypeError); a dense one goes to LAPACK instead.
        affinity = affinity.toarray()
    k = min(n_clusters, n - 1)
    with warnings.catch_warnings():
        # A kNN graph of well-separated groups falls apart into components: those are clusters already.
        warnings.filterwarnings("ignore", message="Graph is not fully connected")
        labels = SpectralClustering(k, affinity="precomputed", random_state=seed).fit_predict(affinity)
        layout = spectral_embedding(affinity, n_components=2, drop_first=True, random_state=seed).astype(np.float32)
    labels = _relabel_by_size(labels)
    silhouette = (silhouette_samples(np.sqrt(d2), labels, metric="precomputed")
                  if 2 <= len(np.unique(labels)) <= n - 1 else np.full(n, np.nan))
    return Clustering(labels.astype(np.int32), layout, silhouette, gamma)


def _relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Cluster ids renumbered from largest to smallest cluster, so cluster 0 is always the biggest."""
    ids, counts = np.unique(labels, return_counts=True)
    order = ids[np.argsort(-counts, kind="stable")]
    remap = np.empty(labels.max() + 1, dtype=np.int64)
    remap[order] = np.arange(len(order))
    return remap[labels]


def cluster_each_class(x: torch.Tensor, labels: np.ndarray, n_clusters: int, seed: int = 0) -> dict[int, Clustering]:
    """One spectral clustering of the rows of x (n, d) per class in labels (n,), as in App. I."""
    return {int(c): spectral_clusters(x[torch.as_tensor(np.flatnonzero(labels == c), device=x.device)], n_clusters, seed)
            for c in np.unique(labels)}


def nmi(clustering: Clustering, labels: np.ndarray) -> float:
    """Normalised mutual information between cluster assignments and class labels (1 = the classes exactly)."""
    return float(normalized_mutual_info_score(labels, clustering.labels))


def save_clusterings(run_dir: Path, test_labels: np.ndarray, per_class: dict[int, Clustering], whole: Clustering,
                     quality: dict) -> None:
    """Write the per-class and whole-test-set clusterings as (n_test, ...) arrays, plus quality as JSON.

    Test targets in test order; the per-class arrays hold each target's id within its own class.
    """
    n = len(test_labels)
    ids, layout, silhouette = np.zeros(n, np.int32), np.zeros((n, 2), np.float32), np.full(n, np.nan, np.float32)
    for c, clustering in per_class.items():
        members = np.flatnonzero(test_labels == c)
        ids[members], layout[members], silhouette[members] = clustering.labels, clustering.layout, clustering.silhouette
    run_dir = Path(run_dir)
    for artifact, array in ((CLUSTERS_BY_CLASS, ids), (LAYOUT_BY_CLASS, layout), (SILHOUETTE_BY_CLASS, silhouette),
                            (CLUSTERS_ALL, whole.labels.astype(np.int32)), (LAYOUT_ALL, whole.layout),
                            (SILHOUETTE_ALL, whole.silhouette.astype(np.float32))):
        write_array(run_dir, artifact, array)
    write_json(run_dir, CLUSTERS, quality)


def load_quality(run) -> dict:
    """clusters.json: per-class and whole-set quality (see save_clusterings)."""
    if not run.has(CLUSTERS):
        raise RunError(f"{run.dir} has no clusters yet ({CLUSTERS.name} is missing): run `{CLUSTERS.command(run.dir)}`")
    return read_json(run.dir, CLUSTERS)


def class_clustering(run, c: int) -> tuple[np.ndarray, Clustering]:
    """The clustering of class c's test targets: (their test indices (n_c,), Clustering over them)."""
    members = np.flatnonzero(np.asarray(run.labels[run.n_train:]) == c)
    quality = next(q for q in load_quality(run)["per_class"] if q["class"] == c)
    return members, Clustering(np.asarray(run.array(CLUSTERS_BY_CLASS)[members]),
                               np.asarray(run.array(LAYOUT_BY_CLASS)[members]),
                               np.asarray(run.array(SILHOUETTE_BY_CLASS)[members]), quality["gamma"])


def whole_clustering(run) -> Clustering:
    """The clustering of the whole test set, in test order."""
    return Clustering(np.asarray(run.array(CLUSTERS_ALL)), np.asarray(run.array(LAYOUT_ALL)),
                      np.asarray(run.array(SILHOUETTE_ALL)), load_quality(run)["whole"]["gamma"])
