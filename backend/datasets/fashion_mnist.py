"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017): Zalando's 28×28 grey product photos in MNIST's IDX format.

Debian's `dataset-fashion-mnist` installs the four official files at DEBIAN_DIR; `--data-dir` points at
another folder holding them as published (`*-idx?-ubyte.gz`) or decompressed. Debian recompresses the
.gz files, so their bytes (and Zalando's MD5s of them) differ; the decompressed contents are the same,
and those are what SHA256 checks.
"""
from __future__ import annotations

from pathlib import Path

from . import idx
from .base import Dataset

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
# SHA-256 of each file's decompressed contents (header included). Computed from Debian's files; the two label
# files' upstream .gz (github.com/zalandoresearch/fashion-mnist, data/fashion/ at b2617bb) have Zalando's published
# MD5s (25c81989…, bb300cfd…) and decompress to the same digests; the image digests match those that other
# projects derived from archives with Zalando's MD5s (8d4fb7e6…, bef4ecab…).
SHA256 = {
    idx.TRAIN_IMAGES: "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    idx.TRAIN_LABELS: "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    idx.TEST_IMAGES: "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    idx.TEST_LABELS: "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
# The label descriptions of Zalando's README, in label order.
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def load(data_dir: str | Path | None = None) -> Dataset:
    """60,000 train / 10,000 test 28×28 grey images (uint8 (n, 28, 28, 1)) from ``data_dir`` (default DEBIAN_DIR)."""
    directory = Path(DEBIAN_DIR if data_dir is None else data_dir)
    fix = ("install Debian's copy (apt-get install dataset-fashion-mnist) or pass --data-dir naming a folder "
           "with the four files from github.com/zalandoresearch/fashion-mnist")
    paths = idx.find_files(directory, f"Fashion-MNIST folder {directory}", fix)
    return idx.read_dataset(paths, "fashion-mnist", CLASS_NAMES, SHA256)
