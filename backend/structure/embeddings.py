"""Datamodel embeddings and their principal components (Ilyas et al. 2022, §4.3, App. I and J).

A target's datamodel (its row of weights.npy) is its *embedding*: one coordinate per training example.
Embeddings are scaled to unit norm first, so that the geometry reflects *which* training examples a
target depends on, not how much its margin varies overall. The PCA is fit on the training-set targets,
as in the paper, and every train and test target is then projected onto it.

At CIFAR scale weights.npy is 60,000 × 50,000 float32 (12 GB), so nothing here holds it whole: rows are
read in blocks with plain file reads (slicing the memmap would leave every page it touched counted in
the process's resident set). The PCA is exact (one pass, d × d covariance) while the embeddings have at
most 4,096 coordinates, and above that a randomized SVD (Halko et al. 2011) that needs only products
with blocks of rows, 2·n_iter + 2 passes over the data. Embeddings held sparse (HeldEmbeddings) skip the
blocks: the SVD's products and the projection are sparse-dense products on the CSR matrix (torch's,
threaded), which cost its non-zeros. On the synthetic CIFAR-scale run (~300 non-zeros in 50,000;
benchmarks/bench_analyze.py, 2 shared cores at load ~12) that took the PCA fit from 179 s to 19 s and the
projection from 192 s to 3 s of wall time, against dense GEMMs over the same held rows.
"""
from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from scipy import sparse

from backend.lazy_import import lazy_module
from backend.progress import Progress
from backend.ranking import bottom_k, top_k
from backend.store.rows import read_rows
from backend.store.artifacts import read_json, write_array
from backend.store.atomic import delete
from backend.store.errors import RunError
from backend.store.schema import (PCA_COMPONENTS, PCA_EXPLAINED_RATIO, PCA_EXPLAINED_VARIANCE, PCA_MEAN, PCA_PROJECTIONS,
                                  REPRESENTATION_RATIO, STRUCTURE_SUMMARY)

torch = lazy_module("torch")  # the pages read what this module stored without it (backend/lazy_import.py)
BLOCK_BYTES = 256 << 20


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """Each row scaled to unit L2 norm; all-zero rows (targets whose datamodel is empty) stay zero."""
    norms = x.norm(dim=1, keepdim=True)
    return x / torch.where(norms > 0, norms, torch.ones_like(norms))


