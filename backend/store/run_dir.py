"""The run directory: the one store every stage reads and writes.

Files (all plain .npy/.json; read any of them with np.load(mmap_mode="r") without this code):
  manifest.json  what the run is and how to reproduce it
  masks.npy      bool    (M, n_train)           which training examples model m saw
  margins.npy    float32 (M, n_train + n_test)  correct-class margin of model m on each target
  labels.npy     int64   (n_train + n_test,)    target labels, training targets first
  images.npy     uint8   (n_train + n_test, H, W, C)
  shards/        models [a, b) as they finish; merged into masks.npy/margins.npy
backend.store.schema lists every file of a run; every read here checks a file against its entry, and a
missing or broken one is a RunError naming the file and the command that rebuilds it.

Every file appears by atomic rename, so a run killed at any moment is never half-written.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from backend.store.schema import IMAGES, LABELS, MANIFEST, MARGINS, MASKS, SHARD, Artifact

FORMAT_VERSION = 1

# What numpy and json raise on a file that is not what its name says: truncated, garbage, a foreign format.
_UNREADABLE = (ValueError, OSError, EOFError, SyntaxError, UnicodeDecodeError, zipfile.BadZipFile)


class RunError(ValueError):
    """A run directory that is missing, foreign, corrupt or incompatible with the request."""


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it replaces `path` in one rename, on failure it vanishes."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)


def save_json(path: Path, obj: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def broken(run_dir: Path, artifact: Artifact, path: Path, problem: str) -> RunError:
    """The one error of a missing or broken artifact: the file, what is wrong, and the command that rebuilds it."""
    remedy = "rebuild it with" if problem == "is missing" else artifact.remedy
    return RunError(f"{path} {problem}: {remedy} `{artifact.command(run_dir)}`")


def _existing(run_dir: Path, artifact: Artifact, fields: dict) -> Path:
    path = artifact.path(run_dir, **fields)
    if not path.is_file():
        raise broken(run_dir, artifact, path, "is missing")
    if path.stat().st_size == 0:
        raise broken(run_dir, artifact, path, "is empty (0 bytes)")
    return path


def _shape_problem(got_dtype, got_shape: tuple, dtype: str | None, shape: tuple, sizes: dict) -> str | None:
    """Why an array does not match its entry (dtype, shape in symbols resolved by `sizes`), or None."""
    if dtype is not None and got_dtype != np.dtype(dtype):
        return f"has dtype {got_dtype}, expected {dtype}"
    want = tuple(sizes.get(d) if isinstance(d, str) else d for d in shape)
    if len(got_shape) != len(want) or any(w is not None and g != w for g, w in zip(got_shape, want)):
        shown = tuple(f"{d}={sizes[d]}" if isinstance(d, str) and d in sizes else d for d in shape)
        return f"has shape {got_shape}, expected {shown}"
    return None


def read_array(run_dir: Path, artifact: Artifact, sizes: dict | None = None, mmap: bool = True, **fields) -> np.ndarray:
    """An npy artifact, memory-mapped, never unpickled, checked against its entry's dtype and shape.

    sizes : values of the entry's size symbols (n_train, k, ...); symbols not given are free.
    """
    path = _existing(run_dir, artifact, fields)
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except _UNREADABLE as exc:
        raise broken(run_dir, artifact, path, f"is corrupt or truncated ({exc})") from None
    if not isinstance(array, np.ndarray):
        array.close()
        raise broken(run_dir, artifact, path, "is corrupt (an .npz archive, not one array)")
    problem = _shape_problem(array.dtype, array.shape, artifact.dtype, artifact.shape, sizes or {})
    if problem:
        raise broken(run_dir, artifact, path, f"{problem}: it is stale or corrupt")
    return array


def read_json(run_dir: Path, artifact: Artifact, missing_ok: bool = False, **fields) -> dict | None:
    """A JSON artifact as a dict (None if absent and missing_ok); anything but a JSON object is a RunError."""
    if missing_ok and not artifact.path(run_dir, **fields).exists():
        return None
    path = _existing(run_dir, artifact, fields)
    try:
        obj = json.loads(path.read_bytes().decode("utf-8"))
    except _UNREADABLE as exc:
        raise broken(run_dir, artifact, path, f"is corrupt ({exc})") from None
    if not isinstance(obj, dict):
        raise broken(run_dir, artifact, path, f"is corrupt (a JSON {type(obj).__name__}, not an object)")
    return obj


def read_npz(run_dir: Path, artifact: Artifact, sizes: dict | None = None, **fields) -> dict[str, np.ndarray]:
    """Every member of an npz artifact, loaded, each checked against the entry's members (dtype, shape)."""
    path = _existing(run_dir, artifact, fields)
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("one array, not an .npz archive")
        with archive:
            lacking = sorted(set(artifact.members) - set(archive.files) - set(artifact.optional))
            if lacking:
                raise ValueError(f"no {', '.join(lacking)}")
            members = {key: archive[key] if key in archive.files else None for key in artifact.members}
    except _UNREADABLE as exc:
        raise broken(run_dir, artifact, path, f"is corrupt or truncated ({exc})") from None
    for key, (dtype, shape) in artifact.members.items():
        if members[key] is None:
            continue
        problem = _shape_problem(members[key].dtype, members[key].shape, dtype, shape, sizes or {})
        if problem:
            raise broken(run_dir, artifact, path, f"member {key} {problem}")
    return members


