"""scikit-learn's bundled handwritten digits: the embedded default that needs no download."""
from __future__ import annotations

import numpy as np

from .base import Dataset

# The split is fixed by this constant alone, never by a run's seed, so every run of
# digits shares one split and runs with different seeds can evaluate each other.
SPLIT_SEED = 20221
N_TEST = 500


def load() -> Dataset:
    """1,797 8x8 grey images (pixel values 0..16 rescaled to 0..255), 1,297 train / 500 test, stratified."""
    # Imported here: the dashboard imports this package for thumbnails, and scikit-learn costs its first page seconds.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = bunch.target.astype(np.int64)
    idx_train, idx_test = train_test_split(
        np.arange(len(labels)), test_size=N_TEST, stratify=labels, random_state=SPLIT_SEED
    )
    idx_train.sort()
    idx_test.sort()
    return Dataset(
        name="digits",
        train_images=images[idx_train],
        train_labels=labels[idx_train],
        test_images=images[idx_test],
        test_labels=labels[idx_test],
        class_names=tuple(str(c) for c in range(10)),
    )
