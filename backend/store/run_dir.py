"""The run directory: the one store every stage reads and writes.

Files (all plain .npy/.json; read any of them with np.load(mmap_mode="r") without this code):
  manifest.json  what the run is and how to reproduce it
  masks.npy      bool    (M, n_train)           which training examples model m saw
  margins.npy    float32 (M, n_train + n_test)  correct-class margin of model m on each target
  labels.npy     int64   (n_train + n_test,)    target labels, training targets first
  images.npy     uint8   (n_train + n_test, H, W, C)
  shards/        models [a, b) as they finish; merged into masks.npy/margins.npy

Every file appears by atomic rename, so a run killed at any moment is never half-written.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

MANIFEST = "manifest.json"
MASKS = "masks.npy"
MARGINS = "margins.npy"
LABELS = "labels.npy"
IMAGES = "images.npy"
SHARDS = "shards"
FORMAT_VERSION = 1

_SHARD = re.compile(r"^(\d{9})-(\d{9})\.npz$")


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


def load_npy(path: Path, mmap: bool = True) -> np.ndarray:
    """Open a run array memory-mapped, never unpickling; a broken file is a RunError naming it."""
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise RunError(f"{path} is missing: rerun the stage that writes it") from None
    except (ValueError, OSError) as exc:
        raise RunError(f"{path} is corrupt or truncated ({exc}): delete it and rerun the stage that writes it") from None


def read_manifest(run_dir: Path) -> dict:
    path = Path(run_dir) / MANIFEST
    if not path.exists():
        raise RunError(f"{run_dir} is not a run (no {MANIFEST}): create one with `python -m precompute train --out {run_dir}`")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunError(f"{path} is corrupt ({exc}): restore it or start a new run") from None


# Settings that define which models a run holds; a resume must match them exactly.
IDENTITY_KEYS = ("dataset", "alpha", "seed", "arch", "hparams")


def init_run(run_dir: Path, manifest: dict, labels: np.ndarray, images: np.ndarray) -> dict:
    """Create a run, or reopen an existing one after checking it holds the same kind of models.

    Returns the manifest on disk. An existing non-empty directory that is not a run is refused, so a
    typo in --out never mixes our files into someone else's folder.
    """
    run_dir = Path(run_dir)
    if (run_dir / MANIFEST).exists():
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
    (run_dir / SHARDS).mkdir(exist_ok=True)
    save_npy(run_dir / LABELS, labels.astype(np.int64))
    save_npy(run_dir / IMAGES, images.astype(np.uint8))
    manifest = dict(manifest, format_version=FORMAT_VERSION, n_models=0)
    save_json(run_dir / MANIFEST, manifest)
    return manifest


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def update_manifest(run_dir: Path, **changes) -> dict:
    manifest = dict(read_manifest(run_dir), **changes)
    save_json(Path(run_dir) / MANIFEST, manifest)
    return manifest


def shard_ranges(run_dir: Path) -> list[tuple[int, int]]:
    """The [start, end) model ranges of the finished shards, sorted."""
    shard_dir = Path(run_dir) / SHARDS
    if not shard_dir.exists():
        return []
    found = (_SHARD.match(p.name) for p in shard_dir.iterdir())
    return sorted((int(m.group(1)), int(m.group(2))) for m in found if m)


def write_shard(run_dir: Path, start: int, masks: np.ndarray, margins: np.ndarray) -> None:
    """Store models [start, start + K) in one atomic file; a kill leaves either all of them or none."""
    end = start + len(masks)
    path = Path(run_dir) / SHARDS / f"{start:09d}-{end:09d}.npz"
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, masks=masks, margins=margins.astype(np.float32))


def read_shard(run_dir: Path, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
    path = Path(run_dir) / SHARDS / f"{start:09d}-{end:09d}.npz"
    try:
        with np.load(path, allow_pickle=False) as z:
            return z["masks"], z["margins"]
    except (ValueError, OSError, KeyError) as exc:
        raise RunError(f"shard {path} is corrupt ({exc}): delete it and rerun train to redo those models") from None


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
    pair or the new pair, and CIFAR-scale runs never sit in RAM whole. Overlapping shards (two workers
    given the same range) hold identical models, so the first one wins.
    """
    run_dir = Path(run_dir)
    done = done_models(run_dir)
    n = int(np.argmin(done)) if not done.all() else len(done)
    with atomic_path(run_dir / MASKS) as tmp_masks, atomic_path(run_dir / MARGINS) as tmp_margins:
        masks = np.lib.format.open_memmap(tmp_masks, mode="w+", dtype=bool, shape=(n, n_train))
        margins = np.lib.format.open_memmap(tmp_margins, mode="w+", dtype=np.float32, shape=(n, n_targets))
        filled = 0
        for s, e in shard_ranges(run_dir):
            if e <= filled or s > filled or s >= n:
                continue
            shard_masks, shard_margins = read_shard(run_dir, s, e)
            take = slice(filled - s, min(e, n) - s)
            masks[filled:min(e, n)] = shard_masks[take]
            margins[filled:min(e, n)] = shard_margins[take]
            filled = min(e, n)
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
            raise RunError(f"{self.dir / MANIFEST} lacks a valid dataset entry ({exc!r}): it is not a manifest "
                           f"`python -m precompute train` wrote; restore it or start a new run") from None
        self._arrays: dict[str, np.ndarray] = {}

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def n_targets(self) -> int:
        return self.n_train + self.n_test

    def has(self, filename: str) -> bool:
        return (self.dir / filename).exists()

    def array(self, filename: str, shape: tuple[int | None, ...]) -> np.ndarray:
        """A memory-mapped run array, checked against `shape` (None = any length)."""
        if filename not in self._arrays:
            arr = load_npy(self.dir / filename)
            if arr.ndim != len(shape) or any(want is not None and got != want for got, want in zip(arr.shape, shape)):
                raise RunError(f"{self.dir / filename} has shape {arr.shape}, expected {shape}: it is stale or corrupt, rerun its stage")
            self._arrays[filename] = arr
        return self._arrays[filename]

    @property
    def masks(self) -> np.ndarray:
        """bool (M, n_train)."""
        return self.array(MASKS, (None, self.n_train))

    @property
    def margins(self) -> np.ndarray:
        """float32 (M, n_train + n_test)."""
        margins = self.array(MARGINS, (None, self.n_targets))
        if len(margins) != len(self.masks):
            raise RunError(f"{self.dir}: masks.npy has {len(self.masks)} models but margins.npy {len(margins)}: rerun `python -m precompute merge --run {self.dir}`")
        return margins

    @property
    def labels(self) -> np.ndarray:
        return self.array(LABELS, (self.n_targets,))

    @property
    def images(self) -> np.ndarray:
        return self.array(IMAGES, (self.n_targets, None, None, None))
