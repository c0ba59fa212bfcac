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
