"""MNIST's IDX format, read with numpy alone, and any dataset stored in it (`idx:DIR`).

Format (LeCun et al., http://yann.lecun.com/exdb/mnist/, "the IDX file format"): two zero bytes, a type
code, the number of dimensions d; then d big-endian uint32 sizes; then the values, row-major and
big-endian. An MNIST-format dataset is four such files, each raw or gzipped (``NAME`` or ``NAME.gz``):
    train-images-idx3-ubyte, t10k-images-idx3-ubyte : uint8 of shape (n, H, W)
    train-labels-idx1-ubyte, t10k-labels-idx1-ubyte : uint8 of shape (n,)
An optional ``class_names.txt`` beside them names the classes, one per line (default "0".."K-1").
"""
from __future__ import annotations

import gzip
import hashlib
import math
import zlib
from pathlib import Path

import numpy as np


from .base import Dataset, DatasetError

# Type code -> numpy dtype (big-endian where it matters), as the format page lists them.
DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
          0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
TRAIN_IMAGES, TRAIN_LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"
FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)
CLASS_NAMES_FILE = "class_names.txt"
CHUNK = 1 << 20
# The most dimensions a sane file declares; a foreign file's fourth byte is refused above it.
MAX_DIMS = 8
# Deflate expands at most about 1032:1 (RFC 1951's longest match per the shortest code), so a gzip file whose
# header declares more is refused before any memory is allocated for it.
MAX_DEFLATE_RATIO = 1032


