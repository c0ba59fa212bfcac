"""npz datasets: round trips for both split encodings and image ranks, and every refusal."""
import numpy as np
import pytest

from backend.datasets import DatasetError, load_dataset, write_npz_dataset


def arrays(channels=None, split_as="str", n=12, seed=0):
    """12 images, every 3rd in test, labels 0..2 with each class in both splits."""
    rng = np.random.default_rng(seed)
    shape = (n, 5, 4) if channels is None else (n, 5, 4, channels)
    is_test = np.arange(n) % 3 == 0
    split = np.where(is_test, "test", "train") if split_as == "str" else is_test.astype(np.int64)
    return {
        "images": rng.integers(0, 256, size=shape, dtype=np.uint8),
        "labels": (np.arange(n) // 3) % 3,
        "split": split,
    }


@pytest.mark.parametrize("channels", [None, 1, 3])
@pytest.mark.parametrize("split_as", ["str", "int"])
def test_round_trip(tmp_path, channels, split_as):
    a = arrays(channels, split_as)
    path = write_npz_dataset(tmp_path / "d.npz", a)
    ds = load_dataset(f"npz:{path}")
    images = a["images"] if channels else a["images"][..., None]
    is_test = np.arange(12) % 3 == 0
    np.testing.assert_array_equal(ds.train_images, images[~is_test])
    np.testing.assert_array_equal(ds.test_images, images[is_test])
    np.testing.assert_array_equal(ds.train_labels, a["labels"][~is_test])
    np.testing.assert_array_equal(ds.test_labels, a["labels"][is_test])
    assert ds.train_labels.dtype == np.int64
    assert ds.class_names == ("0", "1", "2")
    assert ds.name == f"npz:{path}"


def test_class_names_and_bytes_split(tmp_path):
    a = arrays(3)
    a["split"] = a["split"].astype("S5")
    a["class_names"] = np.array(["cat", "dog", "emu", "yak"])
    ds = load_dataset(f"npz:{write_npz_dataset(tmp_path / 'd.npz', a)}")
    assert ds.class_names == ("cat", "dog", "emu", "yak") and ds.n_test == 4


def test_writer_keeps_the_path_without_npz_suffix(tmp_path):
    path = write_npz_dataset(tmp_path / "leaky.data", arrays())
    assert path == tmp_path / "leaky.data" and sorted(p.name for p in tmp_path.iterdir()) == ["leaky.data"]
    assert load_dataset(f"npz:{path}").n_train == 8


def expect_error(tmp_path, a, pattern):
    path = tmp_path / "bad.npz"
    np.savez(path, **a)
    with pytest.raises(DatasetError, match=pattern):
        load_dataset(f"npz:{path}")


@pytest.mark.parametrize("key", ["images", "labels", "split"])
def test_missing_key(tmp_path, key):
    a = arrays()
    del a[key]
    expect_error(tmp_path, a, rf"lacks key '{key}' .*: save images, labels and split")


@pytest.mark.parametrize("key", ["labels", "split"])
def test_mismatched_lengths(tmp_path, key):
    a = arrays()
    a[key] = a[key][:-1]
    expect_error(tmp_path, a, r"has 12 images, (11|12) labels and (11|12) split entries: give .* one entry per image")


def test_object_array_is_refused_not_unpickled(tmp_path):
    a = arrays()
    a["class_names"] = np.array(["a", "b", None], dtype=object)
    expect_error(tmp_path, a, r"cannot read key 'class_names' .*object arrays are never unpickled")


@pytest.mark.parametrize("value", [-1, 3])
def test_label_out_of_range(tmp_path, value):
    a = arrays()
    a["class_names"] = np.array(["a", "b", "c"])
    a["labels"][4] = value
    expect_error(tmp_path, a, rf"train label {value} is outside 0\.\.2 \(3 class names\)")


def test_float_labels(tmp_path):
    a = arrays()
    a["labels"] = a["labels"].astype(np.float32)
    expect_error(tmp_path, a, r"labels in .* are float32 .*expected 1-D integers")


def test_non_uint8_images(tmp_path):
    a = arrays()
    a["images"] = a["images"] / 255.0
    expect_error(tmp_path, a, r"train images are float64, expected uint8 pixels 0\.\.255: convert them")


@pytest.mark.parametrize("shape", [(12, 20), (12, 5, 4, 3, 1)])
def test_bad_image_ndim(tmp_path, shape):
    a = arrays()
    a["images"] = np.zeros(shape, dtype=np.uint8)
    expect_error(tmp_path, a, r"images in .* have shape .*expected \(n, H, W\) or \(n, H, W, C\)")


@pytest.mark.parametrize("split, shown", [(["train"] * 11 + ["val"], "'val'"), ([0] * 11 + [2], "2")])
def test_wrong_split_values(tmp_path, split, shown):
    a = arrays()
    a["split"] = np.array(split)
    expect_error(tmp_path, a, rf"split in .* has value {shown}: use only 'train'/'test' \(or 0 = train, 1 = test\)")


@pytest.mark.parametrize("empty", ["train", "test"])
def test_empty_split(tmp_path, empty):
    a = arrays()
    a["split"] = np.full(12, "test" if empty == "train" else "train")
    expect_error(tmp_path, a, rf"the {empty} split is empty: put at least one image in it")


def test_class_only_in_test(tmp_path):
    a = arrays()
    a["class_names"] = np.array(["a", "b", "c", "d"])
    a["labels"][0] = 3  # index 0 is a test image
    expect_error(tmp_path, a, r"class 'd' appears in test but not in train")


def test_not_an_npz(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"this is not a zip file")
    with pytest.raises(DatasetError, match=r"cannot read .*junk\.npz as \.npz"):
        load_dataset(f"npz:{path}")


def test_single_npy_array(tmp_path):
    path = tmp_path / "one.npy"
    np.save(path, np.zeros(3))
    with pytest.raises(DatasetError, match=r"holds a single array, not named arrays"):
        load_dataset(f"npz:{path}")


def test_missing_file(tmp_path):
    with pytest.raises(DatasetError, match=r"does not exist: pass npz:PATH naming an existing \.npz file"):
        load_dataset(f"npz:{tmp_path / 'nope.npz'}")