def write_array(run_dir: Path, artifact: Artifact, array: np.ndarray, **fields) -> None:
    """Write an npy artifact atomically; an array that is not its entry's dtype and rank is a bug, refused."""
    array = np.asarray(array)
    problem = _shape_problem(array.dtype, array.shape, artifact.dtype, artifact.shape, {})
    if problem:
        raise ValueError(f"refusing to write {artifact.name}: it {problem}")
    path = artifact.path(run_dir, **fields)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_npy(path, array)


def write_json(run_dir: Path, artifact: Artifact, obj: dict, **fields) -> None:
    path = artifact.path(run_dir, **fields)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_json(path, obj)


def read_manifest(run_dir: Path) -> dict:
    if not (Path(run_dir) / MANIFEST.name).exists():
        raise RunError(f"{run_dir} is not a run (no {MANIFEST.name}): create one with `python -m precompute train --out {run_dir}`")
    return read_json(Path(run_dir), MANIFEST)


# Settings that define which models a run holds; a resume must match them exactly.
IDENTITY_KEYS = ("dataset", "alpha", "seed", "arch", "hparams")


def init_run(run_dir: Path, manifest: dict, labels: np.ndarray, images: np.ndarray) -> dict:
    """Create a run, or reopen an existing one after checking it holds the same kind of models.

    Returns the manifest on disk. An existing non-empty directory that is not a run is refused, so a
    typo in --out never mixes our files into someone else's folder.
    """
    run_dir = Path(run_dir)
    if MANIFEST.path(run_dir).exists():
        existing = read_manifest(run_dir)
        for key in IDENTITY_KEYS:
            if existing.get(key) != manifest.get(key):
                raise RunError(
                    f"{run_dir} already holds a run with a different {key} "
                    f"({_short(existing.get(key))} vs {_short(manifest.get(key))}): choose another --out or match its settings"
                )
        return existing
    if run_dir.exists() and any(run_dir.iterdir()):
        raise RunError(f"{run_dir} exists, is not empty and is not a run: choose a new or empty --out directory")
    run_dir.mkdir(parents=True, exist_ok=True)
    SHARD.folder(run_dir).mkdir(exist_ok=True)
    write_array(run_dir, LABELS, labels.astype(np.int64))
    write_array(run_dir, IMAGES, images.astype(np.uint8))
    manifest = dict(manifest, format_version=FORMAT_VERSION, n_models=0)
    write_json(run_dir, MANIFEST, manifest)
    return manifest


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def update_manifest(run_dir: Path, **changes) -> dict:
    manifest = dict(read_manifest(run_dir), **changes)
    write_json(Path(run_dir), MANIFEST, manifest)
    return manifest


def shard_ranges(run_dir: Path) -> list[tuple[int, int]]:
    """The [start, end) model ranges of the finished shards, sorted."""
    found = (SHARD.fields_of(path, run_dir) for path in SHARD.glob(run_dir))
    return sorted((int(f["start"]), int(f["end"])) for f in found)


def write_shard(run_dir: Path, start: int, masks: np.ndarray, margins: np.ndarray, predictions: np.ndarray) -> None:
    """Store models [start, start + K) in one atomic file; a kill leaves either all of them or none.

    predictions : int16 (K, n_targets), each model's predicted class per target
    """
    end = start + len(masks)
    path = SHARD.path(run_dir, start=start, end=end)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, masks=masks, margins=margins.astype(np.float32), predictions=predictions.astype(np.int16))