class EmbeddingRows:
    """Rows `rows` of a matrix (typically a memmapped weights.npy), unit-normalised, in blocks on `device`.

    matrix : ndarray of shape (n_rows, d), or a HeldEmbeddings (rows taken from memory)
    rows   : sorted int array of the rows to use (default: all)
    Iterating yields (lo, hi, X) with X a float32 tensor of shape (hi - lo, d): positions lo..hi of `rows`.
    """

    def __init__(self, matrix: np.ndarray, rows: np.ndarray | None = None, *, device: str | torch.device = "cpu",
                 block_rows: int | None = None):
        self.matrix = matrix
        self.rows = np.arange(len(matrix)) if rows is None else np.asarray(rows, dtype=np.int64)
        self.device = torch.device(device)
        self.n_features = matrix.shape[1]
        self.block_rows = block_rows or max(1, BLOCK_BYTES // (4 * self.n_features))

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def n_blocks(self) -> int:
        return -(-len(self.rows) // self.block_rows)

    def __iter__(self) -> Iterator[tuple[int, int, torch.Tensor]]:
        if isinstance(self.matrix, HeldEmbeddings):  # already unit rows, in memory
            for lo in range(0, len(self.rows), self.block_rows):
                hi = min(lo + self.block_rows, len(self.rows))
                yield lo, hi, self.matrix.take(self.rows[lo:hi], self.device)
        else:
            for lo, hi, x in self.stored_blocks():
                yield lo, hi, unit_rows(torch.from_numpy(x).to(self.device))

    def stored_blocks(self) -> Iterator[tuple[int, int, np.ndarray]]:
        """The rows as stored (not normalised), float32 ndarrays of shape (hi - lo, d), from an array or file.

        The next block is read in a thread while the caller works on this one (file reads release the
        GIL): at CIFAR scale the read of weights.npy and the work on its blocks take comparable time.
        """
        starts = range(0, len(self.rows), self.block_rows)
        with ThreadPoolExecutor(1) as reader:
            def read(lo: int):
                return reader.submit(read_rows, self.matrix, self.rows[lo:lo + self.block_rows])
            pending = read(starts[0]) if len(starts) else None
            for i, lo in enumerate(starts):
                block = pending.result()
                if i + 1 < len(starts):
                    pending = read(starts[i + 1])
                yield lo, lo + len(block), block

    def as_sparse(self) -> sparse.csr_matrix | None:
        """These rows as one float32 CSR matrix of shape (len(self), d) if they come from a sparse HeldEmbeddings, else None."""
        if not (isinstance(self.matrix, HeldEmbeddings) and self.matrix.sparse):
            return None
        whole = len(self.rows) == self.matrix.n and bool((self.rows == np.arange(self.matrix.n)).all())
        return self.matrix.matrix if whole else self.matrix.matrix[self.rows]


# Held sparse while at most this share of the entries is non-zero: below it CSR takes less memory than
# dense float32 (8 bytes per entry against 4 per coordinate) and sparse products beat dense GEMMs.
SPARSE_MAX_DENSITY = 0.05


class HeldEmbeddings:
    """All rows of an EmbeddingRows, held for products: scipy CSR when sparse, else one dense tensor.

    data : EmbeddingRows over an array or file (read block by block, one pass), scaled to unit rows here.
    Held sparse while the rows read so far have at most SPARSE_MAX_DENSITY non-zeros, switched to dense
    (on data's device) once they pass it. A sparse block is normalised on its non-zeros alone, not as a
    dense block (at CIFAR scale 1 % of the entries: 1.5 s of CPU per 256 MB block instead of 3.6 s).
    progress : progress(rows read, n, "row") (backend.progress).
    An EmbeddingRows over a HeldEmbeddings (instead of the weights) reads its rows from memory: the PCA's
    passes and the projection then cost products, not passes over weights.npy (12 GB at CIFAR scale).
    """

    def __init__(self, data: EmbeddingRows, progress: Progress | None = None):
        self.n, self.n_features, self.device = len(data), data.n_features, data.device
        blocks: list = []
        nnz = 0
        self.sparse = True
        for lo, hi, x in data.stored_blocks():
            nonzero = np.flatnonzero(x)
            nnz += len(nonzero)
            if self.sparse and nnz > SPARSE_MAX_DENSITY * hi * self.n_features:
                self.sparse = False
                blocks = [torch.from_numpy(b.toarray()).to(self.device) for b in blocks]
            blocks.append(_unit_csr(x, nonzero) if self.sparse else unit_rows(torch.from_numpy(x).to(self.device)))
            if progress is not None:
                progress(hi, len(data), "row")
        if self.sparse:
            self.matrix = sparse.vstack(blocks, format="csr") if blocks else sparse.csr_matrix((0, self.n_features), dtype=np.float32)
            self.transposed = self.matrix.T.tocsr()
        else:
            self.matrix = torch.cat(blocks)

    def __len__(self) -> int:
        return self.n

    @property
    def shape(self) -> tuple[int, int]:
        return self.n, self.n_features

    def take(self, rows: np.ndarray, device: torch.device) -> torch.Tensor:
        """Rows `rows` (sorted) as a dense float32 tensor of shape (len(rows), n_features) on device."""
        if self.sparse:
            return torch.from_numpy(self.matrix[rows].toarray()).to(device)
        return self.matrix[torch.as_tensor(rows, device=self.matrix.device)].to(device)

    def similarities(self, lo: int, hi: int) -> torch.Tensor:
        """Inner products (cosines) of rows lo..hi with all rows: float32 tensor of shape (hi - lo, n)."""
        if self.sparse:
            return torch.from_numpy((self.matrix[lo:hi] @ self.transposed).toarray().astype(np.float32, copy=False))
        return self.matrix[lo:hi] @ self.matrix.T

    @property
    def kind(self) -> str:
        return "sparse products" if self.sparse else "dense float32 GEMMs"


def _unit_csr(x: np.ndarray, nonzero: np.ndarray) -> sparse.csr_matrix:
    """Rows of x (b, d) scaled to unit norm as CSR, from the flat indices of its non-zeros (sorted)."""
    rows, cols = np.divmod(nonzero, x.shape[1])
    values = x.ravel()[nonzero]
    norms = np.sqrt(np.bincount(rows, weights=np.square(values, dtype=np.float64), minlength=x.shape[0]))
    values = (values / norms[rows]).astype(np.float32)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=x.shape[0]))])
    return sparse.csr_matrix((values, cols.astype(np.int32), indptr), shape=x.shape)


