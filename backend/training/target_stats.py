"""How each target fares across a run's models: its mean margin and its accuracy.

The dashboard ranks targets by them (the "least stable" targets have the lowest mean margin) and
shows them beside every target; `lowest_targets` ranks targets by any such per-target score. Reading one column of margins.npy strides through the whole file
(M × 60,000 floats at CIFAR scale), so the summary is computed once, in chunks of models, and can be
stored in the run as two small arrays.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from backend.store import run_dir
from backend.store.schema import MARGINS, TARGET_ACCURACY, TARGET_MEAN_MARGIN
CHUNK_BYTES = 64 << 20


def target_stats(margins: np.ndarray, chunk_bytes: int = CHUNK_BYTES) -> tuple[np.ndarray, np.ndarray]:
    """Mean margin and accuracy of every target, reading `margins` a block of models at a time.

    margins : ndarray of shape (n_models, n_targets), float32 (a memmap is fine)
    Returns (mean_margin, accuracy), float32 arrays of shape (n_targets,); accuracy is the fraction of
    models with a positive margin (the correct class wins). Both are NaN for a run with no models.
    """
    n_models, n_targets = margins.shape
    total = np.zeros(n_targets, dtype=np.float64)
    correct = np.zeros(n_targets, dtype=np.int64)
    step = max(1, chunk_bytes // max(1, n_targets * margins.itemsize))
    for lo in range(0, n_models, step):
        block = np.asarray(margins[lo:lo + step])
        total += block.sum(axis=0, dtype=np.float64)
        correct += (block > 0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (total / n_models).astype(np.float32), (correct / n_models).astype(np.float32)


def save_target_stats(run: run_dir.Run) -> None:
    """Write target_mean_margin.npy and target_accuracy.npy into the run (backend.training.train_stage.merge_run
    does, after each merge)."""
    mean_margin, accuracy = target_stats(run.margins)
    run_dir.write_array(Path(run.dir), TARGET_MEAN_MARGIN, mean_margin)
    run_dir.write_array(Path(run.dir), TARGET_ACCURACY, accuracy)


def stored_target_stats(run: run_dir.Run) -> tuple[np.ndarray, np.ndarray] | None:
    """The stored summary, memory-mapped, or None when the run has none or it predates the margins."""
    if not (run.has(TARGET_MEAN_MARGIN) and run.has(TARGET_ACCURACY)):
        return None
    margins_time = MARGINS.path(run.dir).stat().st_mtime_ns if run.has(MARGINS) else 0
    if min(a.path(run.dir).stat().st_mtime_ns for a in (TARGET_MEAN_MARGIN, TARGET_ACCURACY)) < margins_time:
        return None
    return run.array(TARGET_MEAN_MARGIN), run.array(TARGET_ACCURACY)


def lowest_targets(scores: np.ndarray, start: int, stop: int, k: int) -> np.ndarray:
    """The k target columns in [start, stop) with the lowest score, lowest first; NaN scores are skipped.

    scores : ndarray of shape (n_targets,), e.g. mean margins (lowest = least stable) or per-target LDS
    (lowest = worst predicted); [start, stop) is a split's column range, e.g. the test set.
    """
    values = np.asarray(scores[start:stop], dtype=np.float64)
    values = np.where(np.isnan(values), np.inf, values)
    k = min(k, int(np.isfinite(values).sum()))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(values, k - 1)[:k]
    return start + part[np.argsort(values[part], kind="stable")].astype(np.int64)
