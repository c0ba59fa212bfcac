"""MNIST's IDX format: the reader against headers built byte by byte, idx:DIR round trips, and every refusal."""
import gzip
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.datasets import DatasetError, load_dataset
from backend.datasets.idx import FILES, TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS, read_idx
from tests.conftest import record_count
from tests.dataset_files import write_idx


def tiny(seed=0):
    """12 train / 6 test 5×4 images, labels 0..2 with each class in both splits."""
    rng = np.random.default_rng(seed)
    return {TRAIN_IMAGES: rng.integers(0, 256, (12, 5, 4), dtype=np.uint8), TRAIN_LABELS: (np.arange(12) % 3).astype(np.uint8),
            TEST_IMAGES: rng.integers(0, 256, (6, 5, 4), dtype=np.uint8), TEST_LABELS: (np.arange(6)[::-1] % 3).astype(np.uint8)}


def write_dir(directory, arrays, gz):
    directory.mkdir(exist_ok=True)
    for name, array in arrays.items():
        write_idx(directory / (name + (".gz" if gz else "")), array)
    return directory


@pytest.mark.parametrize("gz", [False, True])
def test_reader_decodes_the_documented_layout(tmp_path, gz):
    # Oracle: the format page's layout written with struct: 0, 0, type code, dims, big-endian sizes, big-endian values.
    values = np.arange(-6, 6, dtype=np.int16).reshape(3, 4) * 1000
    data = bytes([0, 0, 0x0B, 2]) + struct.pack(">II", 3, 4) + struct.pack(">12h", *values.ravel().tolist())
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    path.write_bytes(gzip.compress(data) if gz else data)
    got = read_idx(path)
    assert got.shape == (3, 4)
    np.testing.assert_array_equal(got, values)
    images = np.random.default_rng(1).integers(0, 256, (2, 3, 2), dtype=np.uint8)
    path = tmp_path / "b.idx"
    path.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">III", 2, 3, 2) + images.tobytes())
    np.testing.assert_array_equal(read_idx(path), images)
    assert write_idx(tmp_path / "c.idx", images).read_bytes() == path.read_bytes()


@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
def test_every_type_code_round_trips(tmp_path, dtype):
    array = (np.arange(24).reshape(2, 3, 4) - 7).astype(dtype) if dtype != "u1" else np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("x.idx", "x.idx.gz"):
        got = read_idx(write_idx(tmp_path / name, array))
        assert got.shape == array.shape and got.dtype.kind == np.dtype(dtype).kind
        np.testing.assert_array_equal(got, array)


def test_a_raw_file_is_memory_mapped_and_never_written(tmp_path):
    path = write_idx(tmp_path / "x.idx", np.zeros((3, 2, 2), np.uint8))
    before = path.read_bytes()
    array = read_idx(path)
    assert isinstance(array, np.memmap)
    array[0, 0, 0] = 7  # copy-on-write: the process's page changes, the file does not
    assert path.read_bytes() == before


@pytest.mark.parametrize("gz", [False, True])
def test_idx_dir_round_trip(tmp_path, gz):
    arrays = tiny()
    ds = load_dataset(f"idx:{write_dir(tmp_path / 'd', arrays, gz)}")
    assert ds.name == f"idx:{tmp_path / 'd'}"
    assert ds.train_images.shape == (12, 5, 4, 1) and ds.train_images.dtype == np.uint8
    np.testing.assert_array_equal(ds.train_images[..., 0], arrays[TRAIN_IMAGES])
    np.testing.assert_array_equal(ds.test_images[..., 0], arrays[TEST_IMAGES])
    np.testing.assert_array_equal(ds.train_labels, arrays[TRAIN_LABELS])
    np.testing.assert_array_equal(ds.test_labels, arrays[TEST_LABELS])
    assert ds.train_labels.dtype == np.int64 and ds.class_names == ("0", "1", "2")


def test_mixed_gz_and_raw_with_class_names(tmp_path):
    arrays = tiny()
    directory = tmp_path / "d"
    directory.mkdir()
    for i, name in enumerate(FILES):
        write_idx(directory / (name + (".gz" if i % 2 else "")), arrays[name])
    (directory / "class_names.txt").write_text("cat\ndog\nemu\nyak\n\n")
    ds = load_dataset(f"idx:{directory}")
    assert ds.class_names == ("cat", "dog", "emu", "yak")
    np.testing.assert_array_equal(ds.train_labels, arrays[TRAIN_LABELS])


