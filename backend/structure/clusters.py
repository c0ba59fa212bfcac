"""Spectral clusters of test targets in datamodel-embedding space (Ilyas et al. 2022, App. I).

The paper clusters the (unit-normalised) datamodel embeddings of each class's test targets with
spectral clustering on an RBF affinity, and finds sub-populations (e.g. one pose, one background).

Datamodels are sparse, so most pairs of embeddings are nearly orthogonal (on digits the median squared
distance between unit embeddings is 2.0, i.e. cosine 0) and only a few neighbours are close. A dense
RBF affinity then has no good width: a wide kernel connects everything almost equally and a narrow one
leaves most points isolated. So the RBF weights sit on the symmetrised k-nearest-neighbour graph
(von Luxburg 2007, §2.2; k = 10, scikit-learn's default for its kNN affinity), with the median
heuristic over the graph's edges for the width. Raw pixels go through the identical procedure.

Nothing here holds an n × n matrix: the graph's edges and the silhouettes come from blocks of rows'
distances to all rows (BLOCK_BYTES each), and the affinity is sparse, about 2·k entries a row (at
10,000 test targets the dense version was three 800 MB float64 matrices).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from scipy import sparse

from backend.lazy_import import lazy_module
from backend.store.artifacts import read_json, write_array, write_json
from backend.store.errors import RunError
from backend.store.schema import (CLUSTERS, CLUSTERS_ALL, CLUSTERS_BY_CLASS, LAYOUT_ALL, LAYOUT_BY_CLASS, SILHOUETTE_ALL,
                                  SILHOUETTE_BY_CLASS)

torch = lazy_module("torch")  # the pages read what this module stored without it (backend/lazy_import.py)

N_NEIGHBORS = 10
# Rows per block of squared distances (block × n float64): 32 MB, 419 rows at 10,000 test targets; with the
# Gram block and topk's copy a block costs about three times that.
BLOCK_BYTES = 32 << 20


def distance_blocks(x: torch.Tensor, block_rows: int | None = None) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Squared Euclidean distances of blocks of rows of x (n, d) to all rows, never the n × n matrix.

    Yields (lo, hi, d2) with d2 a float64 tensor of shape (hi - lo, n), from one Gram product per block
    (float32, as x), clamped at 0 and with each row's distance to itself exactly 0.
    """
    n = x.shape[0]
    block_rows = block_rows or max(1, BLOCK_BYTES // (8 * n))
    sq = (x * x).sum(1).double()
    for lo in range(0, n, block_rows):
        hi = min(lo + block_rows, n)
        # In place: one float32 and one float64 block at a time.
        d2 = (x[lo:hi] @ x.T).double().mul_(-2).add_(sq[lo:hi, None]).add_(sq[None, :]).clamp_min_(0)
        d2[torch.arange(hi - lo), torch.arange(lo, hi)] = 0
        yield lo, hi, d2


def knn_edges(x: torch.Tensor, n_neighbors: int = N_NEIGHBORS, block_rows: int | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The symmetrised k-nearest-neighbour graph of the rows of x (n, d), block by block.

    Points i and j are joined when either is among the other's n_neighbors nearest (self excluded).
    Returns (rows, cols, d2): int64 and float64 arrays with one entry per ordered pair (both (i, j) and
    (j, i)), each edge once, sorted by (row, col).
    """
    n = x.shape[0]
    k = min(n_neighbors, n - 1)
    rows, cols, d2s = [], [], []
    for lo, hi, d2 in distance_blocks(x, block_rows):
        d2[torch.arange(hi - lo), torch.arange(lo, hi)] = float("inf")
        values, nearest = d2.topk(k, dim=1, largest=False)
        rows.append(np.repeat(np.arange(lo, hi), k))
        cols.append(nearest.cpu().numpy().ravel())
        d2s.append(values.cpu().numpy().ravel())
    r, c, v = np.concatenate(rows), np.concatenate(cols), np.concatenate(d2s)
    keys, first = np.unique(np.concatenate([r * n + c, c * n + r]), return_index=True)
    return keys // n, keys % n, np.concatenate([v, v])[first]


def knn_rbf_affinity(x: torch.Tensor, n_neighbors: int = N_NEIGHBORS, block_rows: int | None = None
                     ) -> tuple[sparse.csr_matrix, float]:
    """RBF affinity on the symmetrised k-nearest-neighbour graph of the rows of x (n, d), and its gamma.

    An edge (see knn_edges) weighs exp(-gamma·d2[i, j]) with gamma = 1 / median of d2 over the edges.
    Returns a sparse (n, n) matrix with ones on the diagonal.
    """
    n = x.shape[0]
    rows, cols, edge_d2 = knn_edges(x, n_neighbors, block_rows)
    median = float(np.median(edge_d2))
    gamma = 1.0 / median if median > 0 else 1.0
    affinity = sparse.csr_matrix((np.exp(-gamma * edge_d2), (rows, cols)), shape=(n, n)) + sparse.identity(n, format="csr")
    return affinity, gamma


def silhouettes(x: torch.Tensor, labels: np.ndarray, block_rows: int | None = None) -> np.ndarray:
    """Each row's silhouette (scikit-learn's silhouette_samples, Euclidean), from blocks of distances.

    labels : int ndarray of shape (n,), ids 0..k-1 with at least two clusters. A point alone in its
    cluster scores 0, as in scikit-learn. Returns float64 ndarray of shape (n,).
    """
    n = x.shape[0]
    member = torch.zeros(n, int(labels.max()) + 1, dtype=torch.float64, device=x.device)
    own = torch.as_tensor(labels, dtype=torch.int64, device=x.device)
    member[torch.arange(n, device=x.device), own] = 1
    sizes = member.sum(0)
    out = torch.empty(n, dtype=torch.float64, device=x.device)
    for lo, hi, d2 in distance_blocks(x, block_rows):
        sums = d2.sqrt_() @ member  # (b, k): summed distance to each cluster
        mine = own[lo:hi, None]
        a = sums.gather(1, mine)[:, 0] / (sizes[mine[:, 0]] - 1).clamp_min(1)
        b = (sums / sizes).scatter(1, mine, float("inf")).min(1).values
        s = (b - a) / torch.maximum(a, b)
        out[lo:hi] = torch.where((sizes[mine[:, 0]] > 1) & (torch.maximum(a, b) > 0), s, torch.zeros_like(s))
    return out.cpu().numpy()


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
    from sklearn.cluster import SpectralClustering  # (sklearn loads in seconds: only the analyze stage clusters)
    from sklearn.manifold import spectral_embedding

    n = x.shape[0]
    if n < 3 or n_clusters < 2:
        return Clustering(np.zeros(n, dtype=np.int32), np.zeros((n, 2), dtype=np.float32), np.full(n, np.nan), 1.0)
    affinity, gamma = knn_rbf_affinity(x, n_neighbors)
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
    silhouette = silhouettes(x, labels) if 2 <= len(np.unique(labels)) <= n - 1 else np.full(n, np.nan)
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
    from sklearn.metrics import normalized_mutual_info_score

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
