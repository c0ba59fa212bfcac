"""Counterfactuals: what the datamodels predict a removal does, and what retraining without it really does.

Prediction (Ilyas et al. 2022, §4.1.2): a datamodel is linear in the training-set indicator, so taking a
set R out of the full training set S changes target t's margin by about −Σ_{i∈R} w_t,i. The baseline is
the mean margin of the control models, trained on all of S (control.py).

Truth: `retrain` trains N models on S \\ R (or on S with R relabelled) and every result joins the run's
counterfactual log, so asking again returns the stored models instead of training new ones.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from backend.training import retrain_store
from backend.store.rows import read_row, read_rows
from backend.training.control import control_mean
from backend.training.retrain_store import Counterfactual, Request
from backend.training.retraining import train_sets, training_data
from backend.training.seeds import COUNTERFACTUAL_STREAM, stream_seeds
from backend.store.run_dir import Run, RunError
from backend.training.engine import TrainingData, default_batch_models

WEIGHTS = "weights.npy"


def load_weights(run: Run) -> np.ndarray:
    """The run's datamodel weights, memory-mapped, shape (n_train + n_test, n_train)."""
    if not run.has(WEIGHTS):
        raise RunError(f"{run.dir} has no datamodels ({WEIGHTS}): fit them first with `python -m precompute fit --run {run.dir}`")
    return run.array(WEIGHTS, (run.n_targets, run.n_train))


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


def predict_removal(run: Run, target: int, removed: np.ndarray, control: np.ndarray | None = None,
                    block: int = 1024) -> RemovalPrediction:
    """Predicted margins after removing training indices `removed` (validated, sorted) from the full set.

    target  : margins column (targets.target_column)
    control : optional mean control margins (n_train + n_test,); read from the run when omitted
    The test rows of weights.npy are read in blocks of `block` rows with plain file reads: a gather of
    columns from the memmap would leave most of its pages mapped (2 GB of test rows at CIFAR scale).
    """
    weights = load_weights(run)
    control = control_mean(run) if control is None else np.asarray(control, dtype=np.float64)
    removed = np.asarray(removed, dtype=np.int64)
    n = run.n_train
    test_delta = np.concatenate([-read_rows(weights, np.arange(lo, min(lo + block, run.n_targets)))[:, removed].sum(
        axis=1, dtype=np.float64) for lo in range(n, run.n_targets, block)])
    delta = -float(read_row(weights, target)[removed].astype(np.float64).sum())
    return RemovalPrediction(target=int(target), removed=removed, control_margin=float(control[target]), delta=delta,
                             test_control=control[n:], test_delta=test_delta, n_train=n)


def make_request(run: Run, remove: np.ndarray, relabel: np.ndarray | None = None, n_models: int = 8,
                 seed_start: int = 0) -> Request:
    """A request for models [seed_start, seed_start + n_models) of the counterfactual seed stream.

    Every request draws its seeds from the same stream, so two sets are compared on equal terms;
    seed_start > 0 gives fresh, independent models (e.g. to re-check a certified support).
    """
    remove = np.asarray(remove, dtype=np.int64)
    order = np.argsort(remove, kind="stable")
    relabel = None if relabel is None else np.asarray(relabel, dtype=np.int64)[order]
    seeds = stream_seeds(int(run.manifest["seed"]), COUNTERFACTUAL_STREAM, seed_start, n_models)
    return Request(remove[order], relabel, tuple(seeds))


def retrain(run: Run, remove: np.ndarray, relabel: np.ndarray | None = None, n_models: int = 8,
            device: str = "auto", progress: Callable[[float], None] | None = None, *, target: int | None = None,
            seed_start: int = 0, data: TrainingData | None = None) -> Counterfactual:
    """Train n_models models on S \\ remove (or S with remove relabelled to `relabel`); return them.

    The result is read from the run's counterfactual log when this exact request was run before.
    progress gets models finished; `target` is recorded as the target the experiment was made for.
    """
    request = make_request(run, remove, relabel, n_models, seed_start)
    return retrain_many(run, [request], [[] if target is None else [target]], device, progress, data=data)[0]


def retrain_many(
    run: Run,
    requests: list[Request],
    targets: list[list[int]] | None = None,
    device: str = "auto",
    progress: Callable[[float], None] | None = None,
    *,
    on_start: Callable[[int], None] | None = None,
    data: TrainingData | None = None,
    batch_models: int | None = None,
) -> list[Counterfactual]:
    """Run many requests, batching their models into as few engine calls as the engine allows.

    One engine call trains models on training sets of one size with one label vector, so removals
    are grouped by size and each relabelling runs alone. Results are saved batch by batch, so an
    interrupted call loses at most the batch in flight. on_start gets the number of models to train.
    """
    targets = targets or [[] for _ in requests]
    results: dict[str, Counterfactual] = {}
    todo: dict[str, tuple[Request, list[int]]] = {}
    for request, wanted in zip(requests, targets):
        found = results.get(request.key) or retrain_store.load(run, request.key)
        if found is not None:
            results[request.key] = retrain_store.add_targets(run, found, wanted)
        elif request.key in todo:
            todo[request.key][1].extend(wanted)
        else:
            todo[request.key] = (request, list(wanted))
    total = sum(len(r.seeds) for r, _ in todo.values())
    if on_start:
        on_start(total)
    if todo:
        data = data or training_data(run, device)
        step = batch_models or default_batch_models(run.manifest["arch"], data.train_x.device)
        done = 0
        for group in _groups(list(todo.values())):
            for batch in _batches(group, step):
                report = (lambda f, base=done: progress(base + f)) if progress else None
                for cf in _train_batch(run, data, batch, report, step):
                    results[cf.request.key] = cf
                done += sum(len(r.seeds) for r, _ in batch)
    return [results[r.key] for r in requests]


def _groups(todo: list[tuple[Request, list[int]]]) -> list[list[tuple[Request, list[int]]]]:
    """Requests that can share engine calls: removals of equal size together, each relabelling alone."""
    groups: dict[object, list] = {}
    for item in todo:
        request = item[0]
        key = ("relabel", request.key) if request.relabel is not None else ("remove", len(request.remove))
        groups.setdefault(key, []).append(item)
    return list(groups.values())


def _batches(group: list, step: int) -> list[list]:
    """Consecutive requests whose models add up to at most `step` (a bigger request is a batch alone)."""
    batches, current, size = [], [], 0
    for item in group:
        n = len(item[0].seeds)
        if current and size + n > step:
            batches.append(current)
            current, size = [], 0
        current.append(item)
        size += n
    return batches + ([current] if current else [])


def _train_batch(run: Run, data: TrainingData, batch: list, progress, step: int) -> list[Counterfactual]:
    subsets, seeds, owners = [], [], []
    train_labels = None
    for request, _ in batch:
        if request.relabel is not None:
            keep = np.arange(run.n_train, dtype=np.int64)
            train_labels = np.array(run.labels[:run.n_train], dtype=np.int64)
            train_labels[request.remove] = request.relabel
        else:
            keep = np.setdiff1d(np.arange(run.n_train, dtype=np.int64), request.remove, assume_unique=True)
        subsets.extend([keep] * len(request.seeds))
        seeds.extend(request.seeds)
        owners.extend([request.key] * len(request.seeds))
    margins, _ = train_sets(run, data, np.stack(subsets), seeds, train_labels=train_labels, batch_models=step,
                            progress=progress)
    owners = np.array(owners)
    return [retrain_store.save(run, request, margins[owners == request.key], {"device": str(data.train_x.device)}, wanted)
            for request, wanted in batch]


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
