"""Targets with similar datamodels: each target's k nearest other targets by exact cosine similarity.

Two targets are similar when they depend on the same training examples in the same direction. The
search is exact: the unit embeddings are held once (sparse or dense), and each block of rows is
multiplied against all of them, keeping its top k. LASSO datamodels are sparse, and then so is the
product: at CIFAR scale (60,000 targets × 50,000 weights, a few hundred non-zeros each) a CSR matrix
of 200 MB and sparse products of blocks of rows cost a small fraction of the dense 3.6·10¹⁴ flops.
Denser embeddings are held as one dense tensor on the device and multiplied with float32 GEMMs.

Approximate searches were measured against it on the synthetic CIFAR-scale run (benchmarks/bench_analyze.py)
and dropped: a 2,048-dim count sketch searched with a faiss inverted file found 0.41 of the exact top 10,
and exact faiss search of the 50 PCA coordinates 0.01 (sparse datamodels spread over far more than 50
directions). The exact sparse search took 88 s there on 2 idle CPU cores, recall@10 1.0; its blocks on two
threads took it from 442 s to 232 s of wall time (78 s of CPU) with the 2 cores shared at load ~11.

`nearest_to` answers one query in another stored space (representation features, pixels, SSL embeddings),
when a page asks: one exact pass over that matrix in blocks, nothing precomputed.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

from backend.lazy_import import lazy_module
from backend.ranking import top_k
from backend.store.artifacts import write_array
from backend.store.schema import NEIGHBOR_SIMILARITY, NEIGHBORS
from backend.structure.embeddings import HeldEmbeddings

torch = lazy_module("torch")  # the pages read what this module stored without it (backend/lazy_import.py)
# Rows per block of similarities (block × n float32): 64 MB, 280 rows at CIFAR's 60,000 targets.
BLOCK_BYTES = 64 << 20


def nearest_targets(held: HeldEmbeddings, k: int, *, block_rows: int | None = None,
                    workers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k most similar other rows by cosine, exactly, block_rows rows at a time against all.

    held    : HeldEmbeddings of the embeddings (unit rows; all-zero rows are allowed)
    workers : blocks searched at once (default: torch's thread count when held sparse, else one). scipy's sparse
        products run on one core and release the GIL, so threads are what spreads them over the cores;
        dense products are threaded by torch already.
    Returns (neighbors int64 (n, k), similarity float32 (n, k)), most similar first, a row never its own
    neighbour (a duplicate of it may be); k is capped at n - 1.
    """
    n = held.n
    k = min(k, n - 1)
    block_rows = block_rows or max(1, BLOCK_BYTES // (4 * max(n, 1)))
    workers = workers or (torch.get_num_threads() if held.sparse else 1)
    neighbors = np.empty((n, k), dtype=np.int64)
    similarity = np.empty((n, k), dtype=np.float32)

    def search(lo: int) -> None:
        hi = min(lo + block_rows, n)
        sims = held.similarities(lo, hi)
        sims[torch.arange(hi - lo), torch.arange(lo, hi)] = -float("inf")
        values, indices = sims.topk(k, dim=1)
        neighbors[lo:hi], similarity[lo:hi] = indices.cpu().numpy(), values.cpu().numpy()

    starts = range(0, n, block_rows)
    if workers == 1:
        for lo in starts:
            search(lo)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(search, starts))  # list(): re-raises a block's exception here
    return neighbors, similarity


def save_neighbors(run_dir: Path, neighbors: np.ndarray, similarity: np.ndarray) -> None:
    write_array(run_dir, NEIGHBORS, neighbors.astype(np.int64))
    write_array(run_dir, NEIGHBOR_SIMILARITY, similarity.astype(np.float32))


def similar_to(run, column: int) -> tuple[np.ndarray, np.ndarray]:
    """The stored neighbours of target `column`: (columns int64 (k,), cosine similarities float32 (k,))."""
    neighbors = run.array(NEIGHBORS)
    similarity = run.array(NEIGHBOR_SIMILARITY)
    return np.asarray(neighbors[column]), np.asarray(similarity[column])


def nearest_to(matrix: np.ndarray, column: int, k: int, unit_rows: Callable[[np.ndarray], np.ndarray],
               block_rows: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """The k rows of `matrix` most similar to its row `column`, exactly: inner products of unit_rows(rows).

    matrix    : ndarray of shape (n, ...) (a memmap is read block_rows rows at a time)
    unit_rows : a block (b, ...) → float32 (b, d) of unit rows, e.g. L2-normalised features (cosine) or centred
        and normalised pixels (correlation)
    Returns (rows int64 (k',), similarity float32 (k',)), k' = min(k, n - 1), most similar first by
    backend.ranking's rule (ties to the lower row); the row itself is never its own neighbour (a duplicate may be).
    """
    query = unit_rows(np.asarray(matrix[column:column + 1]))[0]
    similarity = np.empty(len(matrix), dtype=np.float32)
    for lo in range(0, len(matrix), block_rows):
        similarity[lo:lo + block_rows] = unit_rows(np.asarray(matrix[lo:lo + block_rows])) @ query
    similarity[column] = np.nan  # never returned
    rows = top_k(similarity, k, signed=False)
    return rows, similarity[rows]