@dataclass
class PCA:
    """A fitted PCA, in scikit-learn's terms.

    components         : ndarray of shape (n_components, d), orthonormal rows
    explained_variance : ndarray of shape (n_components,), variance along each component (ddof=1)
    mean               : ndarray of shape (d,)
    total_variance     : summed variance of all d coordinates, so ratios are exact whatever n_components
    """

    components: np.ndarray
    explained_variance: np.ndarray
    mean: np.ndarray
    total_variance: float
    n_samples: int

    @property
    def explained_variance_ratio(self) -> np.ndarray:
        return self.explained_variance / self.total_variance if self.total_variance > 0 else np.zeros_like(self.explained_variance)


EXACT_MAX_FEATURES = 4096


def fit_pca(data: EmbeddingRows, n_components: int, *, method: str = "auto", n_iter: int = 5,
            oversample: int | None = None, seed: int = 0, progress: Progress | None = None) -> PCA:
    """PCA of data's rows, streaming blocks of rows; signs as scikit-learn's (largest coordinate positive).

    method : "exact" accumulates the d × d covariance in one pass and diagonalises it; "randomized"
        runs a randomized SVD of the centred matrix; "auto" is exact up to EXACT_MAX_FEATURES features
        (digits: 1,297) and randomized above (CIFAR: 50,000, where d × d would not fit).
    The randomized range finder uses n_components + oversample directions (default oversample =
    max(n_components, 10): datamodel spectra decay slowly) refined by n_iter power iterations, each a
    pass over the data; centring is implicit, (X - 1μᵀ)·V = X·V - 1(μᵀV), so blocks are never rewritten.
    progress : progress(passes done, passes, "pass") (backend.progress).
    """
    if method == "auto":
        method = "exact" if data.n_features <= EXACT_MAX_FEATURES else "randomized"
    if method == "exact":
        components, variance, mean, total_variance = _exact_pca(data, n_components)
        if progress is not None:
            progress(1, 1, "pass")
    else:
        components, variance, mean, total_variance = _randomized_pca(data, n_components, n_iter, oversample, seed, progress)
    signs = torch.sign(components.gather(1, components.abs().argmax(1, keepdim=True)))
    components = components * torch.where(signs == 0, torch.ones_like(signs), signs)
    return PCA(components=components.float().cpu().numpy(), explained_variance=variance.float().cpu().numpy(),
               mean=mean.float().cpu().numpy(), total_variance=float(total_variance), n_samples=len(data))


def _exact_pca(data: EmbeddingRows, n_components: int):
    """Top eigenvectors of the covariance, accumulated in float64 over blocks of rows."""
    n, d, dev = len(data), data.n_features, data.device
    total = torch.zeros(d, dtype=torch.float64, device=dev)
    scatter = torch.zeros(d, d, dtype=torch.float64, device=dev)
    for _, _, x in data:
        x = x.double()
        total += x.sum(0)
        scatter += x.T @ x
    mean = total / n
    cov = (scatter - n * torch.outer(mean, mean)) / max(n - 1, 1)
    values, vectors = torch.linalg.eigh(cov)
    top = torch.arange(d - 1, max(d - 1 - min(n_components, d), -1), -1, device=dev)
    return vectors[:, top].T, values[top].clamp_min(0), mean, cov.trace()


