"""Train-test near-duplicates by exhaustive pixel search: the ground truth a real dataset's leak lists are scored on.

The candidate lists (candidates.py) rank; this finds every pair closer than a radius, so on a real dataset
(Fashion-MNIST photographs some products twice) one can count how many true pairs each list ranks high.
Distances are root-mean-square pixel differences on the 0..255 scale, ‖a − b‖₂ / √(H·W·C), so one radius
means the same at any image size.
"""
from __future__ import annotations

import numpy as np

# Test images per GEMM block: 512 × 60,000 float32 distances are 123 MB.
BLOCK = 512


def near_duplicates(test_images: np.ndarray, train_images: np.ndarray, radius: float,
                    block: int = BLOCK) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (test, train) pair whose RMS pixel difference is at most ``radius``.

    test_images : uint8 (n_test, H, W, C); train_images : uint8 (n_train, H, W, C); memmaps are read a block at a time.
    Returns (test int64 (n,), train int64 (n,), rms float64 (n,)), nearest pairs first, ties by test then train.
    Squared distances come from one float32 GEMM per block of test images (‖a‖² + ‖b‖² − 2a·b); every pair
    within the radius plus float32's rounding is then measured exactly in integers, so the result is exact.
    """
    d = int(np.prod(train_images.shape[1:]))
    limit = radius * radius * d  # squared L2 bound
    train = np.asarray(train_images, dtype=np.float32).reshape(len(train_images), d)
    train_norms = np.einsum("ij,ij->i", train, train)
    found_test, found_train = [], []
    for lo in range(0, len(test_images), block):
        test = np.asarray(test_images[lo:lo + block], dtype=np.float32).reshape(-1, d)
        test_norms = np.einsum("ij,ij->i", test, test)
        squared = test_norms[:, None] + train_norms[None, :] - 2.0 * (test @ train.T)
        # float32 products of sums up to d·255² are off by a few units in the last place of the norms.
        slack = 1e-5 * (test_norms[:, None] + train_norms[None, :]) + 1.0
        rows, cols = np.nonzero(squared <= limit + slack)
        found_test.append(rows + lo)
        found_train.append(cols)
    test_ids = np.concatenate(found_test).astype(np.int64)
    train_ids = np.concatenate(found_train).astype(np.int64)
    diff = (np.asarray(test_images).reshape(-1, d)[test_ids].astype(np.int64)
            - np.asarray(train_images).reshape(-1, d)[train_ids].astype(np.int64))
    exact = np.einsum("ij,ij->i", diff, diff)
    keep = exact <= limit
    test_ids, train_ids, rms = test_ids[keep], train_ids[keep], np.sqrt(exact[keep] / d)
    order = np.lexsort((train_ids, test_ids, rms))
    return test_ids[order], train_ids[order], rms[order]
