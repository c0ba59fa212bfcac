"""Image files laid out one folder per class: ``PATH/{train,test}/<class_name>/*.png|jpg|jpeg``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .base import Dataset, DatasetError

SPLITS = ("train", "test")
EXTENSIONS = (".png", ".jpg", ".jpeg")
# Modes that carry one grey value per pixel; any other mode is read as RGB (alpha dropped).
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def load(root: str | Path) -> Dataset:
    """Read every image under ``root``; class names are the sorted subfolders of ``train/``.

    Images are kept grey (C=1) when every file is grey and otherwise all become RGB (C=3),
    so one dataset has one channel count. Within a split, images are ordered by class, then
    by file name.
    """
    root = Path(root)
    for split in SPLITS:
        if not (root / split).is_dir():
            raise DatasetError(
                f"folder dataset {root} has no {split}/ subfolder: "
                "lay it out as PATH/train/<class>/*.png and PATH/test/<class>/*.png"
            )
    class_names = tuple(sorted(d.name for d in (root / "train").iterdir() if d.is_dir()))
    unknown = sorted(d.name for d in (root / "test").iterdir() if d.is_dir() and d.name not in class_names)
    if unknown:
        raise DatasetError(
            f"class {unknown[0]!r} appears in {root / 'test'} but not in {root / 'train'}: "
            "add training images of it or remove it from test/"
        )
    files = {split: _labelled_files(root / split, class_names) for split in SPLITS}
    pixels = {split: [_read(f) for f, _ in files[split]] for split in SPLITS}
    everything = [(f, a) for split in SPLITS for (f, _), a in zip(files[split], pixels[split])]
    if not everything:
        raise DatasetError(
            f"folder dataset {root} holds no .png/.jpg/.jpeg images: put them in PATH/train/<class>/ and PATH/test/<class>/"
        )
    first, size = everything[0][0], everything[0][1].shape[:2]
    for f, a in everything:
        if a.shape[:2] != size:
            raise DatasetError(
                f"image {f} is {a.shape[1]}x{a.shape[0]} but {first} is {size[1]}x{size[0]} (width x height): "
                "resize all images to one size"
            )
    channels = 1 if all(a.ndim == 2 for _, a in everything) else 3
    arrays = {split: _stack(pixels[split], channels, size) for split in SPLITS}
    labels = {split: np.array([label for _, label in files[split]], dtype=np.int64) for split in SPLITS}
    return Dataset(
        name=f"folder:{root}",
        train_images=arrays["train"],
        train_labels=labels["train"],
        test_images=arrays["test"],
        test_labels=labels["test"],
        class_names=class_names,
    )


def _labelled_files(split_dir: Path, class_names: tuple[str, ...]) -> list[tuple[Path, int]]:
    """(file, class index) for every image of one split, by class then file name."""
    out = []
    for label, name in enumerate(class_names):
        class_dir = split_dir / name
        if class_dir.is_dir():
            images = sorted(f for f in class_dir.iterdir() if f.suffix.lower() in EXTENSIONS and f.is_file())
            out.extend((f, label) for f in images)
    return out


def _read(path: Path) -> np.ndarray:
    """uint8 ndarray of shape (H, W) for a grey file, (H, W, 3) otherwise."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L" if im.mode in GREY_MODES else "RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"cannot read image {path} ({exc}): replace it with a valid PNG/JPEG or delete it") from exc


def _stack(pixels: list[np.ndarray], channels: int, size: tuple[int, int]) -> np.ndarray:
    """uint8 ndarray of shape (n, H, W, channels); grey images repeat into RGB as PIL's L->RGB does."""
    out = np.empty((len(pixels), *size, channels), dtype=np.uint8)
    for i, a in enumerate(pixels):
        out[i] = a[..., None] if a.ndim == 2 else a
    return out
