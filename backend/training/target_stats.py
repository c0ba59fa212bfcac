"""How each target fares across a run's models: its mean margin, its accuracy and the classes predicted.

The dashboard ranks targets by them and shows them beside every target: the *hardest* targets have
the lowest mean margin (consistently wrong), the *most unstable* an accuracy nearest 50 % (the models
disagree), the *mistakes* a majority prediction other than the label; `lowest_targets` ranks targets
by any such per-target score. Reading one column of margins.npy strides through the whole file
(M × 60,000 floats at CIFAR scale), so the summary is computed once, in chunks of models, and can be
stored in the run as two small arrays.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from backend.store import run_dir
from backend.store.schema import MARGINS, TARGET_ACCURACY, TARGET_MEAN_MARGIN, TARGET_PREDICTIONS
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


def prediction_counts(run_dir_path: Path, n_models: int, n_targets: int, n_classes: int) -> np.ndarray | None:
    """How many of the first n_models models predicted each class for each target, from the shards.

    Returns int32 of shape (n_targets, n_classes), rows summing to n_models, or None when a shard in
    that prefix predates the predictions member.
    """
    counts = np.zeros((n_targets, n_classes), dtype=np.int32)
    for s, e, take in run_dir.prefix_pieces(run_dir_path, n_models):
        predictions = run_dir.read_shard_predictions(run_dir_path, s, e)
        if predictions is None:
            return None
        block = predictions[take]
        for c in range(n_classes):
            counts[:, c] += (block == c).sum(axis=0, dtype=np.int32)
    return counts


def save_prediction_counts(run: run_dir.Run) -> bool:
    """Write target_predictions.npy from the shards behind margins.npy; False (nothing written) when some
    shard lacks predictions (a run trained before they were stored)."""
    counts = prediction_counts(run.dir, len(run.margins), run.n_targets, len(run.class_names))
    if counts is not None:
        run_dir.write_array(Path(run.dir), TARGET_PREDICTIONS, counts)
    return counts is not None


def stored_prediction_counts(run: run_dir.Run) -> np.ndarray | None:
    """int32 (n_targets, n_classes) prediction counts, memory-mapped, or None when the run has none that
    cover its current margins."""
    if not run.has(TARGET_PREDICTIONS):
        return None
    if run.has(MARGINS) and TARGET_PREDICTIONS.path(run.dir).stat().st_mtime_ns < MARGINS.path(run.dir).stat().st_mtime_ns:
        return None
    return run.array(TARGET_PREDICTIONS, n_classes=len(run.class_names))


def majority_prediction(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(class predicted by most models (ties: the lowest class), the share of models predicting it).

    counts : int (n_targets, n_classes). Returns int64 (n_targets,) and float64 (n_targets,) (NaN without models).
    """
    counts = np.asarray(counts)
    majority = counts.argmax(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = counts[np.arange(len(counts)), majority] / counts.sum(axis=1)
    return majority, share


def mistaken_targets(counts: np.ndarray, labels: np.ndarray, start: int, stop: int, k: int) -> np.ndarray:
    """The k target columns in [start, stop) whose majority prediction is not their label, the most
    confidently wrong (largest majority share) first."""
    majority, share = majority_prediction(np.asarray(counts[start:stop]))
    wrong = np.flatnonzero(majority != np.asarray(labels[start:stop]))
    return start + wrong[np.argsort(-share[wrong], kind="stable")][:k].astype(np.int64)


def unstable_targets(accuracy: np.ndarray, start: int, stop: int, k: int) -> np.ndarray:
    """The k target columns in [start, stop) whose accuracy over models is nearest 50 %, nearest first."""
    return lowest_targets(np.abs(np.asarray(accuracy, dtype=np.float64) - 0.5), start, stop, k)


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

    scores : ndarray of shape (n_targets,), e.g. mean margins (lowest = hardest) or per-target LDS
    (lowest = worst predicted); [start, stop) is a split's column range, e.g. the test set.
    """
    values = np.asarray(scores[start:stop], dtype=np.float64)
    values = np.where(np.isnan(values), np.inf, values)
    k = min(k, int(np.isfinite(values).sum()))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(values, k - 1)[:k]
    return start + part[np.argsort(values[part], kind="stable")].astype(np.int64)
