"""The checks every loaded dataset passes, so training and analysis can trust their input."""
from __future__ import annotations

import dataclasses

import numpy as np

from .base import Dataset, DatasetError

# Grey or colour: the trainer and the image grids handle nothing else.
CHANNELS = (1, 3)
# Shards count each model's predicted class in int16 (backend.store.schema SHARD).
MAX_CLASSES = 32_767


def validate(ds: Dataset) -> Dataset:
    """Check shapes, dtypes, label ranges and class coverage; return ``ds`` with int64 labels.

    Each failure raises DatasetError with one line naming the problem and the fix.
    """
    where = f"dataset {ds.name!r}"
    for split in ("train", "test"):
        images = getattr(ds, f"{split}_images")
        labels = getattr(ds, f"{split}_labels")
        if not isinstance(images, np.ndarray) or images.ndim != 4:
            shape = getattr(images, "shape", type(images).__name__)
            raise DatasetError(
                f"{where}: {split} images have shape {shape}, expected (n, height, width, channels): "
                "add a channel axis to grey images (images[..., None])"
            )
        if images.dtype != np.uint8:
            raise DatasetError(
                f"{where}: {split} images are {images.dtype}, expected uint8 pixels 0..255: "
                "convert them, e.g. (x * 255).round().astype(np.uint8) for floats in [0, 1]"
            )
        if min(images.shape[1:3]) < 1:
            raise DatasetError(f"{where}: {split} images have shape {images.shape[1:]}, with no pixels: give images of "
                               "at least one pixel")
        if images.shape[3] not in CHANNELS:
            raise DatasetError(
                f"{where}: {split} images have {images.shape[3]} channels, expected 1 (grey) or 3 (RGB): "
                "convert them to grey or RGB"
            )
        if not isinstance(labels, np.ndarray) or labels.ndim != 1 or labels.dtype.kind not in "iu":
            desc = f"{labels.dtype} array of shape {labels.shape}" if isinstance(labels, np.ndarray) else type(labels).__name__
            raise DatasetError(f"{where}: {split} labels are a {desc}, expected a 1-D integer array: store class indices 0..K-1")
        if len(labels) != len(images):
            raise DatasetError(
                f"{where}: {split} has {len(images)} images but {len(labels)} labels: give exactly one label per image"
            )
        if len(labels) == 0:
            raise DatasetError(f"{where}: the {split} split is empty: put at least one image in it")
    if ds.train_images.shape[1:] != ds.test_images.shape[1:]:
        raise DatasetError(
            f"{where}: train images are {ds.train_images.shape[1:]} but test images are {ds.test_images.shape[1:]}: "
            "give both splits one (height, width, channels)"
        )
    n_classes = len(ds.class_names)
    if n_classes == 0 or not all(isinstance(c, str) for c in ds.class_names):
        raise DatasetError(f"{where}: class_names is {_short(ds.class_names)}: give one name (a string) per class")
    if n_classes < 2:  # eq. 2's margin subtracts the best wrong class's logit: one class has none, every margin +inf
        raise DatasetError(f"{where}: it has {n_classes} class ({ds.class_names[0]!r}): a margin needs a wrong class; "
                           "give at least two classes")
    if n_classes > MAX_CLASSES:
        raise DatasetError(f"{where}: it has {n_classes:,} classes, above the {MAX_CLASSES:,} a run can hold: "
                           "use fewer classes")
    if len(set(ds.class_names)) != n_classes:
        raise DatasetError(f"{where}: class_names {ds.class_names!r} repeat a name: give each class a distinct name")
    for split in ("train", "test"):
        labels = getattr(ds, f"{split}_labels")
        bad = labels[(labels < 0) | (labels >= n_classes)]
        if bad.size:
            raise DatasetError(
                f"{where}: {split} label {int(bad[0])} is outside 0..{n_classes - 1} ({n_classes} class names): "
                "use class indices 0..K-1 and one class name per index"
            )
    missing = np.setdiff1d(ds.test_labels, ds.train_labels)
    if missing.size:
        names = ", ".join(repr(ds.class_names[c]) for c in missing)
        raise DatasetError(
            f"{where}: class {names} appears in test but not in train: no model can learn it; "
            "add training images of it or drop it from the test split"
        )
    return dataclasses.replace(
        ds,
        train_labels=ds.train_labels.astype(np.int64, copy=False),
        test_labels=ds.test_labels.astype(np.int64, copy=False),
        class_names=tuple(ds.class_names),
    )


def _short(names) -> str:
    text = repr(names)
    return text if len(text) <= 80 else text[:77] + "..."
