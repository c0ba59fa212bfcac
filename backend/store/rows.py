"""Rows of memory-mapped run arrays, read with positioned file reads instead of the mapping.

Touching a mapping maps the page-cache pages behind it into the process, whole large folios at a time
(often far more than the row), and they stay counted in its resident set. A dashboard session that
walks through a few thousand targets of a 12 GB weights.npy would hold gigabytes of them. A pread of
the row's bytes costs the same (one row of CIFAR weights: 200 KB, well under a millisecond from the
page cache) and leaves nothing mapped.
"""
from __future__ import annotations

import mmap
import os

import numpy as np


def read_row(array: np.ndarray, index: int) -> np.ndarray:
    """Copy of array[index] for an array from np.load(..., mmap_mode="r").

    array : ndarray of shape (n, *row_shape), C-ordered; any other array is simply indexed.
    Returns ndarray of shape row_shape.
    """
    if not _whole_file_memmap(array):
        return np.array(array[index])
    index = range(len(array))[index]  # negative indices, and an IndexError like numpy's
    count = int(np.prod(array.shape[1:], dtype=np.int64))
    row = np.fromfile(array.filename, dtype=array.dtype, count=count, offset=array.offset + index * count * array.itemsize)
    return row.reshape(array.shape[1:])


def read_columns(matrix: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """matrix[:, columns] as a new in-memory float32 array of shape (n, len(columns)) (float16 cast here).

    A whole-file memmap is read through a mapping opened for this read and closed after it, so the pages
    of a column block leave the resident set with it: reading every column block through one long-lived
    map would leave the whole file resident. A contiguous range of columns is a strided slice (n short
    reads of consecutive bytes); other columns are gathered.
    """
    columns = np.asarray(columns, dtype=np.int64)
    source = matrix
    if _whole_file_memmap(matrix):
        source = np.memmap(matrix.filename, dtype=matrix.dtype, mode="r", offset=matrix.offset, shape=matrix.shape)
    lo, hi = (int(columns[0]), int(columns[-1]) + 1) if len(columns) else (0, 0)
    contiguous = hi - lo == len(columns) and bool((np.diff(columns) == 1).all())
    out = np.array(source[:, lo:hi] if contiguous else source[:, columns], dtype=np.float32)
    del source
    return out


def write_transposed(matrix: np.ndarray, lo: int, hi: int, path, chunk_rows: int) -> None:
    """matrix[lo:hi].T as a new .npy file at `path` (matrix's dtype), `chunk_rows` source rows at a time.

    Each chunk's rows are read with file reads and written through a mapping of the output opened for
    that chunk alone, so neither side stays resident; chunks of 1,024 rows or more write whole pages.
    """
    n, width = hi - lo, matrix.shape[1]
    out = np.lib.format.open_memmap(path, mode="w+", dtype=matrix.dtype, shape=(width, n))
    offset = out.offset
    del out
    for a in range(lo, hi, max(1, chunk_rows)):
        b = min(a + max(1, chunk_rows), hi)
        rows = read_rows(matrix, np.arange(a, b))
        target = np.memmap(path, dtype=matrix.dtype, mode="r+", offset=offset, shape=(width, n))
        target[:, a - lo:b - lo] = rows.T
        target.flush()
        del target


def _whole_file_memmap(matrix: np.ndarray) -> bool:
    """True for the C-ordered memmap np.load(mmap_mode='r') returns (a view of it has a memmap, not the mmap, as base)."""
    return isinstance(matrix, np.memmap) and isinstance(matrix.base, mmap.mmap) and matrix.flags.c_contiguous


def read_rows(matrix: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Rows `rows` (sorted, unique) of a 2-D array as a new in-memory float32 array of shape (len(rows), d).

    A whole-file memmap is read with plain file reads, one per run of consecutive rows, so the pages
    read do not stay mapped into this process (the many-row form of read_row).
    """
    rows = np.asarray(rows, dtype=np.int64)
    if not _whole_file_memmap(matrix):
        return np.asarray(matrix[rows], dtype=np.float32)
    out = np.empty((len(rows), matrix.shape[1]), dtype=matrix.dtype)
    row_bytes = matrix.shape[1] * matrix.dtype.itemsize
    starts = np.r_[0, np.flatnonzero(np.diff(rows) != 1) + 1]
    ends = np.r_[starts[1:], len(rows)]
    with open(matrix.filename, "rb") as f:
        for a, b in zip(starts, ends):
            f.seek(matrix.offset + int(rows[a]) * row_bytes)
            f.readinto(out[a:b])
    return out.astype(np.float32, copy=False)


def write_rows(path, rows: np.ndarray, values: np.ndarray) -> None:
    """Write values (len(rows), *row_shape) into rows `rows` (sorted, unique) of the .npy file at `path`, in place.

    Plain positioned writes, one per run of consecutive rows, then an fsync; not through a memory map: mapped
    pages stay in the writer's resident set (so a writer's memory would grow with every block), and a full disk
    is an OSError here rather than a SIGBUS. values are cast to the file's dtype.
    """
    rows = np.asarray(rows, dtype=np.int64)
    with open(path, "r+b") as f:
        fmt = np.lib.format
        major, _ = fmt.read_magic(f)
        shape, _, dtype = (fmt.read_array_header_1_0 if major == 1 else fmt.read_array_header_2_0)(f)
        offset = f.tell()
        values = np.ascontiguousarray(np.asarray(values).astype(dtype, copy=False).reshape(len(rows), *shape[1:]))
        row_bytes = dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))
        starts = np.r_[0, np.flatnonzero(np.diff(rows) != 1) + 1] if len(rows) else np.zeros(0, np.int64)
        for a, b in zip(starts, np.r_[starts[1:], len(rows)]):
            f.seek(offset + int(rows[a]) * row_bytes)
            f.write(values[a:b].tobytes())
        f.flush()
        os.fsync(f.fileno())
