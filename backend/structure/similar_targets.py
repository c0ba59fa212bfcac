"""Targets with similar datamodels: k nearest neighbours by cosine similarity of embeddings (faiss).

Two targets are similar when they depend on the same training examples in the same direction. The
vectors are unit-normalised, so inner product is cosine similarity: an exact IndexFlatIP search up to
IVF_THRESHOLD targets, an inverted-file index (IndexIVFFlat, inner product) above it.
"""
from __future__ import annotations

import math

from pathlib import Path

import faiss
import numpy as np

from backend.store.run_dir import write_array
from backend.store.schema import NEIGHBOR_SIMILARITY, NEIGHBORS

IVF_THRESHOLD = 50_000
# √n lists and 16 probed per query: each query scans about 16·√n vectors (4,000 of CIFAR's 60,000).
NPROBE = 16


def nearest_targets(vectors: np.ndarray, k: int, *, ivf_threshold: int = IVF_THRESHOLD, nprobe: int = NPROBE,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k most similar other rows.

    vectors : float32 ndarray of shape (n, d), unit-norm rows (all-zero rows are allowed)
    Returns (neighbors int64 (n, k), similarity float32 (n, k)), most similar first, a row never its own
    neighbour; k is capped at n - 1. Above ivf_threshold the search is approximate (an inverted file,
    nprobe of √n lists scanned per query).
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = vectors.shape
    k = min(k, n - 1)
    if n > ivf_threshold:
        nlist = int(math.sqrt(n))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        index.train(vectors[np.sort(rng.choice(n, size=min(n, 64 * nlist), replace=False))])
        index.nprobe = nprobe
    else:
        index = faiss.IndexFlatIP(d)
    index.add(vectors)
    similarity, neighbors = index.search(vectors, k + 1)
    return _drop_self(neighbors, similarity, k)


def _drop_self(neighbors: np.ndarray, similarity: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove each row's own index from its k + 1 results (or the last result, if ties pushed it out)."""
    n = len(neighbors)
    is_self = neighbors == np.arange(n)[:, None]
    is_self[~is_self.any(1), -1] = True
    keep = ~is_self
    out_n = neighbors[keep].reshape(n, -1)[:, :k]
    out_s = similarity[keep].reshape(n, -1)[:, :k]
    return out_n.astype(np.int64), out_s.astype(np.float32)


def save_neighbors(run_dir: Path, neighbors: np.ndarray, similarity: np.ndarray) -> None:
    write_array(run_dir, NEIGHBORS, neighbors.astype(np.int64))
    write_array(run_dir, NEIGHBOR_SIMILARITY, similarity.astype(np.float32))


def similar_to(run, column: int) -> tuple[np.ndarray, np.ndarray]:
    """The stored neighbours of target `column`: (columns int64 (k,), cosine similarities float32 (k,))."""
    neighbors = run.array(NEIGHBORS)
    similarity = run.array(NEIGHBOR_SIMILARITY)
    return np.asarray(neighbors[column]), np.asarray(similarity[column])
