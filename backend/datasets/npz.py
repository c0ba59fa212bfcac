"""Any labelled image set as one ``.npz`` file: the way to bring your own data without writing a loader.

Keys:
    images      : uint8 ndarray of shape (n, H, W) or (n, H, W, C)
    labels      : int ndarray of shape (n,)
    split       : ndarray of shape (n,), 'train'/'test' strings or 0/1 ints (0 = train, 1 = test)
    class_names : optional str ndarray of shape (K,); default "0".."K-1" with K = max label + 1
Other keys are ignored. Each split keeps the file's order.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from backend.store.atomic import atomic_path

from .base import Dataset, DatasetError
from .validation import MAX_CLASSES

REQUIRED = ("images", "labels", "split")
SPLIT_NAMES = ("train", "test")
HOW_TO_WRITE = "write it with np.savez(path, images=..., labels=..., split=...)"


def load(path: str | Path) -> Dataset:
    """Read and split the arrays of ``path``; pickled (object) arrays are refused, never unpickled."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"npz dataset {path} does not exist: pass npz:PATH naming an existing .npz file")
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"cannot read {path} as .npz ({exc}): {HOW_TO_WRITE}") from exc
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DatasetError(f"{path} holds a single array, not named arrays: {HOW_TO_WRITE}")
    with npz:
        missing = [key for key in REQUIRED if key not in npz.files]
        if missing:
            raise DatasetError(
                f"npz dataset {path} lacks key {', '.join(map(repr, missing))} (has {', '.join(npz.files) or 'none'}): "
                "save images, labels and split (and optionally class_names) with np.savez"
            )
        arrays = {key: _read_key(npz, key, path) for key in (*REQUIRED, "class_names") if key in npz.files}
    return _split(arrays, name=f"npz:{path}", path=path)


def _read_key(npz: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    try:
        _check_declared_size(npz, key, path)
        return npz[key]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DatasetError(
            f"cannot read key {key!r} of {path} ({exc}): save it as a plain numeric or fixed-width string array "
            "(e.g. np.array(names, dtype=str)); object arrays are never unpickled"
        ) from exc


def _check_declared_size(npz: np.lib.npyio.NpzFile, key: str, path: Path) -> None:
    """A member whose header declares more data than the archive holds (a header claiming 10^12 images) is a
    broken file, refused before numpy allocates the array it declares (which would fail as out of memory)."""
    member = npz.zip.getinfo(f"{key}.npy")
    with npz.zip.open(member) as f:
        version = np.lib.format.read_magic(f)
        shape, _, dtype = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)(f)
        header = f.tell()
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if declared > member.file_size - header:
        raise DatasetError(f"key {key!r} of {path} declares shape {tuple(shape)} ({declared:,} bytes) but holds "
                           f"{member.file_size - header:,} bytes: the file is truncated or corrupt; {HOW_TO_WRITE}")


def _split(arrays: dict[str, np.ndarray], name: str, path: Path) -> Dataset:
    images, labels, split = arrays["images"], arrays["labels"], arrays["split"]
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise DatasetError(
            f"images in {path} have shape {images.shape}, expected (n, H, W) or (n, H, W, C): reshape them"
        )
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DatasetError(
            f"labels in {path} are {labels.dtype} of shape {labels.shape}, expected 1-D integers: store class indices 0..K-1"
        )
    if split.ndim != 1 or not len(images) == len(labels) == len(split):
        raise DatasetError(
            f"{path} has {len(images)} images, {len(labels)} labels and {len(split)} split entries: "
            "give images, labels and split one entry per image"
        )
    is_test = _is_test(split, path)
    if "class_names" in arrays:
        names = arrays["class_names"]
        if names.dtype.kind not in "US" or names.ndim != 1:
            raise DatasetError(
                f"class_names in {path} are {names.dtype} of shape {names.shape}, expected 1-D strings: "
                "save np.array(names, dtype=str)"
            )
        class_names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist())
    else:
        n_classes = int(labels.max()) + 1 if labels.size else 0
        if n_classes > MAX_CLASSES:  # before naming that many classes
            raise DatasetError(f"labels in {path} reach {n_classes - 1}, above the {MAX_CLASSES - 1} classes a run "
                               "can hold: store class indices 0..K-1")
        class_names = tuple(str(c) for c in range(n_classes))
    return Dataset(
        name=name,
        train_images=images[~is_test],
        train_labels=labels[~is_test].astype(np.int64),
        test_images=images[is_test],
        test_labels=labels[is_test].astype(np.int64),
        class_names=class_names,
    )


def _is_test(split: np.ndarray, path: Path) -> np.ndarray:
    """bool ndarray of shape (n,): True where ``split`` says test."""
    if split.dtype.kind in "US":
        values = np.char.decode(split) if split.dtype.kind == "S" else split
        allowed = SPLIT_NAMES
        is_test = values == "test"
    elif split.dtype.kind in "iub":
        values = split.astype(np.int64)
        allowed = (0, 1)
        is_test = values == 1
    else:
        raise DatasetError(f"split in {path} is {split.dtype}: use 'train'/'test' strings or 0/1 ints")
    bad = np.setdiff1d(values, allowed)
    if bad.size:
        raise DatasetError(
            f"split in {path} has value {bad[0].item()!r}: use only 'train'/'test' (or 0 = train, 1 = test)"
        )
    return is_test


def write_npz_dataset(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` (the keys above) to ``path`` atomically, keeping ``path`` exactly as given.

    np.savez appends ".npz" to a file name that lacks it; writing through an open file avoids
    that, so the file lands at ``path`` whatever its suffix.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return path
