"""validate() and spec parsing: each bad dataset is refused with a one-line message naming the fix."""
import dataclasses

import numpy as np
import pytest

from backend.datasets import Dataset, DatasetError, dataset_spec_help, load_dataset, validate


def good(**changes):
    rng = np.random.default_rng(0)
    ds = Dataset(
        name="toy",
        train_images=rng.integers(0, 256, size=(6, 4, 4, 3), dtype=np.uint8),
        train_labels=np.array([0, 1, 2, 0, 1, 2], dtype=np.int32),
        test_images=rng.integers(0, 256, size=(3, 4, 4, 3), dtype=np.uint8),
        test_labels=np.array([2, 1, 0], dtype=np.uint8),
        class_names=("a", "b", "c"),
    )
    return dataclasses.replace(ds, **changes)


def test_valid_dataset_gets_int64_labels_and_same_pixels():
    ds = good()
    out = validate(ds)
    assert out.train_labels.dtype == np.int64 and out.test_labels.dtype == np.int64
    np.testing.assert_array_equal(out.train_labels, ds.train_labels)
    assert out.train_images is ds.train_images


@pytest.mark.parametrize(
    "changes, pattern",
    [
        (dict(train_images=np.zeros((6, 4, 4), np.uint8)), r"train images have shape \(6, 4, 4\), expected \(n, height, width, channels\)"),
        (dict(test_images=np.zeros((3, 4, 4, 3), np.float32)), r"test images are float32, expected uint8"),
        (dict(train_images=np.zeros((6, 4, 4, 2), np.uint8)), r"train images have 2 channels, expected 1 \(grey\) or 3 \(RGB\)"),
        (dict(train_labels=np.zeros(6, np.float64)), r"train labels are a float64 array .*expected a 1-D integer array"),
        (dict(test_labels=np.array([0, 1])), r"test has 3 images but 2 labels: give exactly one label per image"),
        (dict(test_images=np.zeros((0, 4, 4, 3), np.uint8), test_labels=np.zeros(0, np.int64)), r"the test split is empty"),
        (dict(test_images=np.zeros((3, 5, 4, 3), np.uint8)), r"train images are \(4, 4, 3\) but test images are \(5, 4, 3\)"),
        (dict(class_names=()), r"class_names is \(\): give one name"),
        (dict(class_names=("a", "b", "a")), r"repeat a name: give each class a distinct name"),
        (dict(train_labels=np.array([0, 1, 2, 0, 1, -1])), r"train label -1 is outside 0\.\.2"),
        (dict(test_labels=np.array([2, 1, 3])), r"test label 3 is outside 0\.\.2 \(3 class names\)"),
        (dict(train_labels=np.array([0, 1, 0, 0, 1, 1])), r"class 'c' appears in test but not in train"),
    ],
)
def test_bad_dataset(changes, pattern):
    with pytest.raises(DatasetError, match=pattern) as err:
        validate(good(**changes))
    assert "\n" not in str(err.value) and "dataset 'toy'" in str(err.value)


@pytest.mark.parametrize("spec", ["mnist", "cifar100", "digits:extra", "", "npzz:x"])
def test_unknown_dataset_lists_valid_specs(spec):
    with pytest.raises(DatasetError, match=r"unknown dataset .*: use one of digits, cifar10, fashion-mnist, idx:DIR, npz:PATH, folder:PATH"):
        load_dataset(spec)


@pytest.mark.parametrize("spec", ["npz:", "folder:", "idx:"])
def test_spec_without_path(spec):
    with pytest.raises(DatasetError, match=r"lacks a path: write (npz|folder|idx):PATH"):
        load_dataset(spec)


def test_dataset_error_is_a_value_error():
    assert issubclass(DatasetError, ValueError)


def test_help_names_every_spec():
    text = dataset_spec_help()
    for spec in ("digits", "cifar10", "npz:PATH", "folder:PATH", "--data-dir", "--download"):
        assert spec in text
