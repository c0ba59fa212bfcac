"""Single rows of memory-mapped run arrays, read with a positioned file read instead of the mapping.

Touching a mapping maps the page-cache pages behind it into the process, whole large folios at a time
(often far more than the row), and they stay counted in its resident set. A dashboard session that
walks through a few thousand targets of a 12 GB weights.npy would hold gigabytes of them. A pread of
the row's bytes costs the same (one row of CIFAR weights: 200 KB, well under a millisecond from the
page cache) and leaves nothing mapped.
"""
from __future__ import annotations

import mmap

import numpy as np


def read_row(array: np.ndarray, index: int) -> np.ndarray:
    """Copy of array[index] for an array from np.load(..., mmap_mode="r").

    array : ndarray of shape (n, *row_shape), C-ordered; any other array is simply indexed.
    Returns ndarray of shape row_shape.
    """
    if not (isinstance(array, np.memmap) and isinstance(array.base, mmap.mmap) and array.flags.c_contiguous):
        return np.array(array[index])
    index = range(len(array))[index]  # negative indices, and an IndexError like numpy's
    count = int(np.prod(array.shape[1:], dtype=np.int64))
    row = np.fromfile(array.filename, dtype=array.dtype, count=count, offset=array.offset + index * count * array.itemsize)
    return row.reshape(array.shape[1:])