def _randomized_pca(data: EmbeddingRows, n_components: int, n_iter: int, oversample: int | None, seed: int,
                    progress: Progress | None):
    """Randomized SVD of the implicitly centred rows (Halko et al. 2011, Alg. 4.4), 2·n_iter + 2 passes."""
    n, d, dev = len(data), data.n_features, data.device
    width = min(n_components + (oversample if oversample is not None else max(n_components, 10)), n, d)
    n_components = min(n_components, width)
    gen = torch.Generator().manual_seed(seed)
    passes, done = 2 * n_iter + 2, 0

    def tick():
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, passes, "pass")

    omega = torch.randn(d, width, generator=gen).to(dev)
    held = data.as_sparse()
    if held is not None:
        # Held sparse: every "pass" is one sparse-dense product, X·M or Xᵀ·Q, on the CSR matrix.
        x, x_t = sparse_tensor(held, dev), sparse_tensor(held.T.tocsr(), dev)
        total = torch.from_numpy(np.asarray(held.sum(0, dtype=np.float64)).ravel()).to(dev)
        sumsq = torch.tensor(np.square(held.data, dtype=np.float64).sum(), device=dev)

        def times(m: torch.Tensor) -> torch.Tensor:
            return x @ m

        def transpose_times(q: torch.Tensor) -> torch.Tensor:
            return x_t @ q
        y = times(omega)
    else:
        # Pass 1: the mean, the total sum of squares and the first sketch Y = X·Ω, together.
        total = torch.zeros(d, dtype=torch.float64, device=dev)
        sumsq = torch.zeros((), dtype=torch.float64, device=dev)
        y = torch.empty(n, width, device=dev)
        for lo, hi, x in data:
            total += x.sum(0, dtype=torch.float64)
            sumsq += (x.double() ** 2).sum()
            y[lo:hi] = x @ omega

        def times(m: torch.Tensor) -> torch.Tensor:
            for lo, hi, x in data:
                y[lo:hi] = x @ m
            return y

        def transpose_times(q: torch.Tensor) -> torch.Tensor:
            z = torch.zeros(d, q.shape[1], device=dev)
            for lo, hi, x in data:
                z += x.T @ q[lo:hi]
            return z
    mean64 = total / n
    mean = mean64.float()
    total_variance = (sumsq - n * (mean64 @ mean64)) / max(n - 1, 1)
    q = torch.linalg.qr(y - mean @ omega).Q
    tick()

    def centred_transpose_times(q: torch.Tensor) -> torch.Tensor:
        """(X - 1μᵀ)ᵀ·Q, shape (d, width)."""
        return transpose_times(q) - mean[:, None] * q.sum(0)[None, :]

    for _ in range(n_iter):
        z = torch.linalg.qr(centred_transpose_times(q)).Q
        tick()
        q = torch.linalg.qr(times(z) - mean @ z).Q
        tick()
    b_t = centred_transpose_times(q)  # Bᵀ = (Qᵀ(X - 1μᵀ))ᵀ, shape (d, width)
    tick()
    _, s, vh = torch.linalg.svd(b_t.T.double(), full_matrices=False)
    return vh[:n_components], s[:n_components] ** 2 / max(n - 1, 1), mean64, total_variance


def sparse_tensor(x: sparse.csr_matrix, device: torch.device) -> torch.Tensor:
    """A scipy CSR matrix as a torch sparse CSR tensor on device: its products with dense tensors are threaded
    (scipy's run on one core), 4x faster for the PCA's at CIFAR scale on 2 cores."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(torch.from_numpy(x.indptr.astype(np.int64)), torch.from_numpy(x.indices.astype(np.int64)),
                                       torch.from_numpy(x.data), size=x.shape, device=device, check_invariants=False)


def project(x: torch.Tensor, pca: PCA) -> torch.Tensor:
    """Coordinates of unit-normalised rows x (shape (b, d)) on the components, shape (b, n_components)."""
    comps = torch.as_tensor(pca.components, device=x.device)
    mean = torch.as_tensor(pca.mean, device=x.device)
    return (x - mean) @ comps.T


def extremes(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the k largest values (largest first) and of the k smallest (smallest first).

    values : ndarray of shape (n,), e.g. targets' projections onto one component, or a component's
    coordinates (one per training example). Returns two int64 arrays of length ≤ min(k, n), by
    backend.ranking's rule unsigned: a coordinate's sign is no verdict, so zero and negative values rank too.
    """
    return top_k(values, k, signed=False), bottom_k(values, k, signed=False)


