"""Datasets written in their official file formats (CIFAR-10's binary batches, MNIST's IDX), for the tests (and benchmarks/bench_import.py) that read
them back: fixtures, not a writer the project ships (it only reads these formats)."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from backend.datasets.cifar10 import BATCHES_DIR, META_FILE, RECORD_BYTES, TEST_FILE, TRAIN_FILES
from backend.datasets.idx import DTYPES


def write_cifar10_binary(
    directory: str | Path,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    class_names: tuple[str, ...],
) -> Path:
    """Write a dataset in the official binary layout under ``directory/cifar-10-batches-bin``.

    train_images, test_images : uint8 ndarray of shape (n, 32, 32, 3)
    train_labels, test_labels : int ndarray of shape (n,), values 0..255
    The training set is split over the five ``data_batch_*.bin`` files in order, as the
    official release does. Returns the batches folder.
    """
    batches = Path(directory) / BATCHES_DIR
    batches.mkdir(parents=True, exist_ok=True)
    parts = zip(np.array_split(train_images, len(TRAIN_FILES)), np.array_split(train_labels, len(TRAIN_FILES)))
    for name, (images, labels) in zip((*TRAIN_FILES, TEST_FILE), (*parts, (test_images, test_labels))):
        records = np.empty((len(labels), RECORD_BYTES), dtype=np.uint8)
        records[:, 0] = labels
        records[:, 1:] = np.asarray(images, dtype=np.uint8).transpose(0, 3, 1, 2).reshape(len(labels), -1)
        (batches / name).write_bytes(records.tobytes())
    (batches / META_FILE).write_text("".join(f"{c}\n" for c in class_names))
    return batches


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file at ``path`` (gzipped when the name ends in .gz).

    array : ndarray of one of the format's dtypes (uint8, int8, int16, int32, float32, float64), 1 to 8 dims
    """
    path = Path(path)
    codes = {dtype: code for code, dtype in DTYPES.items()}
    dtype = np.dtype(array.dtype).newbyteorder(">") if array.dtype.itemsize > 1 else np.dtype(array.dtype)
    data = np.ascontiguousarray(array, dtype=dtype)
    contents = bytes([0, 0, codes[dtype], data.ndim]) + np.array(data.shape, dtype=">u4").tobytes() + data.tobytes()
    path.write_bytes(gzip.compress(contents, mtime=0) if path.suffix == ".gz" else contents)
    return path
