"""Folder datasets: PNG round trips, the common channel count, and the refusals."""
import numpy as np
import pytest
from PIL import Image

from backend.datasets import DatasetError, load_dataset

CLASSES = ("ant", "bee", "cow")


def write_tree(root, grey=False, n_per_class=(3, 2), size=(6, 5), seed=0):
    """Random PNGs under root/{train,test}/<class>/; returns {split: (images, labels)} in load order."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in zip(("train", "test"), n_per_class):
        images, labels = [], []
        for label, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                shape = (size[1], size[0]) if grey else (size[1], size[0], 3)
                a = rng.integers(0, 256, size=shape, dtype=np.uint8)
                Image.fromarray(a).save(root / split / name / f"img{i:02d}.png")
                images.append(a if not grey else a[..., None])
                labels.append(label)
        out[split] = (np.array(images, dtype=np.uint8), np.array(labels))
    return out


@pytest.mark.parametrize("grey", [False, True])
def test_round_trip(tmp_path, grey):
    expected = write_tree(tmp_path, grey=grey)
    ds = load_dataset(f"folder:{tmp_path}")
    assert ds.class_names == CLASSES
    assert ds.image_shape == (5, 6, 1 if grey else 3)
    np.testing.assert_array_equal(ds.train_images, expected["train"][0])
    np.testing.assert_array_equal(ds.train_labels, expected["train"][1])
    np.testing.assert_array_equal(ds.test_images, expected["test"][0])
    np.testing.assert_array_equal(ds.test_labels, expected["test"][1])


def test_mixed_modes_become_rgb_as_pil_converts(tmp_path):
    expected = write_tree(tmp_path)
    grey = np.arange(30, dtype=np.uint8).reshape(5, 6)
    Image.fromarray(grey).save(tmp_path / "test" / "bee" / "zz_grey.png")
    ds = load_dataset(f"folder:{tmp_path}")
    assert ds.image_shape == (5, 6, 3) and ds.n_test == 7
    oracle = np.asarray(Image.fromarray(grey).convert("RGB"))
    np.testing.assert_array_equal(ds.test_images[4], oracle)  # ant x2, bee x2, then zz_grey
    np.testing.assert_array_equal(ds.train_images, expected["train"][0])


def test_jpeg_and_non_image_files(tmp_path):
    write_tree(tmp_path)
    Image.fromarray(np.zeros((5, 6, 3), dtype=np.uint8)).save(tmp_path / "train" / "cow" / "extra.JPEG")
    (tmp_path / "train" / "cow" / "notes.txt").write_text("ignored")
    ds = load_dataset(f"folder:{tmp_path}")
    assert ds.n_train == 10 and ds.train_labels[-1] == 2


def test_sizes_differ(tmp_path):
    write_tree(tmp_path)
    bad = tmp_path / "test" / "cow" / "img01.png"
    Image.fromarray(np.zeros((7, 6, 3), dtype=np.uint8)).save(bad)
    with pytest.raises(DatasetError, match=rf"image {bad} is 6x7 but .*img00\.png is 6x5 \(width x height\): resize all images"):
        load_dataset(f"folder:{tmp_path}")


def test_unreadable_file(tmp_path):
    write_tree(tmp_path)
    bad = tmp_path / "train" / "bee" / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(DatasetError, match=rf"cannot read image {bad} \(.+\): replace it"):
        load_dataset(f"folder:{tmp_path}")


def test_class_only_in_test(tmp_path):
    write_tree(tmp_path)
    (tmp_path / "test" / "dog").mkdir()
    with pytest.raises(DatasetError, match=r"class 'dog' appears in .*test but not in .*train"):
        load_dataset(f"folder:{tmp_path}")


@pytest.mark.parametrize("split", ["train", "test"])
def test_missing_split_folder(tmp_path, split):
    (tmp_path / ("test" if split == "train" else "train") / "ant").mkdir(parents=True)
    with pytest.raises(DatasetError, match=rf"has no {split}/ subfolder: lay it out as PATH/train/<class>"):
        load_dataset(f"folder:{tmp_path}")


def test_no_images_at_all(tmp_path):
    (tmp_path / "train" / "ant").mkdir(parents=True)
    (tmp_path / "test").mkdir()
    with pytest.raises(DatasetError, match=r"holds no \.png/\.jpg/\.jpeg images"):
        load_dataset(f"folder:{tmp_path}")


def test_empty_test_split(tmp_path):
    write_tree(tmp_path, n_per_class=(2, 0))
    with pytest.raises(DatasetError, match=r"the test split is empty"):
        load_dataset(f"folder:{tmp_path}")