def embed_targets(data: EmbeddingRows, pca: PCA, sketch_dim: int, seed: int = 0,
                  progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One pass over data's rows: their PCA coordinates and the vectors clustering and neighbours use.

    The vectors are the unit embeddings themselves when they have at most sketch_dim coordinates, else
    their re-normalised count sketch to sketch_dim (CIFAR: 50,000 → 2,048 dims, cosines within ~0.02).
    Rows held sparse are projected and sketched by sparse products instead of block by block.
    Returns projections float32 (n, n_components) and vectors float32 (n, min(d, sketch_dim)).
    """
    sketched = data.n_features > sketch_dim
    if sketched:
        buckets, signs = sketch_hash(data.n_features, sketch_dim, seed)
    held = data.as_sparse()
    if held is not None:
        comps = torch.as_tensor(pca.components, device=data.device)
        mean = torch.as_tensor(pca.mean, device=data.device)
        # (x - μ)·Cᵀ = x·Cᵀ - μ·Cᵀ, so the rows stay sparse.
        projections = (sparse_tensor(held, data.device) @ comps.T.contiguous() - mean @ comps.T).cpu().numpy()
        if sketched:
            # The count sketch is the product with a (d, sketch_dim) matrix of one signed entry per row.
            hashing = sparse.csr_matrix((signs.numpy(), (np.arange(data.n_features), buckets.numpy())),
                                        shape=(data.n_features, sketch_dim), dtype=np.float32)
            vectors = unit_rows(torch.from_numpy((held @ hashing).toarray())).numpy()
        else:
            vectors = held.toarray()
        if progress is not None:
            progress(1, 1, "block")
        return projections.astype(np.float32, copy=False), vectors
    if sketched:
        buckets, signs = buckets.to(data.device), signs.to(data.device)
    projections = np.empty((len(data), len(pca.components)), dtype=np.float32)
    vectors = np.empty((len(data), sketch_dim if sketched else data.n_features), dtype=np.float32)
    for b, (lo, hi, x) in enumerate(data):
        projections[lo:hi] = project(x, pca).cpu().numpy()
        vectors[lo:hi] = (unit_rows(count_sketch(x, buckets, signs, sketch_dim)) if sketched else x).cpu().numpy()
        if progress is not None:
            progress(b + 1, data.n_blocks, "block")
    return projections, vectors


def components_for(ratio: np.ndarray, fraction: float) -> int | None:
    """Fewest leading components whose explained-variance ratios sum to `fraction`; None if all of them fall short.

    This is the "effective dimensionality" the paper compares between datamodel embeddings and
    network representations.
    """
    reached = np.flatnonzero(np.cumsum(ratio) >= fraction - 1e-9)
    return int(reached[0]) + 1 if len(reached) else None


def count_sketch(x: torch.Tensor, buckets: torch.Tensor, signs: torch.Tensor, dim: int) -> torch.Tensor:
    """Count sketch (Charikar et al. 2002) of rows x (b, d) into `dim` columns: column buckets[j] gets signs[j]·x[:, j].

    Inner products are preserved in expectation with error of order ‖a‖‖b‖/√dim, so cosine neighbours and
    RBF affinities of 50,000-dim CIFAR embeddings can be computed in `dim` dimensions, in one streaming pass.
    """
    out = torch.zeros(x.shape[0], dim, dtype=x.dtype, device=x.device)
    return out.index_add_(1, buckets, x * signs)


def sketch_hash(d: int, dim: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The random bucket (int64, shape (d,)) and sign (float32, shape (d,)) of each of d coordinates."""
    gen = torch.Generator().manual_seed(seed)
    buckets = torch.randint(0, dim, (d,), generator=gen)
    signs = torch.randint(0, 2, (d,), generator=gen).float() * 2 - 1
    return buckets, signs


def save_pca(run_dir: Path, pca: PCA, projections: np.ndarray, representation: PCA | None) -> None:
    """Write the datamodel PCA, every target's coordinates (n_targets, n_components) and the baseline's ratios."""
    run_dir = Path(run_dir)
    write_array(run_dir, PCA_COMPONENTS, pca.components.astype(np.float32))
    write_array(run_dir, PCA_MEAN, pca.mean.astype(np.float32))
    write_array(run_dir, PCA_EXPLAINED_VARIANCE, pca.explained_variance.astype(np.float32))
    write_array(run_dir, PCA_EXPLAINED_RATIO, pca.explained_variance_ratio.astype(np.float32))
    write_array(run_dir, PCA_PROJECTIONS, projections.astype(np.float32))
    if representation is not None:
        write_array(run_dir, REPRESENTATION_RATIO, representation.explained_variance_ratio.astype(np.float32))
    else:  # inside analyze's transaction: an older baseline goes with the commit of the new PCA
        delete(REPRESENTATION_RATIO.path(run_dir))


def has_pca(run) -> bool:
    return run.has(PCA_PROJECTIONS)


def pca_components(run) -> np.ndarray:
    """float32 (n_components, n_train), memory-mapped: component c's coordinate for each training example."""
    if not has_pca(run):
        raise RunError(f"{run.dir} has no PCA yet: run `{PCA_PROJECTIONS.command(run.dir)}`")
    return run.array(PCA_COMPONENTS)


def pca_projections(run) -> np.ndarray:
    """float32 (n_train + n_test, n_components), memory-mapped: every target's coordinates on the components."""
    return run.array(PCA_PROJECTIONS, C=len(pca_components(run)))


def explained_ratios(run) -> tuple[np.ndarray, np.ndarray | None]:
    """Explained-variance ratios of the datamodel PCA and of the representation baseline (None if absent)."""
    datamodel = np.asarray(run.array(PCA_EXPLAINED_RATIO, C=len(pca_components(run))))
    return datamodel, (np.asarray(run.array(REPRESENTATION_RATIO)) if run.has(REPRESENTATION_RATIO) else None)


def load_summary(run) -> dict:
    """structure/summary.json, the settings and headline numbers of the last `analyze` ({} if absent)."""
    return read_json(run.dir, STRUCTURE_SUMMARY, missing_ok=True) or {}
