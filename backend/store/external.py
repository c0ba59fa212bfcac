"""Arrays a run reads in place from files it does not own (an imported release), listed in external.json.

An imported run's masks and margins are the release's own .npy files, memory-mapped where they lie:
copying them would double 45 GB of disk. external.json maps a run file name (`masks.npy`) to the
array it stands for, made of *parts*: a row range of one .npy file placed at a column range of the
whole. The release keeps train and test margins in two files, so margins.npy is two parts side by
side (`ColumnConcat`); the held-out run is the last rows of the same files. A part's path is
relative to the release (`base: "release"`, the folder named once at the top, so a moved release is
one edit) or to the run (`base: "run"`: a held-out run's labels and images are its parent's), and it
must resolve inside that folder (a held-out run's: inside its parent run): a crafted external.json
reaches no other file.

Checksum: sha256 over the file's size, its whole .npy header and SAMPLE_BLOCKS blocks of
SAMPLE_BYTES spread evenly over the data (the first and the last included), checked each time a run
opens the array. A complete hash of the CIFAR-10 release (15 GB of masks, 30 GB of margins) takes
minutes at disk speed on every dashboard start; the sample costs a millisecond and still catches
what goes wrong in practice: another α's file (header shape), a truncated download (size), a
regenerated file (sampled bytes).
"""
from __future__ import annotations

import hashlib
import mmap
import os
from pathlib import Path

import numpy as np

from backend.store.schema import EXTERNAL

SAMPLE_BLOCKS = 16
SAMPLE_BYTES = 64 << 10


class ExternalError(ValueError):
    """An external array that is missing, moved or changed since the import."""


def npy_layout(path: str | Path) -> tuple[np.dtype, tuple, int]:
    """(dtype, shape, data offset) of a C-ordered .npy file, read from its header alone (never unpickled)."""
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
        except ValueError:  # numpy's message quotes the file's first bytes: never show what a foreign file holds
            raise ValueError(f"{path} is not an .npy file (its header does not parse)") from None
        if fortran or dtype.hasobject:
            raise ValueError(f"{path} holds a {'Fortran-ordered' if fortran else 'object'} array, not a plain C-ordered one")
        return dtype, tuple(shape), f.tell()


