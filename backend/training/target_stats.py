"""How each target fares across a run's models: its mean margin, its accuracy and the classes predicted.

The dashboard ranks targets by them and shows them beside every target: the *hardest* targets have
the lowest mean margin (consistently wrong), the *most unstable* an accuracy nearest 50 % (the models
disagree), the *mistakes* a majority prediction other than the label; `lowest_targets` ranks targets
by any such per-target score. Reading one column of margins.npy strides through the whole file
(M × 60,000 floats at CIFAR scale), so the summary is kept as running sums (target_sums.npz, and the
prediction counts, which are sums themselves) that each merge adds its new models' rows to
(`TargetSummary`): a top-up never rereads the margins already merged.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from backend.ranking import bottom_k, top_k
from backend.store.artifacts import read_array, read_npz, write_array, write_npz
from backend.store.atomic import current_path
from backend.store.run_dir import Run
from backend.store.shards import prefix_pieces, read_shard_predictions
from backend.store.schema import MARGINS, TARGET_ACCURACY, TARGET_MEAN_MARGIN, TARGET_PREDICTIONS, TARGET_SUMS

CHUNK_BYTES = 64 << 20


def _margin_sums(margins: np.ndarray, chunk_bytes: int = CHUNK_BYTES) -> tuple[np.ndarray, np.ndarray]:
    """(float64 sum of margins, int64 count of positive margins) per target, a block of models at a time."""
    n_models, n_targets = margins.shape
    total = np.zeros(n_targets, dtype=np.float64)
    positive = np.zeros(n_targets, dtype=np.int64)
    step = max(1, chunk_bytes // max(1, n_targets * margins.itemsize))
    for lo in range(0, n_models, step):
        block = np.asarray(margins[lo:lo + step])
        total += block.sum(axis=0, dtype=np.float64)
        positive += (block > 0).sum(axis=0)
    return total, positive


def _summary(total: np.ndarray, positive: np.ndarray, n_models: int) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(invalid="ignore", divide="ignore"):
        return (total / n_models).astype(np.float32), (positive / n_models).astype(np.float32)


def target_stats(margins: np.ndarray, chunk_bytes: int = CHUNK_BYTES) -> tuple[np.ndarray, np.ndarray]:
    """Mean margin and accuracy of every target, reading `margins` a block of models at a time.

    margins : ndarray of shape (n_models, n_targets), float32 or float16 (a memmap is fine)
    Returns (mean_margin, accuracy), float32 arrays of shape (n_targets,); accuracy is the fraction of
    models with a positive margin (the correct class wins). Both are NaN for a run with no models.
    """
    return _summary(*_margin_sums(margins, chunk_bytes), len(margins))


def _class_counts(predictions: np.ndarray, n_classes: int) -> np.ndarray:
    """int32 (n_targets, n_classes): how many rows of `predictions` (int, (K, n_targets)) name each class."""
    counts = np.zeros((predictions.shape[1], n_classes), dtype=np.int32)
    for c in range(n_classes):
        counts[:, c] = (predictions == c).sum(axis=0, dtype=np.int32)
    return counts


class TargetSummary:
    """The per-target sums over models [0, n_models), grown by each merge's new rows only.

    `add(start, margins, predictions)` takes the block of models starting at `start` (in model order);
    `save(n)` writes target_sums.npz, the mean margin, the accuracy and the prediction counts for the n
    models merged. A run whose stored sums do not cover the merged models they continue from (made before
    the sums were stored) has them recomputed once, from margins.npy and the shards.
    """

    def __init__(self, run_dir_path: Path, n_targets: int, n_classes: int):
        self.dir, self.n_targets, self.n_classes = Path(run_dir_path), n_targets, n_classes
        self.total = np.zeros(n_targets, dtype=np.float64)
        self.positive = np.zeros(n_targets, dtype=np.int64)
        self.counts: np.ndarray | None = np.zeros((n_targets, n_classes), dtype=np.int32)
        self.n_models = 0
        if current_path(TARGET_SUMS.path(self.dir)).exists():
            sums = read_npz(self.dir, TARGET_SUMS, {"n_targets": n_targets})
            self.total, self.positive, self.n_models = sums["margin_sum"], sums["positive"], int(sums["n_models"])
            counts = self._stored_counts()
            self.counts = counts if counts is not None and int(counts[0].sum()) == self.n_models else None

    def _stored_counts(self) -> np.ndarray | None:
        if not current_path(TARGET_PREDICTIONS.path(self.dir)).exists() or not self.n_targets:
            return None
        return np.array(read_array(self.dir, TARGET_PREDICTIONS, {"n_targets": self.n_targets,
                                                                   "n_classes": self.n_classes}))

    def _catch_up(self, start: int) -> None:
        """Sum models [0, start) afresh from the merged margins (and the shards' predictions, if all remain)."""
        if self.n_models == start:
            return
        margins = read_array(self.dir, MARGINS, {"n_targets": self.n_targets})[:start]
        self.total, self.positive = _margin_sums(margins)
        self.counts = prediction_counts(self.dir, start, self.n_targets, self.n_classes)
        self.n_models = start

    def add(self, start: int, margins: np.ndarray, predictions: np.ndarray | None) -> None:
        """margins : (K, n_targets) of models [start, start + K); predictions : int (K, n_targets) or None."""
        self._catch_up(start)
        total, positive = _margin_sums(margins)
        self.total += total
        self.positive += positive
        if self.counts is not None and predictions is not None:
            self.counts += _class_counts(predictions, self.n_classes)
        else:
            self.counts = None
        self.n_models += len(margins)

    def save(self, n_models: int) -> None:
        self._catch_up(n_models)
        write_npz(self.dir, TARGET_SUMS, margin_sum=self.total, positive=self.positive,
                  n_models=np.int64(self.n_models))
        mean_margin, accuracy = _summary(self.total, self.positive, self.n_models)
        write_array(self.dir, TARGET_MEAN_MARGIN, mean_margin)
        write_array(self.dir, TARGET_ACCURACY, accuracy)
        if self.counts is not None:
            write_array(self.dir, TARGET_PREDICTIONS, self.counts)


def save_target_stats(run: Run) -> None:
    """Write target_sums.npz, target_mean_margin.npy and target_accuracy.npy from all of the run's margins
    (a merge keeps them current incrementally: TargetSummary)."""
    total, positive = _margin_sums(run.margins)
    n = len(run.margins)
    write_npz(Path(run.dir), TARGET_SUMS, margin_sum=total, positive=positive, n_models=np.int64(n))
    mean_margin, accuracy = _summary(total, positive, n)
    write_array(Path(run.dir), TARGET_MEAN_MARGIN, mean_margin)
    write_array(Path(run.dir), TARGET_ACCURACY, accuracy)


def prediction_counts(run_dir_path: Path, n_models: int, n_targets: int, n_classes: int) -> np.ndarray | None:
    """How many of the first n_models models predicted each class for each target, from the shards.

    Returns int32 of shape (n_targets, n_classes), rows summing to n_models, or None when a shard in
    that prefix predates the predictions member or is gone (deleted after its merge).
    """
    counts = np.zeros((n_targets, n_classes), dtype=np.int32)
    pieces = prefix_pieces(run_dir_path, n_models)
    if sum(take.stop - take.start for _, _, take in pieces) != n_models:
        return None
    for s, e, take in pieces:
        predictions = read_shard_predictions(run_dir_path, s, e)
        if predictions is None:
            return None
        counts += _class_counts(predictions[take], n_classes)
    return counts


def stored_prediction_counts(run: Run) -> np.ndarray | None:
    """int32 (n_targets, n_classes) prediction counts, memory-mapped, or None when the run has none that
    cover its current margins (each row sums to the number of models counted)."""
    if not run.has(TARGET_PREDICTIONS):
        return None
    counts = run.array(TARGET_PREDICTIONS, n_classes=len(run.class_names))
    if not run.has(MARGINS) or (len(counts) and int(counts[0].sum()) != len(run.margins)):
        return None
    return counts


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
    return start + wrong[top_k(share[wrong], k, signed=False)]


def unstable_targets(accuracy: np.ndarray, start: int, stop: int, k: int) -> np.ndarray:
    """The k target columns in [start, stop) whose accuracy over models is nearest 50 %, nearest first."""
    return lowest_targets(np.abs(np.asarray(accuracy, dtype=np.float64) - 0.5), start, stop, k)


def stored_target_stats(run: Run) -> tuple[np.ndarray, np.ndarray] | None:
    """The stored summary, memory-mapped, or None when the run has none or its sums count other models
    than margins.npy holds."""
    if not (run.has(TARGET_MEAN_MARGIN) and run.has(TARGET_ACCURACY) and run.has(TARGET_SUMS)):
        return None
    counted = int(read_npz(run.dir, TARGET_SUMS, run.sizes)["n_models"])
    if not run.has(MARGINS) or counted != len(run.margins):
        return None
    return run.array(TARGET_MEAN_MARGIN), run.array(TARGET_ACCURACY)


def lowest_targets(scores: np.ndarray, start: int, stop: int, k: int) -> np.ndarray:
    """The k target columns in [start, stop) with the lowest score, lowest first; NaN scores are skipped.

    scores : ndarray of shape (n_targets,), e.g. mean margins (lowest = hardest) or per-target LDS
    (lowest = worst predicted); [start, stop) is a split's column range, e.g. the test set.
    """
    return start + bottom_k(np.asarray(scores[start:stop], dtype=np.float64), k, signed=False)
