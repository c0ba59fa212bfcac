"""near_duplicates against an all-pairs distance matrix computed in integers."""
import numpy as np
import pytest

from backend.leakage.duplicates import near_duplicates


def brute_force(test_images, train_images, radius):
    """Every pair within radius, by the full (n_test, n_train) matrix of exact integer distances."""
    a = test_images.reshape(len(test_images), -1).astype(np.int64)
    b = train_images.reshape(len(train_images), -1).astype(np.int64)
    squared = ((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2)
    rms = np.sqrt(squared / a.shape[1])
    rows, cols = np.nonzero(rms <= radius)
    order = np.lexsort((cols, rows, rms[rows, cols]))
    return rows[order], cols[order], rms[rows, cols][order]


@pytest.mark.parametrize("block", [1, 7, 512])
def test_every_pair_within_the_radius_and_no_other(block):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (300, 6, 5, 3), dtype=np.uint8)
    test = rng.integers(0, 256, (40, 6, 5, 3), dtype=np.uint8)
    # Copies at growing noise, one exact, one copied twice, and a bright pair (large norms stress float32).
    train[10] = train[11] = 250
    test[5], test[6], test[7] = train[3], np.clip(train[4].astype(int) + 3, 0, 255), train[10]
    test[8] = np.clip(train[200].astype(int) + rng.integers(-12, 13, train[200].shape), 0, 255)
    test[9] = np.clip(train[201].astype(int) + rng.integers(-30, 31, train[201].shape), 0, 255)
    for radius in (0.0, 3.0, 8.0, 20.0):
        got = near_duplicates(test, train, radius, block=block)
        want = brute_force(test, train, radius)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
    assert near_duplicates(test, train, 0.0)[0].tolist() == [5, 7, 7]  # test 7 equals train 10 and 11


def brute_force_shifted(test_images, train_images, radius, max_shift):
    """The least exact distance over every translation of each test image, each translated by hand (edges repeated)."""
    h, w = test_images.shape[1:3]
    best = None
    for dy in range(-max_shift, max_shift + 1):
        for dx in range(-max_shift, max_shift + 1):
            ys = np.clip(np.arange(h) + dy, 0, h - 1)
            xs = np.clip(np.arange(w) + dx, 0, w - 1)
            moved = test_images[:, ys][:, :, xs].reshape(len(test_images), -1).astype(np.int64)
            b = train_images.reshape(len(train_images), -1).astype(np.int64)
            squared = ((moved[:, None, :] - b[None, :, :]) ** 2).sum(axis=2)
            best = squared if best is None else np.minimum(best, squared)
    rms = np.sqrt(best / (h * w * test_images.shape[3]))
    rows, cols = np.nonzero(rms <= radius)
    order = np.lexsort((cols, rows, rms[rows, cols]))
    return rows[order], cols[order], rms[rows, cols][order]


@pytest.mark.parametrize("block", [1, 16])
def test_shifted_copies_are_found_at_their_best_translation(block):
    rng = np.random.default_rng(1)
    train = rng.integers(0, 256, (200, 9, 8, 1), dtype=np.uint8)
    test = rng.integers(0, 256, (30, 9, 8, 1), dtype=np.uint8)
    # A moved image loses the row or column it moves past: give the moved ones a repeated edge there.
    train[8, -1] = train[8, -2]
    train[9, :, 0] = train[9, :, 1]
    test[0] = np.roll(train[7], 1, axis=0)                     # a shift wraps: no exact copy at any translation
    test[1, 1:] = train[8, :-1]; test[1, 0] = train[8, 0]       # train 8 moved down a pixel, edge repeated
    test[2, :, :-1] = train[9, :, 1:]; test[2, :, -1] = train[9, :, -1]  # moved left a pixel
    test[3] = np.clip(train[10].astype(int) + rng.integers(-5, 6, train[10].shape), 0, 255)
    for radius in (0.0, 6.0, 40.0):
        got = near_duplicates(test, train, radius, max_shift=1, block=block)
        want = brute_force_shifted(test, train, radius, 1)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
    calls = []
    near_duplicates(test, train, 6.0, max_shift=1, block=block, progress=lambda *a: calls.append(a))
    assert calls[0] == (0, 30, "test image") and calls[-1] == (30, 30, "test image")
    # Both one-pixel moves are exact copies at their shift and far apart without it.
    assert near_duplicates(test, train, 0.0, max_shift=1)[0].tolist() == [1, 2]
    assert near_duplicates(test, train, 0.0)[0].tolist() == []
