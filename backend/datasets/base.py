"""The one in-memory form every dataset loader returns, the error they raise, and its fingerprint."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


class DatasetError(ValueError):
    """Bad dataset input: the message is one line naming the problem and the fix."""


@dataclass(frozen=True)
class Dataset:
    """A labelled image dataset with a fixed train/test split.

    train_images : uint8 ndarray of shape (n_train, H, W, C)
    train_labels : int64 ndarray of shape (n_train,), values in [0, n_classes)
    test_images  : uint8 ndarray of shape (n_test, H, W, C)
    test_labels  : int64 ndarray of shape (n_test,)
    class_names  : one name per class
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...]

    @property
    def n_train(self) -> int:
        return len(self.train_labels)

    @property
    def n_test(self) -> int:
        return len(self.test_labels)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_images.shape[1:])

    def target_images(self) -> np.ndarray:
        """All images in target order: the training set first, then the test set."""
        return np.concatenate([self.train_images, self.test_images])

    def target_labels(self) -> np.ndarray:
        """All labels in target order (int64)."""
        return np.concatenate([self.train_labels, self.test_labels]).astype(np.int64)


def dataset_fingerprint(ds: Dataset) -> str:
    """A short content hash of the images and labels of both splits: runs of one dataset share it, so `eval`
    and the planted-leak check refuse a run of another dataset."""
    h = hashlib.sha256()
    for arr in (ds.train_images, ds.train_labels, ds.test_images, ds.test_labels):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:16]
