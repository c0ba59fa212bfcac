"""CIFAR-10 binary reader: round trips through the official record layout, and the download path."""
import hashlib
import io
import tarfile

import numpy as np
import pytest

from backend.datasets import DatasetError, load_dataset
from backend.datasets import cifar10
from tests.dataset_files import write_cifar10_binary

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@pytest.fixture
def tiny():
    rng = np.random.default_rng(0)
    return dict(
        train_images=rng.integers(0, 256, size=(20, 32, 32, 3), dtype=np.uint8),
        train_labels=np.arange(20) % 10,
        test_images=rng.integers(0, 256, size=(10, 32, 32, 3), dtype=np.uint8),
        test_labels=rng.permutation(10),
        class_names=CLASSES,
    )


def assert_matches(ds, tiny):
    np.testing.assert_array_equal(ds.train_images, tiny["train_images"])
    np.testing.assert_array_equal(ds.train_labels, tiny["train_labels"])
    np.testing.assert_array_equal(ds.test_images, tiny["test_images"])
    np.testing.assert_array_equal(ds.test_labels, tiny["test_labels"])
    assert ds.class_names == CLASSES and ds.name == "cifar10"


def test_reader_decodes_the_documented_record_layout(tmp_path):
    # Oracle: build records byte by byte as the format page describes them:
    # label, then all red values row by row, then all green, then all blue.
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    labels = [7, 0, 9]
    data = bytearray()
    for image, label in zip(images, labels):
        data.append(label)
        for channel in range(3):
            for row in range(32):
                for col in range(32):
                    data.append(int(image[row, col, channel]))
    path = tmp_path / "batch.bin"
    path.write_bytes(bytes(data))
    got_images, got_labels = cifar10.read_batch(path)
    assert got_images.shape == (3, 32, 32, 3) and got_images.dtype == np.uint8
    np.testing.assert_array_equal(got_images, images)
    assert got_labels.tolist() == labels and got_labels.dtype == np.int64


@pytest.mark.parametrize("point_at_batches", [False, True])
def test_round_trip(tmp_path, tiny, point_at_batches):
    batches = write_cifar10_binary(tmp_path, **tiny)
    assert sorted(p.name for p in batches.iterdir()) == sorted(cifar10.REQUIRED_FILES)
    ds = load_dataset("cifar10", data_dir=batches if point_at_batches else tmp_path)
    assert_matches(ds, tiny)


def test_official_meta_file_with_trailing_blank_lines(tmp_path, tiny):
    batches = write_cifar10_binary(tmp_path, **tiny)
    (batches / "batches.meta.txt").write_text("\n".join(CLASSES) + "\n\n\n")
    assert load_dataset("cifar10", data_dir=tmp_path).class_names == CLASSES


def test_truncated_batch_file(tmp_path, tiny):
    batches = write_cifar10_binary(tmp_path, **tiny)
    path = batches / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DatasetError, match=r"data_batch_3\.bin is \d+ bytes, not a multiple of the 3073-byte"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_missing_copy_says_pass_data_dir_or_download(tmp_path):
    with pytest.raises(DatasetError, match=r"CIFAR-10 not found in .*pass --data-dir .* or --download"):
        load_dataset("cifar10", data_dir=tmp_path / "nowhere")


def test_incomplete_copy_names_the_missing_file(tmp_path, tiny):
    batches = write_cifar10_binary(tmp_path, **tiny)
    (batches / "test_batch.bin").unlink()
    with pytest.raises(DatasetError, match=r"incomplete, missing test_batch\.bin.*--download"):
        load_dataset("cifar10", data_dir=tmp_path, download=True)


def make_tarball(tmp_path, tiny):
    """A gzipped tarball with the official layout; returns (file:// URL, MD5)."""
    batches = write_cifar10_binary(tmp_path / "src", **tiny)
    archive = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(batches, arcname="cifar-10-batches-bin")
    return archive.as_uri(), hashlib.md5(archive.read_bytes()).hexdigest()


def test_download_good_checksum(tmp_path, tiny, monkeypatch):
    url, md5 = make_tarball(tmp_path, tiny)
    monkeypatch.setattr(cifar10, "URL", url)
    monkeypatch.setattr(cifar10, "MD5", md5)
    data_dir = tmp_path / "data"
    assert_matches(load_dataset("cifar10", data_dir=data_dir, download=True), tiny)
    # no temporary archive or staging folder is left behind
    assert [p.name for p in data_dir.iterdir()] == ["cifar-10-batches-bin"]
    # a second call reads the copy without downloading
    monkeypatch.setattr(cifar10, "URL", "http://127.0.0.1:9/unreachable.tar.gz")
    assert_matches(load_dataset("cifar10", data_dir=data_dir, download=True), tiny)


def test_download_bad_checksum_leaves_nothing(tmp_path, tiny, monkeypatch):
    url, md5 = make_tarball(tmp_path, tiny)
    monkeypatch.setattr(cifar10, "URL", url)
    assert cifar10.MD5 != md5
    data_dir = tmp_path / "data"
    with pytest.raises(DatasetError, match=rf"has MD5 {md5}, expected {cifar10.MD5}: the file is corrupt"):
        load_dataset("cifar10", data_dir=data_dir, download=True)
    assert list(data_dir.iterdir()) == []


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/cifar-10-binary.tar.gz", "file:///nonexistent/cifar-10-binary.tar.gz"])
def test_download_offline(tmp_path, monkeypatch, url):
    monkeypatch.setattr(cifar10, "URL", url)
    data_dir = tmp_path / "data"
    with pytest.raises(DatasetError, match=r"could not download CIFAR-10 \(.+\): you appear to be offline; .*--data-dir"):
        load_dataset("cifar10", data_dir=data_dir, download=True)
    assert list(data_dir.iterdir()) == []


def test_download_refuses_path_traversal(tmp_path, monkeypatch):
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    monkeypatch.setattr(cifar10, "URL", archive.as_uri())
    monkeypatch.setattr(cifar10, "MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    data_dir = tmp_path / "data"
    with pytest.raises(DatasetError, match=r"could not extract the CIFAR-10 archive"):
        load_dataset("cifar10", data_dir=data_dir, download=True)
    assert not (tmp_path / "escaped.txt").exists() and list(data_dir.iterdir()) == []


def test_archive_without_batches_folder(tmp_path, monkeypatch):
    archive = tmp_path / "other.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        tar.addfile(info, io.BytesIO(b""))
    monkeypatch.setattr(cifar10, "URL", archive.as_uri())
    monkeypatch.setattr(cifar10, "MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    with pytest.raises(DatasetError, match=r"has no cifar-10-batches-bin/ folder: it is not the binary release"):
        load_dataset("cifar10", data_dir=tmp_path / "data", download=True)