def test_a_raw_file_wins_over_its_gz(tmp_path):
    arrays = tiny()
    directory = write_dir(tmp_path / "d", arrays, gz=True)
    write_idx(directory / TRAIN_LABELS, (arrays[TRAIN_LABELS] + 1) % 3)
    np.testing.assert_array_equal(load_dataset(f"idx:{directory}").train_labels, (arrays[TRAIN_LABELS] + 1) % 3)


def expect(tmp_path, pattern, gz=False, edit=None, **replace):
    arrays = dict(tiny(), **replace)
    tmp_path.mkdir(exist_ok=True)
    directory = write_dir(tmp_path / "d", arrays, gz)
    if edit:
        edit(directory)
    with pytest.raises(DatasetError, match=pattern) as info:
        load_dataset(f"idx:{directory}")
    assert "\n" not in str(info.value)
    return str(info.value)


def cut(name, n):
    def edit(directory):
        path = directory / name
        path.write_bytes(path.read_bytes()[:n])
    return edit


def test_truncated_raw_file(tmp_path):
    expect(tmp_path, rf"{TRAIN_IMAGES} is 200 bytes but its header declares 256: the file is truncated or padded",
           edit=cut(TRAIN_IMAGES, 200))


def test_padded_raw_file(tmp_path):
    def pad(directory):
        with open(directory / TEST_LABELS, "ab") as f:
            f.write(b"\0")
    expect(tmp_path, rf"{TEST_LABELS} is 15 bytes but its header declares 14", edit=pad)


def test_file_cut_inside_its_header(tmp_path):
    expect(tmp_path, rf"{TRAIN_LABELS} ends inside its IDX header: the file is truncated", edit=cut(TRAIN_LABELS, 6))


def test_truncated_gz_file(tmp_path):
    path = tmp_path / "x.gz"
    write_idx(path, np.random.default_rng(0).integers(0, 256, (50, 28, 28), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-300])
    with pytest.raises(DatasetError, match=r"x\.gz is not a complete gzip file .*download it again"):
        read_idx(path)


def test_gz_whose_contents_are_short_of_the_header(tmp_path):
    # A complete gzip stream around a truncated IDX file: the decompressed length is the check.
    def edit(directory):
        path = directory / f"{TEST_IMAGES}.gz"
        path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-10]))
    expect(tmp_path, rf"{TEST_IMAGES}\.gz decompresses to only 126 bytes, but its header declares 136", gz=True, edit=edit)


def test_gz_with_bytes_past_the_declared_size(tmp_path):
    def edit(directory):
        path = directory / f"{TEST_LABELS}.gz"
        path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()) + b"\1"))
    expect(tmp_path, rf"{TEST_LABELS}\.gz decompresses to more bytes, but its header declares 14", gz=True, edit=edit)


@pytest.mark.parametrize("contents", [b"PK\x03\x04" + bytes(40), b"\x89PNG\r\n\x1a\n", bytes([0, 0, 0x42, 1, 0, 0, 0, 1, 5]),
                                      bytes([0, 0, 8, 0]), b""])
def test_foreign_file(tmp_path, contents):
    def edit(directory):
        (directory / TRAIN_LABELS).write_bytes(contents)
    expect(tmp_path, rf"{TRAIN_LABELS} is not an IDX file \(it starts with bytes .*\): pass the MNIST-format file", edit=edit)


def test_a_gz_name_on_a_file_that_is_no_gzip(tmp_path):
    def edit(directory):
        (directory / f"{TRAIN_LABELS}.gz").write_bytes(gzip.decompress((directory / f"{TRAIN_LABELS}.gz").read_bytes()))
    expect(tmp_path, rf"{TRAIN_LABELS}\.gz is not a complete gzip file", gz=True, edit=edit)


def test_label_out_of_range_of_the_class_names(tmp_path):
    labels = tiny()[TEST_LABELS].copy()
    labels[4] = 3
    message = expect(tmp_path, rf"{TEST_LABELS} holds label 3, outside 0\.\.2 \(3 classes\)",
                     edit=lambda d: (d / "class_names.txt").write_text("a\nb\nc\n"), **{TEST_LABELS: labels})
    assert "replace it" in message


def test_counts_disagree(tmp_path):
    expect(tmp_path, rf"{TRAIN_IMAGES} holds 12 images but .*{TRAIN_LABELS} 11 labels: pair the images and labels",
           **{TRAIN_LABELS: tiny()[TRAIN_LABELS][:11]})


