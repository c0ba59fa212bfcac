"""Model shards: models [a, b) as a training worker finishes them, and the completion bitmap they and the
merged arrays make (which models are done, which ranges are missing)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from backend.store.artifacts import read_npz
from backend.store.atomic import atomic_path, confined
from backend.store.manifest import merged_models
from backend.store.schema import SHARD


def shard_ranges(run_dir: Path) -> list[tuple[int, int]]:
    """The [start, end) model ranges of the finished shards, sorted."""
    found = (SHARD.fields_of(path, run_dir) for path in SHARD.glob(run_dir))
    return sorted((int(f["start"]), int(f["end"])) for f in found)


def write_shard(run_dir: Path, start: int, masks: np.ndarray, margins: np.ndarray, predictions: np.ndarray,
                dtype: str = "float32") -> None:
    """Store models [start, start + K) in one atomic file; a kill leaves either all of them or none.

    predictions : int16 (K, n_targets), each model's predicted class per target
    dtype       : the run's margins dtype (float32, or float16 under `train --dtype float16`)
    """
    end = start + len(masks)
    path = SHARD.path(run_dir, start=start, end=end)
    confined(run_dir, path.parent)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, masks=masks, margins=margins.astype(dtype), predictions=predictions.astype(np.int16))


def read_shard(run_dir: Path, start: int, end: int, sizes: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Models [start, end) of a shard; sizes (n_train, n_targets) are checked where given."""
    shard = read_npz(Path(run_dir), SHARD, dict(sizes or {}, n=end - start), start=start, end=end)
    return shard["masks"], shard["margins"]


def read_shard_predictions(run_dir: Path, start: int, end: int) -> np.ndarray | None:
    """A shard's predicted classes, int16 (end - start, n_targets), or None for a shard older than them."""
    return read_npz(Path(run_dir), SHARD, {"n": end - start}, start=start, end=end)["predictions"]


def prefix_pieces(run_dir: Path, n: int, lo: int = 0) -> list[tuple[int, int, slice]]:
    """How the shards fill models [lo, n): (start, end, rows of that shard to take), in model order.

    Overlapping shards (two workers given the same range) hold identical models, so the first one wins.
    """
    pieces, filled = [], lo
    for s, e in shard_ranges(run_dir):
        if e <= filled or s > filled or s >= n:
            continue
        pieces.append((s, e, slice(filled - s, min(e, n) - s)))
        filled = min(e, n)
    return pieces


def done_models(run_dir: Path) -> np.ndarray:
    """Bool array marking every model index the merged arrays or some shard hold (the completion bitmap).

    The merged arrays are the record of models [0, n_models): their shards are deleted once merged.
    """
    ranges = shard_ranges(run_dir)
    merged = merged_models(run_dir)
    done = np.zeros(max([merged] + [e for _, e in ranges]), dtype=bool)
    done[:merged] = True
    for s, e in ranges:
        done[s:e] = True
    return done


def missing_ranges(run_dir: Path, n_models: int, lo: int = 0) -> list[tuple[int, int]]:
    """Maximal [start, end) ranges within [lo, n_models) that neither the merged arrays nor a shard hold yet."""
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
