"""CIFAR-10 in its official binary format, read without pickle, with an optional checked download.

Format (https://www.cs.toronto.edu/~kriz/cifar.html, "binary version"): each ``.bin`` file is a
sequence of 3,073-byte records, one label byte then 3,072 pixel bytes: the 1,024 red values of
the 32x32 image in row-major order, then the green, then the blue. ``batches.meta.txt`` holds
the class names, one per line.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from .base import Dataset, DatasetError

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
DEFAULT_DATA_DIR = Path("data") / "cifar10"
BATCHES_DIR = "cifar-10-batches-bin"
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
META_FILE = "batches.meta.txt"
REQUIRED_FILES = (*TRAIN_FILES, TEST_FILE, META_FILE)
SIDE = 32
RECORD_BYTES = 1 + 3 * SIDE * SIDE


def load(data_dir: str | Path | None = None, download: bool = False) -> Dataset:
    """50,000 train / 10,000 test 32x32 RGB images from ``data_dir`` (or its ``cifar-10-batches-bin/``).

    With ``download=True`` and no copy in ``data_dir``, fetch the official tarball first.
    """
    data_dir = Path(DEFAULT_DATA_DIR if data_dir is None else data_dir)
    batches = _find_batches(data_dir)
    if batches is None:
        if not download:
            raise DatasetError(
                f"CIFAR-10 not found in {data_dir.resolve()} (expected {BATCHES_DIR}/ with {', '.join(REQUIRED_FILES)}): "
                f"pass --data-dir pointing at the folder that holds {BATCHES_DIR}, or --download to fetch it"
            )
        batches = fetch(data_dir)
    train = [read_batch(batches / name) for name in TRAIN_FILES]
    test_images, test_labels = read_batch(batches / TEST_FILE)
    return Dataset(
        name="cifar10",
        train_images=np.concatenate([images for images, _ in train]),
        train_labels=np.concatenate([labels for _, labels in train]),
        test_images=test_images,
        test_labels=test_labels,
        class_names=read_class_names(batches / META_FILE),
    )


def _find_batches(data_dir: Path) -> Path | None:
    """The batches folder: ``data_dir/cifar-10-batches-bin`` or ``data_dir`` itself; None if neither exists.

    A folder that exists but lacks some files is an error rather than None, so a broken copy is
    reported instead of being silently downloaded over.
    """
    for candidate in (data_dir / BATCHES_DIR, data_dir):
        present = [name for name in REQUIRED_FILES if (candidate / name).is_file()]
        if len(present) == len(REQUIRED_FILES):
            return candidate
        if present:
            missing = [name for name in REQUIRED_FILES if name not in present]
            raise DatasetError(
                f"CIFAR-10 in {candidate.resolve()} is incomplete, missing {', '.join(missing)}: "
                f"restore them, or delete the folder and pass --download (or --data-dir to another copy)"
            )
    return None


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One binary batch file -> (images uint8 of shape (n, 32, 32, 3), labels int64 of shape (n,))."""
    size = path.stat().st_size
    if size % RECORD_BYTES:
        raise DatasetError(
            f"{path} is {size} bytes, not a multiple of the {RECORD_BYTES}-byte CIFAR-10 record: "
            "the file is truncated or not CIFAR-10 binary; download cifar-10-binary.tar.gz again"
        )
    records = np.fromfile(path, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    images = records[:, 1:].reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def read_class_names(path: Path) -> tuple[str, ...]:
    """Class names from ``batches.meta.txt``: one per non-blank line."""
    return tuple(line.strip() for line in path.read_text().splitlines() if line.strip())


def fetch(data_dir: Path) -> Path:
    """Download the official tarball, check its MD5 and extract it to ``data_dir/cifar-10-batches-bin``.

    Extraction goes to a temporary folder beside the target and is renamed into place, so an
    interrupted download never leaves a half-written copy that a later run would trust.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    fd, archive = tempfile.mkstemp(dir=data_dir, prefix=".cifar-10-binary.", suffix=".tar.gz")
    staging = Path(tempfile.mkdtemp(dir=data_dir, prefix=".cifar-10-extract."))
    try:
        digest = hashlib.md5()
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(URL, timeout=60) as response:
                    while chunk := response.read(1 << 20):
                        digest.update(chunk)
                        out.write(chunk)
            except OSError as exc:  # URLError is an OSError; so are timeouts and resets
                raise DatasetError(
                    f"could not download CIFAR-10 ({exc}): you appear to be offline; "
                    "download cifar-10-binary.tar.gz by hand and pass --data-dir"
                ) from exc
        if digest.hexdigest() != MD5:
            raise DatasetError(
                f"CIFAR-10 download from {URL} has MD5 {digest.hexdigest()}, expected {MD5}: "
                "the file is corrupt or incomplete; retry --download, "
                "or download cifar-10-binary.tar.gz by hand and pass --data-dir"
            )
        try:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(staging, filter="data")  # refuses absolute paths, "..", links out, devices
        except tarfile.TarError as exc:
            raise DatasetError(
                f"could not extract the CIFAR-10 archive from {URL} ({exc}): "
                "download cifar-10-binary.tar.gz by hand, extract it and pass --data-dir"
            ) from exc
        extracted = staging / BATCHES_DIR
        if not extracted.is_dir():
            raise DatasetError(
                f"the CIFAR-10 archive from {URL} has no {BATCHES_DIR}/ folder: "
                "it is not the binary release; download cifar-10-binary.tar.gz by hand and pass --data-dir"
            )
        target = data_dir / BATCHES_DIR
        os.replace(extracted, target)
        return target
    finally:
        Path(archive).unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
