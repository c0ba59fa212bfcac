"""Train-test near-duplicates by exhaustive pixel search: the ground truth a real dataset's leak lists are scored on.

The candidate lists (candidates.py) rank; this finds every pair closer than a radius, so on a real dataset
(Fashion-MNIST photographs some products twice) one can count how many true pairs each list ranks high.
Distances are root-mean-square pixel differences on the 0..255 scale, ‖a − b‖₂ / √(H·W·C), so one radius
means the same at any image size; with ``max_shift`` a pair's distance is the least over every translation of
the test image by up to that many pixels (edges repeated, `datasets.planted.shifted`), as the pixel list's is.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from backend.datasets.planted import shifted
from backend.progress import Progress
from backend.store.atomic import atomic_path

# Test images per GEMM block: 512 × 60,000 float32 distances are 123 MB.
BLOCK = 512
# Pairs measured exactly at once: 4,096 × 784 int64 differences are 26 MB.
EXACT_BLOCK = 4096


def translations(max_shift: int) -> list[tuple[int, int]]:
    """Every (dy, dx) with |dy|, |dx| ≤ max_shift, the identity first."""
    moves = [(dy, dx) for dy in range(-max_shift, max_shift + 1) for dx in range(-max_shift, max_shift + 1)]
    return sorted(moves, key=lambda m: m != (0, 0))


def near_duplicates(test_images: np.ndarray, train_images: np.ndarray, radius: float, max_shift: int = 0,
                    block: int = BLOCK, progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (test, train) pair whose RMS pixel difference, at the test image's best shift, is at most ``radius``.

    test_images : uint8 (n_test, H, W, C); train_images : uint8 (n_train, H, W, C); memmaps are read a block at a time.
    Returns (test int64 (n,), train int64 (n,), rms float64 (n,)), nearest pairs first, ties by test then train.
    Squared distances come from one float32 GEMM per block of test images and shift (‖a‖² + ‖b‖² − 2a·b); every
    pair within the radius plus float32's rounding at some shift is then measured exactly in integers at every
    shift, so the result is exact. progress(done, total, "test image") after each block (backend.progress).
    """
    d = int(np.prod(train_images.shape[1:]))
    limit = radius * radius * d  # squared L2 bound
    moves = translations(max_shift)
    train = np.asarray(train_images, dtype=np.float32).reshape(len(train_images), d)
    train_norms = np.einsum("ij,ij->i", train, train)
    found = []
    if progress:
        progress(0, len(test_images), "test image")
    for lo in range(0, len(test_images), block):
        images = np.asarray(test_images[lo:lo + block])
        for dy, dx in moves:
            test = shifted(images, dy, dx).astype(np.float32).reshape(-1, d)
            test_norms = np.einsum("ij,ij->i", test, test)
            squared = test_norms[:, None] + train_norms[None, :] - 2.0 * (test @ train.T)
            # float32 products of sums up to d·255² are off by a few units in the last place of the norms.
            slack = 1e-5 * (test_norms[:, None] + train_norms[None, :]) + 1.0
            rows, cols = np.nonzero(squared <= limit + slack)
            found.append(np.stack([rows + lo, cols], axis=1))
        if progress:
            progress(min(lo + block, len(test_images)), len(test_images), "test image")
    pairs = np.unique(np.concatenate(found).astype(np.int64), axis=0).reshape(-1, 2)
    exact = np.empty(len(pairs), dtype=np.int64)
    for lo in range(0, len(pairs), EXACT_BLOCK):
        test_ids, train_ids = pairs[lo:lo + EXACT_BLOCK].T
        images = np.asarray(test_images)[test_ids]
        train_rows = np.asarray(train_images).reshape(-1, d)[train_ids].astype(np.int64)
        best = None
        for dy, dx in moves:
            diff = shifted(images, dy, dx).reshape(-1, d).astype(np.int64) - train_rows
            squared = np.einsum("ij,ij->i", diff, diff)
            best = squared if best is None else np.minimum(best, squared)
        exact[lo:lo + EXACT_BLOCK] = best
    keep = exact <= limit
    test_ids, train_ids, rms = pairs[keep, 0], pairs[keep, 1], np.sqrt(exact[keep] / d)
    order = np.lexsort((train_ids, test_ids, rms))
    return test_ids[order], train_ids[order], rms[order]


PAIRS_HEADER = ("test", "train", "rms")


def write_pairs(path: str | Path, test_ids: np.ndarray, train_ids: np.ndarray, rms: np.ndarray) -> None:
    """Write pairs as CSV (header test,train,rms; positions in the dataset's official split; rms to 2 decimals), atomically."""
    rows = "".join(f"{t},{r},{d:.2f}\n" for t, r, d in zip(test_ids.tolist(), train_ids.tolist(), rms.tolist()))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(",".join(PAIRS_HEADER) + "\n" + rows)


def read_pairs(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs `write_pairs` wrote: (test int64 (n,), train int64 (n,), rms float64 (n,)).

    A file with another header or a malformed row is refused with one line naming it."""
    path = Path(path)
    lines = path.read_text().splitlines()
    if not lines or lines[0].strip() != ",".join(PAIRS_HEADER):
        raise ValueError(f"{path} is not a near-duplicate pair list: its first line must be {','.join(PAIRS_HEADER)} "
                         f"(write one with `python -m precompute near-duplicates`)")
    test_ids, train_ids, rms = [], [], []
    for number, line in enumerate(lines[1:], start=2):
        parts = line.split(",")
        try:
            t, r, d = int(parts[0]), int(parts[1]), float(parts[2])
            if len(parts) != 3 or t < 0 or r < 0 or not d >= 0:
                raise ValueError
        except (ValueError, IndexError):
            raise ValueError(f"{path} line {number} is not 'test,train,rms' with non-negative numbers: {line[:80]!r}") from None
        test_ids.append(t)
        train_ids.append(r)
        rms.append(d)
    return np.array(test_ids, dtype=np.int64), np.array(train_ids, dtype=np.int64), np.array(rms, dtype=np.float64)
