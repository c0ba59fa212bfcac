"""Counterfactuals: what the datamodels predict a removal does, and what retraining without it really does.

Prediction (Ilyas et al. 2022, §4.1.2): a datamodel is linear in the training-set indicator, so taking a
set R out of the full training set S changes target t's margin by about −Σ_{i∈R} w_t,i. The baseline is
the mean margin of the control models, trained on all of S (control.py).

Truth: `retrain` trains N models on S \\ R (or on S with R relabelled) through the run's retrain store
(training/retrain_store.py), so asking again returns the stored models and asking for more trains only
the missing ones.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from backend.progress import Progress
from backend.training import retrain_store
from backend.store.rows import read_row, read_rows
from backend.training.control import control_mean
from backend.training.retrain_store import Counterfactual, make_request, retrain_many
from backend.store.errors import RunError
from backend.store.run_dir import Run
from backend.store.schema import WEIGHTS, WEIGHTS_BY_TRAIN

if TYPE_CHECKING:  # (the engine imports torch; predicting reads arrays only)
    from backend.training.engine import TrainingData


def no_weights(run: Run) -> str:
    """The one line a query on a run without datamodels prints (the CLI's query verbs always have)."""
    return f"{run.dir} has no datamodels ({WEIGHTS.name}): fit them first with `{WEIGHTS.command(run.dir)}`"


def load_weights(run: Run) -> np.ndarray:
    """The run's datamodel weights, memory-mapped, shape (n_train + n_test, n_train)."""
    if not run.has(WEIGHTS):
        raise RunError(no_weights(run))
    return run.array(WEIGHTS)


@dataclass(frozen=True)
class RemovalPrediction:
    """The datamodels' answer to "what if `removed` were not in the training set?".

    target        : margins column of the target asked about
    removed       : sorted int64 training indices
    control_margin, delta, predicted_margin : for the target (predicted = control + delta, delta = −Σ w)
    test_control  : float64 (n_test,) control mean margin of every test target
    test_delta    : float64 (n_test,) predicted change of every test target's margin
    """

    target: int
    removed: np.ndarray
    control_margin: float
    delta: float
    test_control: np.ndarray
    test_delta: np.ndarray
    n_train: int

    @property
    def predicted_margin(self) -> float:
        return self.control_margin + self.delta

    @property
    def flips(self) -> bool:
        """Whether the target's prediction is predicted to change sign (correct <-> wrong)."""
        return (self.control_margin > 0) != (self.predicted_margin > 0)

    @property
    def test_predicted(self) -> np.ndarray:
        return self.test_control + self.test_delta

    @property
    def flipped(self) -> np.ndarray:
        """Margins columns of the test targets predicted to flip, most changed first."""
        flips = np.flatnonzero((self.test_control > 0) != (self.test_predicted > 0))
        return (flips[np.argsort(-np.abs(self.test_delta[flips]), kind="stable")] + self.n_train).astype(np.int64)


def removal_deltas(run: Run, removed: np.ndarray, block: int = 256) -> np.ndarray:
    """Predicted change of every test target's margin when `removed` (sorted int64) leaves the training set.

    Returns float64 (n_test,): −Σ_{i∈removed} w_t,i per test target t. From the fit's transposed test
    weights (weights_test_by_train.npy) that is |removed| row reads. A run fitted before that file existed
    reads the test rows of weights.npy in blocks of `block` rows with plain file reads (a gather of
    columns from the memmap would leave most of its pages mapped: 2 GB of test rows at CIFAR scale);
    every row is read whatever the removal set, so the dashboard caches the result per removal set.
    """
    weights = load_weights(run)
    removed = np.asarray(removed, dtype=np.int64)
    if run.has(WEIGHTS_BY_TRAIN):
        return -read_rows(run.array(WEIGHTS_BY_TRAIN), removed).sum(axis=0, dtype=np.float64)
    return np.concatenate([-read_rows(weights, np.arange(lo, min(lo + block, run.n_targets)))[:, removed].sum(
        axis=1, dtype=np.float64) for lo in range(run.n_train, run.n_targets, block)])


def predict_removal(run: Run, target: int, removed: np.ndarray, control: np.ndarray | None = None,
                    block: int = 256, *, deltas: np.ndarray | None = None) -> RemovalPrediction:
    """Predicted margins after removing training indices `removed` (validated, sorted) from the full set.

    target  : margins column (targets.target_column)
    control : optional mean control margins (n_train + n_test,); read from the run when omitted
    deltas  : optional removal_deltas(run, removed), computed (in blocks of `block` rows) when omitted
    """
    weights = load_weights(run)
    control = control_mean(run) if control is None else np.asarray(control, dtype=np.float64)
    removed = np.asarray(removed, dtype=np.int64)
    test_delta = removal_deltas(run, removed, block) if deltas is None else np.asarray(deltas, dtype=np.float64)
    delta = -float(read_row(weights, target)[removed].astype(np.float64).sum())
    return RemovalPrediction(target=int(target), removed=removed, control_margin=float(control[target]), delta=delta,
                             test_control=control[run.n_train:], test_delta=test_delta, n_train=run.n_train)


def retrain(run: Run, remove: np.ndarray, relabel: np.ndarray | None = None, n_models: int = 8,
            device: str = "auto", progress: Progress | None = None, *, target: int | None = None,
            seed_start: int = 0, data: TrainingData | None = None) -> Counterfactual:
    """Models [seed_start, seed_start + n_models) trained on S \\ remove (or S with remove relabelled to `relabel`).

    Models the run's retrain store already holds for this set are reused; only the missing ones are trained.
    progress counts models to train; `target` is recorded as the target the experiment was made for.
    """
    request = make_request(run, remove, relabel, n_models, seed_start)
    return retrain_many(run, [request], [[] if target is None else [target]], device, progress, data=data)[0]


def actual_margin(cf: Counterfactual, target: int) -> float:
    """Mean margin of a counterfactual's models on one target."""
    return float(np.asarray(cf.margins[:, target], dtype=np.float64).mean())


def verified_removals(run: Run) -> list[dict]:
    """Predicted vs actual change for every (removal experiment, target it was run for) in the log.

    The accumulating record behind the paper's Figure 8, read from the log's .json records alone.
    Relabellings are left out: datamodels predict removals only.
    """
    weights, control = load_weights(run), control_mean(run)
    rows, cache = [], {}
    for meta in retrain_store.summaries(run):
        if meta["mode"] != "remove":
            continue
        for t in meta["targets"]:
            if t not in cache:
                cache[t] = read_row(weights, t)
            row = cache[t]
            rows.append({"key": meta["key"], "target": t, "n_removed": meta["n_changed"], "n_models": meta["n_models"],
                         "predicted_delta": -float(row[meta["remove"]].astype(np.float64).sum()),
                         "actual_delta": meta["target_margins"][str(t)] - float(control[t])})
    return rows
