"""Which training examples each model sees, drawn from (run seed, model index) alone.

Because nothing else enters the draw, model i of a run can be reproduced on its own, in
any batch, by any worker, after any crash.
"""
from __future__ import annotations

import numpy as np

from backend.training.seeds import MODEL_STREAM, SUBSET_STREAM, stream_seed


def subset_size(n_train: int, alpha: float) -> int:
    """round(alpha * n_train), the exact number of examples every model of a run trains on."""
    return int(round(alpha * n_train))


def model_seed(run_seed: int, index: int) -> int:
    """A 63-bit seed for model `index`'s own randomness (initialisation, shuffling, augmentation)."""
    return stream_seed(run_seed, index, MODEL_STREAM)


def model_subset(run_seed: int, index: int, n_train: int, alpha: float) -> np.ndarray:
    """Sorted int64 indices of the round(alpha*n_train) training examples model `index` sees."""
    rng = np.random.default_rng(np.random.SeedSequence([run_seed, index, SUBSET_STREAM]))
    return np.sort(rng.choice(n_train, size=subset_size(n_train, alpha), replace=False)).astype(np.int64)


def subsets_to_masks(subsets: np.ndarray, n_train: int) -> np.ndarray:
    """Bool masks of shape (K, n_train) from index arrays of shape (K, n)."""
    masks = np.zeros((len(subsets), n_train), dtype=bool)
    np.put_along_axis(masks, subsets, True, axis=1)
    return masks
