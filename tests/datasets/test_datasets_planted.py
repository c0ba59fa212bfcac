"""Planted leaks: each planted test image is a near-copy of its recorded training source."""
import numpy as np
import pytest

from backend.datasets import DatasetError, load_dataset, write_npz_dataset
from backend.datasets.planted import SHIFTS, plant_leaks


def shifted(images):
    """float ndarray of shape (4, n, H*W*C): every image moved one pixel each way, edges repeated."""
    n, h, w, c = images.shape
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    return np.stack([padded[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy, dx in SHIFTS]).reshape(4, n, -1).astype(float)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_written_leaks_are_near_copies_of_their_sources(tmp_path, digits):
    n, noise = 40, 0.02
    arrays, truth = plant_leaks(digits, n=n, noise=noise, seed=3)
    path = write_npz_dataset(tmp_path / "leaky.npz", arrays)
    ds = load_dataset(f"npz:{path}")
    test_idx, train_idx = truth["planted_test"], truth["planted_train"]
    np.testing.assert_array_equal(arrays["planted_test"], test_idx)
    assert test_idx.dtype == np.int64 and train_idx.dtype == np.int64
    assert len(set(test_idx)) == n and len(set(train_idx)) == n
    np.testing.assert_array_equal(ds.test_labels[test_idx], ds.train_labels[train_idx])
    # Brute force over all training images and the four one-pixel shifts: the recorded
    # source is the nearest, within the noise budget (pixel noise + brightness, 2 * noise * 255).
    candidates = shifted(ds.train_images)
    planted = ds.test_images[test_idx].reshape(n, -1).astype(float)
    distance = np.abs(planted[None, :, None] - candidates[:, None]).mean(-1).min(0)  # (n, n_train)
    np.testing.assert_array_equal(distance.argmin(1), train_idx)
    assert distance[np.arange(n), train_idx].max() <= 2 * noise * 255


def test_zero_noise_gives_exact_shifted_copies_and_leaves_the_rest(digits):
    arrays, truth = plant_leaks(digits, n=10, noise=0.0, seed=0)
    test_images = arrays["images"][digits.n_train :]
    candidates = shifted(digits.train_images[truth["planted_train"]])
    planted = test_images[truth["planted_test"]].reshape(10, -1)
    assert (candidates == planted[None]).all(-1).any(0).all()
    untouched = np.setdiff1d(np.arange(digits.n_test), truth["planted_test"])
    np.testing.assert_array_equal(test_images[untouched], digits.test_images[untouched])
    np.testing.assert_array_equal(arrays["images"][: digits.n_train], digits.train_images)
    assert arrays["class_names"].tolist() == list(digits.class_names)


def test_same_seed_same_leaks(digits):
    a, _ = plant_leaks(digits, n=5, noise=0.05, seed=7)
    b, _ = plant_leaks(digits, n=5, noise=0.05, seed=7)
    c, _ = plant_leaks(digits, n=5, noise=0.05, seed=8)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["planted_test"], c["planted_test"])


@pytest.mark.parametrize("n, noise, pattern", [(0, 0.02, r"choose 1 <= n <= 500"), (501, 0.02, r"cannot plant 501"), (3, -0.1, r"negative")])
def test_bad_arguments(digits, n, noise, pattern):
    with pytest.raises(DatasetError, match=pattern):
        plant_leaks(digits, n=n, noise=noise, seed=0)
