"""Fashion-MNIST from Debian's real files: contents, checksums, --data-dir copies, refusals, and the CI slice."""
import gzip
import hashlib
import shutil

import numpy as np
import pytest

from backend.datasets import DatasetError, load_dataset
from backend.datasets import fashion_mnist, idx
from backend.leakage.duplicates import near_duplicates
from tests.conftest import FASHION_MNIST_PAIRS, FASHION_SLICE, require_fashion_mnist


@pytest.fixture(scope="module")
def debian():
    return require_fashion_mnist()


@pytest.fixture(scope="module")
def fashion(debian):
    return load_dataset("fashion-mnist")


def test_the_official_split_sizes_and_classes(fashion):
    # Xiao et al. 2017: 60,000 train / 10,000 test, 28×28 grey, 10 balanced classes.
    assert (fashion.n_train, fashion.n_test, fashion.image_shape) == (60000, 10000, (28, 28, 1))
    assert fashion.train_images.dtype == np.uint8 and fashion.train_labels.dtype == np.int64
    assert fashion.name == "fashion-mnist"
    assert fashion.class_names == ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                                   "Bag", "Ankle boot")
    assert np.bincount(fashion.train_labels).tolist() == [6000] * 10
    assert np.bincount(fashion.test_labels).tolist() == [1000] * 10


def test_the_images_are_the_files_pixels_unchanged(debian, fashion):
    # Oracle: the decompressed file after its 16-byte header, byte for byte.
    raw = gzip.decompress((debian / "t10k-images-idx3-ubyte.gz").read_bytes())
    assert raw[:4] == bytes([0, 0, 8, 3])
    np.testing.assert_array_equal(fashion.test_images.reshape(-1), np.frombuffer(raw, np.uint8, offset=16))


def test_checksums_are_those_of_the_decompressed_debian_files(debian):
    for name, digest in fashion_mnist.SHA256.items():
        assert hashlib.sha256(gzip.decompress((debian / f"{name}.gz").read_bytes())).hexdigest() == digest


def test_a_decompressed_copy_in_data_dir_loads_the_same_dataset(tmp_path, debian, fashion):
    for name in idx.FILES:
        (tmp_path / name).write_bytes(gzip.decompress((debian / f"{name}.gz").read_bytes()))
    copy = load_dataset("fashion-mnist", data_dir=tmp_path)
    assert isinstance(copy.train_images.base, np.memmap)  # mapped, not read
    for split in ("train", "test"):
        np.testing.assert_array_equal(getattr(copy, f"{split}_images"), getattr(fashion, f"{split}_images"))
        np.testing.assert_array_equal(getattr(copy, f"{split}_labels"), getattr(fashion, f"{split}_labels"))


def test_a_changed_label_fails_the_checksum(tmp_path, debian):
    for name in idx.FILES:
        shutil.copy(debian / f"{name}.gz", tmp_path)
    labels = bytearray(gzip.decompress((tmp_path / f"{idx.TRAIN_LABELS}.gz").read_bytes()))
    labels[100] = (labels[100] + 1) % 10  # still a valid label of a valid file: only the checksum can tell
    (tmp_path / f"{idx.TRAIN_LABELS}.gz").write_bytes(gzip.compress(bytes(labels)))
    with pytest.raises(DatasetError, match=rf"{idx.TRAIN_LABELS}\.gz has contents with SHA-256 .*: the file is corrupt"):
        load_dataset("fashion-mnist", data_dir=tmp_path)


def test_a_truncated_download_names_the_file(tmp_path, debian):
    for name in idx.FILES:
        shutil.copy(debian / f"{name}.gz", tmp_path)
    path = tmp_path / f"{idx.TEST_IMAGES}.gz"
    path.write_bytes(path.read_bytes()[:100_000])
    with pytest.raises(DatasetError, match=rf"{idx.TEST_IMAGES}\.gz is not a complete gzip file .*download it again"):
        load_dataset("fashion-mnist", data_dir=tmp_path)


def test_a_folder_without_the_files_says_how_to_get_them(tmp_path):
    with pytest.raises(DatasetError, match=r"Fashion-MNIST folder .* lacks train-images-idx3-ubyte\[\.gz\], .*"
                                           r"apt-get install dataset-fashion-mnist\) or pass --data-dir"):
        load_dataset("fashion-mnist", data_dir=tmp_path)


def test_the_slice_holds_its_pairs_and_no_others(fashion_mnist_slice, fashion):
    folder, pairs = fashion_mnist_slice
    piece = load_dataset(f"idx:{folder}")
    assert (piece.n_train, piece.n_test) == (FASHION_SLICE[0] + 2, FASHION_SLICE[1] + 2)
    assert piece.class_names == fashion.class_names
    np.testing.assert_array_equal(piece.train_images[:FASHION_SLICE[0]], fashion.train_images[:FASHION_SLICE[0]])
    for (test, train), (full_test, full_train) in zip(pairs, FASHION_MNIST_PAIRS):
        np.testing.assert_array_equal(piece.test_images[test], fashion.test_images[full_test])
        np.testing.assert_array_equal(piece.train_images[train], fashion.train_images[full_train])
        assert piece.test_labels[test] == piece.train_labels[train]
    # The exhaustive search over the slice finds exactly the two real pairs within 10 grey levels.
    found_test, found_train, rms = near_duplicates(piece.test_images, piece.train_images, 10.0)
    assert sorted(zip(found_test.tolist(), found_train.tolist())) == sorted(pairs)
    assert rms.round(2).tolist() == [0.74, 6.48]


# data/fashion-mnist/near_duplicates.csv: the radius chosen by looking at the pairs (README, "Real near-duplicates").
NEAR_DUPLICATES, NEAR_DUPLICATE_RADIUS = 42, 11.85


def test_the_committed_near_duplicates_are_what_they_claim(fashion):
    """data/fashion-mnist/near_duplicates.csv (`near-duplicates --radius 11.85 --max-shift 1` over all 60,000 × 10,000
    pairs, minutes): each pair's distance re-measured here by hand at every one-pixel translation. That the search
    misses no pair is tested on small data (tests/leakage/test_duplicates.py)."""
    from backend.leakage.duplicates import read_pairs
    from tests.conftest import ROOT

    test_ids, train_ids, rms = read_pairs(ROOT / "data" / "fashion-mnist" / "near_duplicates.csv")
    assert len(test_ids) == NEAR_DUPLICATES and np.all(np.diff(rms) >= 0)
    for t, r, d in zip(test_ids, train_ids, rms):
        a = np.pad(fashion.test_images[t, ..., 0].astype(np.int64), 1, mode="edge")
        b = fashion.train_images[r, ..., 0].astype(np.int64)
        best = min(((a[1 + dy:29 + dy, 1 + dx:29 + dx] - b) ** 2).sum() for dy in (-1, 0, 1) for dx in (-1, 0, 1))
        assert round(float(np.sqrt(best / 784)), 2) == d <= NEAR_DUPLICATE_RADIUS
    assert (test_ids[0], train_ids[0]) == FASHION_MNIST_PAIRS[0]
    assert {tuple(p) for p in FASHION_MNIST_PAIRS} <= set(zip(test_ids.tolist(), train_ids.tolist()))
