"""The built-in digits dataset: sizes, a stratified split, and the same split on every call."""
import numpy as np
from sklearn.datasets import load_digits

from backend.datasets import load_dataset


def test_digits_shapes_and_dtypes():
    ds = load_dataset("digits")
    assert (ds.n_train, ds.n_test) == (1297, 500)
    assert ds.train_images.shape == (1297, 8, 8, 1) and ds.test_images.shape == (500, 8, 8, 1)
    assert ds.train_images.dtype == np.uint8 and ds.train_labels.dtype == np.int64
    assert ds.class_names == tuple(str(c) for c in range(10))
    assert ds.train_images.max() == 255


def test_digits_split_is_stratified_and_covers_every_image_once():
    ds = load_dataset("digits")
    bunch = load_digits()
    all_counts = np.bincount(bunch.target, minlength=10)
    test_counts = np.bincount(ds.test_labels, minlength=10)
    assert (test_counts > 0).all() and (np.bincount(ds.train_labels, minlength=10) > 0).all()
    # stratified: each class's test share is within one image of 500/1797 of its size
    assert np.all(np.abs(test_counts - all_counts * 500 / 1797) <= 1)
    # the two splits partition the original images (as multisets of (pixels, label))
    pixels = np.round(bunch.images * 255 / 16).astype(np.int64).reshape(1797, -1)
    original = sorted(np.column_stack([pixels, bunch.target]).tolist())
    ours = sorted(np.column_stack([ds.target_images().reshape(1797, -1), ds.target_labels()]).tolist())
    assert ours == original


def test_digits_split_is_identical_across_calls():
    a, b = load_dataset("digits"), load_dataset("digits")
    np.testing.assert_array_equal(a.train_images, b.train_images)
    np.testing.assert_array_equal(a.test_labels, b.test_labels)