def fingerprint(path: str | Path) -> str:
    """sha256 of the file's size, .npy header and SAMPLE_BLOCKS sampled data blocks (see the module docstring)."""
    _, _, offset = npy_layout(path)
    size = os.path.getsize(path)
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        digest.update(f.read(offset))
        span = max(0, size - offset - SAMPLE_BYTES)
        for i in range(SAMPLE_BLOCKS):
            f.seek(offset + span * i // max(1, SAMPLE_BLOCKS - 1))
            digest.update(f.read(SAMPLE_BYTES))
    return digest.hexdigest()


def part(path: str | Path, rows: tuple[int, int], columns: tuple[int, int] | None, base: str, root: Path) -> dict:
    """The external.json record of rows [rows) of the .npy at `path`, placed at columns [columns) of the whole
    (None: the part is the whole array).

    base : "release" or "run" (path relative to `root`, the release or the run folder).
    """
    full = Path(root) / path
    dtype, shape, _ = npy_layout(full)
    return {"path": str(path), "base": base, "dtype": dtype.str, "shape": list(shape), "rows": list(rows),
            "columns": None if columns is None else list(columns), "sha256_sampled": fingerprint(full)}


def _resolve(record: object, release: str | None, run_dir: Path) -> Path:
    """The file of one part, after checking the record's form and that the file lies inside its base folder
    (a held-out run's run-relative parts: inside the run that holds it)."""
    problem = _part_problem(record)
    if problem is None and record["base"] == "release" and not isinstance(release, str):
        problem = "a release part, but the file names no release folder"
    if problem:
        raise ExternalError(f"{EXTERNAL.path(run_dir)} is corrupt ({problem}): import the release again")
    if record["base"] == "release":
        base = root = Path(release)
    else:
        base = root = Path(run_dir)
        if root.name == "heldout":
            root = root.parent
    path = base / record["path"]
    if Path(record["path"]).is_absolute() or not path.resolve().is_relative_to(root.resolve()):
        raise ExternalError(f"{EXTERNAL.path(run_dir)} places a part at {record['path']!r}, outside {root}: a part "
                            "lies inside its release (or run) folder; import the release again")
    return path


def _part_problem(record: object) -> str | None:
    """Why an external.json part record is not one `part` writes, or None."""
    def ints(value, n):
        return isinstance(value, list) and len(value) == n and all(type(v) is int and v >= 0 for v in value)
    if not isinstance(record, dict):
        return "a part is not an object"
    if record.get("base") not in ("release", "run") or not isinstance(record.get("path"), str) or \
            "\0" in record["path"] or not isinstance(record.get("dtype"), str) or \
            not isinstance(record.get("sha256_sampled"), str) or not isinstance(record.get("shape"), list) or \
            not ints(record.get("rows"), 2) or not (record.get("columns") is None or ints(record["columns"], 2)):
        return "a part without the path, base, dtype, shape, rows, columns and checksum `import` writes"
    return None


def open_part(record: dict, release: str | None, run_dir: Path) -> np.memmap:
    """Rows [rows) of one part's file as an np.memmap of exactly those rows (a whole-file map of them, so
    backend.store.rows reads it with positioned reads), after checking the file is the one imported."""
    path = _resolve(record, release, run_dir)
    where = "its `release` folder" if record["base"] == "release" else "the part's path"
    if not path.is_file():
        raise ExternalError(f"{path} (an external array of {run_dir}) is missing: put it back, or fix {where} "
                            f"in {EXTERNAL.path(run_dir)} if it moved")
    dtype, shape, offset = npy_layout(path)
    if dtype.str != record["dtype"] or list(shape) != record["shape"] or fingerprint(path) != record["sha256_sampled"]:
        raise ExternalError(f"{path} is not the file {run_dir} imported (its dtype, shape or sampled sha256 differ): "
                            "restore the original, or import the release again into a new --out")
    lo, hi = record["rows"]
    row_shape = tuple(shape[1:])
    row_bytes = int(np.prod(row_shape, dtype=np.int64)) * dtype.itemsize
    if hi == lo:
        return np.zeros((0, *row_shape), dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset + lo * row_bytes, shape=(hi - lo, *row_shape))


def open_array(entry: dict, release: str | None, run_dir: Path):
    """One external.json entry as an array: the part itself, or a ColumnConcat of its parts side by side."""
    if not isinstance(entry, dict) or not isinstance(entry.get("parts"), list) or not entry["parts"]:
        raise ExternalError(f"{EXTERNAL.path(run_dir)} is corrupt (an array without its list of parts): import the "
                            "release again")
    if len(entry["parts"]) == 1:
        return open_part(entry["parts"][0], release, run_dir)
    if any(not isinstance(p, dict) or p.get("columns") is None for p in entry["parts"]):
        raise ExternalError(f"{EXTERNAL.path(run_dir)} is corrupt (an array of several parts, one without its "
                            "columns): import the release again")
    parts = sorted(entry["parts"], key=lambda p: p["columns"][0])
    return ColumnConcat([open_part(p, release, run_dir) for p in parts])


class ColumnConcat:
    """Read-only 2-D arrays side by side, np.hstack(parts) without the copy: what every reader of an
    imported run's margins sees (margins.npy's interface: shape, dtype, len, indexing, np.asarray).

    parts : 2-D arrays (memmaps) with the same number of rows and dtype; rows : the range of their rows
    this view shows. Indexing follows numpy's for what readers do: rows by int, slice or index array,
    columns likewise, and `np.ix_(rows, columns)`; a slice of rows alone (`margins[:k]`) is again a
    ColumnConcat, so a prefix stays memory-mapped. Each read maps the parts afresh and unmaps them after
    (as backend.store.rows.read_columns does), so a pass over every row leaves nothing resident.
    """

    def __init__(self, parts: list, rows: range | None = None):
        if len({p.shape[0] for p in parts}) != 1 or len({p.dtype for p in parts}) != 1:
            raise ValueError("ColumnConcat parts need the same number of rows and the same dtype")
        self.parts = list(parts)
        self.rows = range(parts[0].shape[0]) if rows is None else rows
        self.starts = np.cumsum([0] + [p.shape[1] for p in parts])
        self.dtype = parts[0].dtype
        self.shape = (len(self.rows), int(self.starts[-1]))
        self.ndim, self.itemsize = 2, self.dtype.itemsize
        self.size = self.shape[0] * self.shape[1]
        self.nbytes = self.size * self.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None):
        out = self._read(slice(None), slice(None), outer=False)
        return out if dtype is None else out.astype(dtype, copy=False)

    def astype(self, dtype, copy=True):
        return np.asarray(self, dtype=dtype)

    def _columns(self, key) -> np.ndarray:
        if isinstance(key, slice):
            return np.arange(*key.indices(self.shape[1]))
        if isinstance(key, (int, np.integer)):
            return np.asarray([range(self.shape[1])[key]])
        key = np.asarray(key)
        if key.dtype == bool:
            return np.flatnonzero(key)
        return np.where(key < 0, key + self.shape[1], key).astype(np.int64)

    def _rows(self, key):
        """The parts' rows for a row key: a slice, an int or an int64 array."""
        if isinstance(key, slice):
            r = self.rows[key]
            return slice(r.start, r.stop, r.step) if len(r) else slice(0, 0)
        if isinstance(key, (int, np.integer)):
            return self.rows[key]
        key = np.asarray(key)
        if key.dtype == bool:
            key = np.flatnonzero(key)
        return self.rows.start + self.rows.step * np.where(key < 0, key + len(self), key).astype(np.int64)

    def __getitem__(self, key):
        if not isinstance(key, tuple):
            key = (key,)
        rows, columns = (key + (slice(None),))[:2]
        outer = isinstance(rows, np.ndarray) and rows.ndim == 2 and np.ndim(columns) == 2  # np.ix_
        if outer:
            rows, columns = rows.ravel(), np.asarray(columns).ravel()
        elif np.ndim(rows) > 0 and np.ndim(columns) > 0:
            raise IndexError("ColumnConcat takes rows and columns as np.ix_(rows, columns), not paired index arrays")
        if isinstance(rows, slice) and isinstance(columns, slice) and columns == slice(None):
            return ColumnConcat(self.parts, self.rows[rows])  # a row range: still a view
        return self._read(rows, columns, outer)

    def _read(self, rows, columns, outer: bool) -> np.ndarray:
        scalar_column = isinstance(columns, (int, np.integer))
        rows, cols = self._rows(rows), self._columns(columns)
        pieces = []
        for p, lo, hi in zip(self.parts, self.starts[:-1], self.starts[1:]):
            inside = np.flatnonzero((cols >= lo) & (cols < hi))
            if not len(inside):
                continue
            local = cols[inside] - lo
            if (np.diff(local) == 1).all():
                local = slice(int(local[0]), int(local[-1]) + 1)  # a contiguous block: strided reads
            source = fresh_map(p)
            if isinstance(rows, np.ndarray) and not isinstance(local, slice):
                sub = np.array(source[np.ix_(rows, local)])
            else:
                sub = np.array(source[rows, local]) if isinstance(local, slice) else np.array(source[rows][..., local])
            del source
            pieces.append((inside, sub))
        if not pieces:
            return np.asarray(fresh_map(self.parts[0])[rows, :0]).copy()
        out = np.empty(pieces[0][1].shape[:-1] + (len(cols),), dtype=self.dtype)
        for inside, sub in pieces:
            out[..., inside] = sub
        return out[..., 0] if scalar_column else out


def fresh_map(array):
    """A new mapping of a whole-file memmap (unmapped when dropped, taking its pages out of the resident set);
    any other array as it is."""
    if isinstance(array, np.memmap) and isinstance(array.base, mmap.mmap):
        return np.memmap(array.filename, dtype=array.dtype, mode="r", offset=array.offset, shape=array.shape)
    return array