def load(directory: str | Path) -> Dataset:
    """The MNIST-format dataset in ``directory`` (spec ``idx:DIR``): images uint8 (n, H, W, 1), labels int64."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DatasetError(f"idx dataset {directory} is not a folder: pass idx:DIR naming the folder of the four IDX files")
    paths = find_files(directory, f"MNIST-format dataset in {directory}", "put the four upstream files there (gzipped or not)")
    names_path = directory / CLASS_NAMES_FILE
    class_names = None
    if names_path.is_file():
        class_names = tuple(line.strip() for line in names_path.read_text(errors="replace").splitlines() if line.strip())
        if not class_names:
            raise DatasetError(f"{names_path} names no class: write one class name per line, or delete it for 0..K-1")
    return read_dataset(paths, f"idx:{directory}", class_names)


def find_files(directory: Path, what: str, fix: str) -> dict[str, Path]:
    """The path of each of FILES in ``directory``, raw if present, else gzipped; one error for those missing.

    ``what`` names the dataset and ``fix`` says how to get the files, for the message.
    """
    found, missing = {}, []
    for name in FILES:
        candidates = [directory / name, directory / f"{name}.gz"]
        present = [p for p in candidates if p.is_file()]
        if present:
            found[name] = present[0]
        else:
            missing.append(f"{name}[.gz]")
    if missing:
        raise DatasetError(f"{what} lacks {', '.join(missing)}: {fix}")
    return found


def read_dataset(paths: dict[str, Path], name: str, class_names: tuple[str, ...] | None,
                 checksums: dict[str, str] | None = None) -> Dataset:
    """Read the four files ``paths`` (keyed by FILES) and check they form one dataset.

    checksums : optional SHA-256 of each file's decompressed contents, keyed by FILES.
    class_names : None names the classes "0".."K-1", K = the largest label + 1.
    """
    arrays = {key: read_idx(path, (checksums or {}).get(key)) for key, path in paths.items()}
    for images_key, labels_key in ((TRAIN_IMAGES, TRAIN_LABELS), (TEST_IMAGES, TEST_LABELS)):
        images, labels = arrays[images_key], arrays[labels_key]
        if images.ndim != 3 or images.dtype != np.uint8 or 0 in images.shape[1:]:
            raise DatasetError(f"{paths[images_key]} holds {_describe(images)}, expected unsigned bytes of shape (n, height, width): "
                               "it is not an images file; put the images file under this name")
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise DatasetError(f"{paths[labels_key]} holds {_describe(labels)}, expected integers of shape (n,): "
                               "it is not a labels file; put the labels file under this name")
        if len(images) != len(labels):
            raise DatasetError(f"{paths[images_key]} holds {len(images)} images but {paths[labels_key]} {len(labels)} labels: "
                               "pair the images and labels files of one split")
    if arrays[TRAIN_IMAGES].shape[1:] != arrays[TEST_IMAGES].shape[1:]:
        raise DatasetError(f"{paths[TRAIN_IMAGES]} holds {_side(arrays[TRAIN_IMAGES])} images but {paths[TEST_IMAGES]} "
                           f"{_side(arrays[TEST_IMAGES])}: both splits must come from one dataset")
    if class_names is None:
        n_classes = 1 + max(int(arrays[key].max(initial=0)) for key in (TRAIN_LABELS, TEST_LABELS))
        class_names = tuple(str(c) for c in range(n_classes))
    for key in (TRAIN_LABELS, TEST_LABELS):
        bad = arrays[key][(arrays[key] < 0) | (arrays[key] >= len(class_names))]
        if bad.size:
            raise DatasetError(f"{paths[key]} holds label {int(bad[0])}, outside 0..{len(class_names) - 1} "
                               f"({len(class_names)} classes): the file is corrupt or another dataset's; replace it")
    return Dataset(
        name=name,
        # (n, H, W) -> (n, H, W, 1): a view, so a memory-mapped file stays mapped.
        train_images=arrays[TRAIN_IMAGES][..., None],
        train_labels=arrays[TRAIN_LABELS].astype(np.int64),
        test_images=arrays[TEST_IMAGES][..., None],
        test_labels=arrays[TEST_LABELS].astype(np.int64),
        class_names=class_names,
    )


def read_idx(path: str | Path, sha256: str | None = None) -> np.ndarray:
    """The array in IDX file ``path`` (gzipped when its name ends in .gz), checked against its header.

    A raw file is memory-mapped copy-on-write (pages are read when touched, writes never reach the file);
    a gzipped one is decompressed once into an array of the size its header declares. With ``sha256``,
    the decompressed contents (header included) must have that digest.
    """
    path = Path(path)
    digest = hashlib.sha256()
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                dtype, shape, header = _header(f.read(4), f, path)
                declared = len(header) + math.prod(shape) * dtype.itemsize
                if declared > MAX_DEFLATE_RATIO * path.stat().st_size + len(header):
                    raise DatasetError(f"{path} declares {declared} bytes, more than a gzip file of {path.stat().st_size} "
                                       "bytes can hold: the file is truncated or its header is corrupt; download it again")
                digest.update(header)
                array = np.empty(math.prod(shape), dtype=dtype)
                view = memoryview(array.view(np.uint8))
                done = 0
                while done < len(view):
                    n = f.readinto(view[done:done + CHUNK])
                    if not n:
                        break
                    digest.update(view[done:done + n])
                    done += n
                if done < len(view) or f.read(1):
                    found = f"only {len(header) + done} bytes" if done < len(view) else "more bytes"
                    raise DatasetError(f"{path} decompresses to {found}, but its header declares {len(header) + len(view)}: "
                                       "the file is truncated or padded; download it again")
                array = array.reshape(shape)
        else:
            with open(path, "rb") as f:
                dtype, shape, header = _header(f.read(4), f, path)
            expected = len(header) + math.prod(shape) * dtype.itemsize
            size = path.stat().st_size
            if size != expected:
                raise DatasetError(f"{path} is {size} bytes but its header declares {expected}: "
                                   "the file is truncated or padded; download it again")
            array = np.memmap(path, dtype=dtype, mode="c", offset=len(header), shape=shape) if expected > len(header) \
                else np.empty(shape, dtype=dtype)
            if sha256 is not None:
                digest.update(header)
                flat = array.reshape(-1).view(np.uint8)
                for lo in range(0, len(flat), CHUNK):
                    digest.update(flat[lo:lo + CHUNK])
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DatasetError(f"{path} is not a complete gzip file ({exc}): the download is truncated or corrupt; "
                           "download it again, or store it uncompressed without the .gz suffix") from exc
    except OSError as exc:
        raise DatasetError(f"{path} cannot be read ({exc.strerror or exc}): make it a readable file") from exc
    if sha256 is not None and digest.hexdigest() != sha256:
        raise DatasetError(f"{path} has contents with SHA-256 {digest.hexdigest()[:16]}…, expected {sha256[:16]}…: "
                           "the file is corrupt or another dataset's; download it again")
    return array


def _header(magic: bytes, f, path: Path) -> tuple[np.dtype, tuple[int, ...], bytes]:
    """(dtype, shape, header bytes) from the magic number and the sizes after it; DatasetError if foreign."""
    if len(magic) < 4 or magic[:2] != b"\0\0" or magic[2] not in DTYPES or not 1 <= magic[3] <= MAX_DIMS:
        raise DatasetError(f"{path} is not an IDX file (it starts with bytes {magic.hex(' ') or 'none'}, "
                           "expected 00 00, a type code and a dimension count): pass the MNIST-format file itself")
    sizes = f.read(4 * magic[3])
    if len(sizes) < 4 * magic[3]:
        raise DatasetError(f"{path} ends inside its IDX header: the file is truncated; download it again")
    shape = tuple(int(s) for s in np.frombuffer(sizes, dtype=">u4"))
    return DTYPES[magic[2]], shape, magic + sizes


def _describe(array: np.ndarray) -> str:
    return f"{array.dtype.name} of shape {array.shape}"


def _side(images: np.ndarray) -> str:
    return "×".join(map(str, images.shape[1:]))