def test_train_and_test_shapes_disagree(tmp_path):
    expect(tmp_path, rf"{TRAIN_IMAGES} holds 5×4 images but .*{TEST_IMAGES} 4×5: both splits must come from one dataset",
           **{TEST_IMAGES: tiny()[TEST_IMAGES].reshape(6, 4, 5)})


def test_files_swapped(tmp_path):
    expect(tmp_path, rf"{TRAIN_LABELS} holds uint8 of shape \(12, 5, 4\), expected integers of shape \(n,\)",
           **{TRAIN_LABELS: tiny()[TRAIN_IMAGES]})
    expect(tmp_path, rf"{TEST_IMAGES} holds int16 of shape \(6, 5, 4\), expected unsigned bytes",
           **{TEST_IMAGES: tiny()[TEST_IMAGES].astype(np.int16)})


def test_missing_files_are_listed(tmp_path):
    directory = write_dir(tmp_path / "d", tiny(), gz=True)
    (directory / f"{TEST_LABELS}.gz").unlink()
    (directory / f"{TRAIN_IMAGES}.gz").unlink()
    with pytest.raises(DatasetError, match=rf"lacks {TRAIN_IMAGES}\[\.gz\], {TEST_LABELS}\[\.gz\]: put the four"):
        load_dataset(f"idx:{directory}")
    with pytest.raises(DatasetError, match="is not a folder: pass idx:DIR"):
        load_dataset(f"idx:{tmp_path / 'nowhere'}")
    with pytest.raises(DatasetError, match="lacks a path: write idx:PATH"):
        load_dataset("idx:")


def test_checksum_of_the_decompressed_contents(tmp_path):
    import hashlib
    array = np.arange(10, dtype=np.uint8)
    raw, packed = write_idx(tmp_path / "x", array), write_idx(tmp_path / "x.gz", array)
    digest = hashlib.sha256(raw.read_bytes()).hexdigest()
    for path in (raw, packed):
        np.testing.assert_array_equal(read_idx(path, digest), array)
        with pytest.raises(DatasetError, match=rf"{path.name} has contents with SHA-256 {digest[:16]}…, expected 0000000000000000…"):
            read_idx(path, "0" * 64)


def test_a_gz_declaring_more_than_deflate_can_hold_is_refused_before_allocating(tmp_path):
    # 2^32 × 2^32 × 2^32 bytes would exhaust any machine; the file is 30 bytes.
    path = tmp_path / "bomb.gz"
    path.write_bytes(gzip.compress(bytes([0, 0, 8, 3]) + struct.pack(">III", 2**32 - 1, 2**32 - 1, 2**32 - 1)))
    with pytest.raises(DatasetError, match=r"bomb\.gz declares \d+ bytes, more than a gzip file of \d+ bytes can hold"):
        read_idx(path)


@st.composite
def idx_files(draw):
    """An IDX file's bytes with at most one thing wrong: its data a few bytes short or long, or any bytes at all."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=64))
    code = draw(st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x0A, 0x42]))
    shape = draw(st.lists(st.integers(0, 4), min_size=0, max_size=4))
    itemsize = {0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}.get(code, 1)
    length = max(0, int(np.prod(shape)) * itemsize + draw(st.sampled_from([0, 0, 0, -1, 1, -3])))
    return bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + draw(st.binary(min_size=length, max_size=length))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(contents=idx_files(), gz=st.booleans())
def test_any_bytes_read_as_an_array_or_one_dataset_error(tmp_path, contents, gz):
    path = tmp_path / ("f.gz" if gz else "f")
    path.write_bytes(gzip.compress(contents) if gz else contents)
    try:
        array = read_idx(path)
    except DatasetError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)
        record_count("hypothesis idx file", "refused with one DatasetError")
    else:
        assert array.size * array.itemsize + 4 + 4 * array.ndim == len(contents)
        record_count("hypothesis idx file", "read")


def test_negative_labels_empty_class_names_and_an_unreadable_file(tmp_path):
    labels = tiny()[TRAIN_LABELS].astype(np.int16)
    labels[2] = -1
    expect(tmp_path / "a", rf"{TRAIN_LABELS} holds label -1, outside 0\.\.2", **{TRAIN_LABELS: labels})
    expect(tmp_path / "b", r"class_names\.txt names no class: write one class name per line",
           edit=lambda d: (d / "class_names.txt").write_text("\n \n"))
    with pytest.raises(DatasetError, match=r"cannot be read \(Is a directory\): make it a readable file"):
        read_idx(tmp_path)