def read_shard(run_dir: Path, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
    shard = read_npz(Path(run_dir), SHARD, {"n": end - start}, start=start, end=end)
    return shard["masks"], shard["margins"]


def read_shard_predictions(run_dir: Path, start: int, end: int) -> np.ndarray | None:
    """A shard's predicted classes, int16 (end - start, n_targets), or None for a shard older than them."""
    return read_npz(Path(run_dir), SHARD, {"n": end - start}, start=start, end=end)["predictions"]


def prefix_pieces(run_dir: Path, n: int) -> list[tuple[int, int, slice]]:
    """How the shards fill models [0, n): (start, end, rows of that shard to take), in model order.

    Overlapping shards (two workers given the same range) hold identical models, so the first one wins.
    """
    pieces, filled = [], 0
    for s, e in shard_ranges(run_dir):
        if e <= filled or s > filled or s >= n:
            continue
        pieces.append((s, e, slice(filled - s, min(e, n) - s)))
        filled = min(e, n)
    return pieces


def done_models(run_dir: Path) -> np.ndarray:
    """Bool array marking every model index some shard holds (the completion bitmap)."""
    ranges = shard_ranges(run_dir)
    done = np.zeros(max((e for _, e in ranges), default=0), dtype=bool)
    for s, e in ranges:
        done[s:e] = True
    return done


def missing_ranges(run_dir: Path, n_models: int, lo: int = 0) -> list[tuple[int, int]]:
    """Maximal [start, end) ranges within [lo, n_models) that no shard holds yet."""
    done = np.zeros(n_models, dtype=bool)
    have = done_models(run_dir)[:n_models]
    done[: len(have)] = have
    done[:lo] = True
    ranges, start = [], None
    for i, d in enumerate(done):
        if not d and start is None:
            start = i
        if d and start is not None:
            ranges.append((start, i))
            start = None
    if start is not None:
        ranges.append((start, n_models))
    return ranges


def merge_shards(run_dir: Path, n_train: int, n_targets: int) -> int:
    """Write masks.npy/margins.npy from the longest complete prefix of shards; return its model count.

    The arrays are assembled through temp memmaps and renamed into place, so readers see either the old
    pair or the new pair, and CIFAR-scale runs never sit in RAM whole (shards are laid out by prefix_pieces).
    """
    run_dir = Path(run_dir)
    done = done_models(run_dir)
    n = int(np.argmin(done)) if not done.all() else len(done)
    with atomic_path(MASKS.path(run_dir)) as tmp_masks, atomic_path(MARGINS.path(run_dir)) as tmp_margins:
        masks = np.lib.format.open_memmap(tmp_masks, mode="w+", dtype=bool, shape=(n, n_train))
        margins = np.lib.format.open_memmap(tmp_margins, mode="w+", dtype=np.float32, shape=(n, n_targets))
        for s, e, take in prefix_pieces(run_dir, n):
            shard_masks, shard_margins = read_shard(run_dir, s, e)
            masks[s + take.start:s + take.stop] = shard_masks[take]
            margins[s + take.start:s + take.stop] = shard_margins[take]
        masks.flush()
        margins.flush()
        del masks, margins
    update_manifest(run_dir, n_models=n)
    return n


class Run:
    """Read access to a run directory: every array memory-mapped on first use, shapes checked.

    The dashboard holds one Run per run directory (st.cache_resource) and slices it per query.
    """

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        if not self.dir.is_dir():
            raise RunError(f"run {self.dir} does not exist: create it with `python -m precompute train --out {self.dir}`")
        self.manifest = read_manifest(self.dir)
        try:
            dataset = self.manifest["dataset"]
            self.n_train, self.n_test = int(dataset["n_train"]), int(dataset["n_test"])
            self.class_names = list(dataset["class_names"])
        except (KeyError, TypeError, ValueError) as exc:
            raise RunError(f"{MANIFEST.path(self.dir)} lacks a valid dataset entry ({exc!r}): it is not a manifest "
                           f"`python -m precompute train` wrote; restore it or start a new run") from None
        self._arrays: dict[str, np.ndarray] = {}

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def n_targets(self) -> int:
        return self.n_train + self.n_test

    @property
    def sizes(self) -> dict[str, int]:
        """The run's sizes that schema shapes are stated in."""
        return {"n_train": self.n_train, "n_test": self.n_test, "n_targets": self.n_targets}

    def has(self, artifact: Artifact, **fields) -> bool:
        return artifact.path(self.dir, **fields).exists()

    def array(self, artifact: Artifact, **sizes: int) -> np.ndarray:
        """A memory-mapped npy artifact, opened once, checked against its schema entry.

        sizes : values for the entry's free size symbols (M, k, C, D, ...), e.g. run.array(LEAKAGE_QUEUE, k=10).
        """
        if artifact.name not in self._arrays:
            self._arrays[artifact.name] = read_array(self.dir, artifact, dict(self.sizes, **sizes))
        return self._arrays[artifact.name]

    @property
    def masks(self) -> np.ndarray:
        """bool (M, n_train)."""
        return self.array(MASKS)

    @property
    def margins(self) -> np.ndarray:
        """float32 (M, n_train + n_test)."""
        margins = self.array(MARGINS)
        if len(margins) != len(self.masks):
            raise RunError(f"{self.dir}: {MASKS.name} has {len(self.masks)} models but {MARGINS.name} {len(margins)}: "
                           f"rerun `python -m precompute merge --run {self.dir}`")
        return margins

    @property
    def labels(self) -> np.ndarray:
        return self.array(LABELS)

    @property
    def images(self) -> np.ndarray:
        return self.array(IMAGES)
