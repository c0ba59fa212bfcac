"""The one store of retrained models: N models trained on S∖R, or on S with R relabelled, kept by seed index.

A request names *what* is trained (the removed ids R, sorted; their new labels when relabelling; the seed
stream; the training recipe: the run's arch, hparams and seed) and *which* models of its seed stream,
[start, start + n). Its key hashes the first part only, so one entry holds every model of one experiment
by seed index: asking for 16 models after 8 trains models 8..15 only and returns models 0..7 unchanged,
and `support --check` asks for models [n, 2n) without training [0, n) first.

Entries live under `counterfactuals/` in the run as two files named by the key:

  <key>.npz   remove int64 (k,), relabel int64 (k,) (empty when removing), is_relabel bool, stream int64,
              recipe str, indices int64 (M,) seed indices held, seeds int64 (M,),
              margins float32 (M, n_train + n_test), row m from the model of seed index indices[m]
  <key>.json  the request (remove, relabel, stream), the indices held, `targets` (the targets it was asked
              for) and `target_margins` (their mean margin over the held models), so the record of all
              experiments is read from the small .json files alone

Both are rewritten atomically after every trained batch (npz first), so a kill loses at most the batch in
flight. The control models (nothing removed, control stream) are the same kind of request, stored as
control_margins.npy / control_features.npy / control.json (training/control.py).
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from backend.progress import Progress, offset
from backend.store.artifacts import read_json, read_npz, write_json
from backend.store.atomic import atomic_path, current_path, transaction
from backend.store.run_dir import Run
from backend.store.schema import COUNTERFACTUAL, COUNTERFACTUAL_META
from backend.lazy_import import lazy_module
from backend.training.seeds import COUNTERFACTUAL_STREAM, stream_seed

# The engine imports torch: reading the store (every page view) needs neither (backend/lazy_import.py).
engine = lazy_module("backend.training.engine")
retraining = lazy_module("backend.training.retraining")


def recipe(run: Run) -> str:
    """The run's training recipe (arch, hparams, run seed) as canonical JSON: part of every request's key."""
    m = run.manifest
    return json.dumps({"arch": m["arch"], "hparams": m["hparams"], "seed": int(m["seed"])}, sort_keys=True)


@dataclass(frozen=True)
class Request:
    """Models [start, start + n_models) of `stream`, trained on the full training set with `remove` taken
    away, or relabelled.

    remove  : sorted int64 ndarray of training indices
    relabel : None to remove them, or int64 ndarray of the same length: their new labels
    recipe  : recipe(run), the training recipe the models follow
    """

    remove: np.ndarray
    relabel: np.ndarray | None
    stream: int
    recipe: str
    start: int = 0
    n_models: int = 0

    @property
    def key(self) -> str:
        """Content hash of the request without its seeds: every model of one experiment shares one entry."""
        canon = {"remove": [int(i) for i in self.remove], "stream": int(self.stream), "recipe": self.recipe,
                 "relabel": None if self.relabel is None else [int(c) for c in self.relabel]}
        return hashlib.sha256(json.dumps(canon, sort_keys=True).encode()).hexdigest()[:24]

    @property
    def indices(self) -> np.ndarray:
        return np.arange(self.start, self.start + self.n_models, dtype=np.int64)

    @property
    def seeds(self) -> tuple[int, ...]:
        return seeds_of(self, self.indices)


def seeds_of(request: Request, indices: np.ndarray) -> tuple[int, ...]:
    """63-bit seeds of the models of seed index `indices` in the request's stream (seeds.stream_seed)."""
    run_seed = json.loads(request.recipe)["seed"]
    return tuple(stream_seed(run_seed, int(i), request.stream) for i in indices)


def make_request(run: Run, remove: np.ndarray, relabel: np.ndarray | None = None, n_models: int = 8,
                 seed_start: int = 0, stream: int = COUNTERFACTUAL_STREAM) -> Request:
    """A request for models [seed_start, seed_start + n_models) of a seed stream (the counterfactual one by default).

    Every request draws its seeds from one stream, so two sets are compared on equal terms;
    seed_start > 0 gives fresh, independent models (e.g. to re-check a certified support).
    """
    remove = np.asarray(remove, dtype=np.int64)
    order = np.argsort(remove, kind="stable")
    relabel = None if relabel is None else np.asarray(relabel, dtype=np.int64)[order]
    return Request(remove[order], relabel, int(stream), recipe(run), int(seed_start), int(n_models))


@dataclass
class Held:
    """The models an entry holds: indices int64 (M,) sorted seed indices, margins float32 (M, n_targets)."""

    indices: np.ndarray
    margins: np.ndarray
    meta: dict = field(default_factory=dict)


@dataclass
class Counterfactual:
    """Models of one request. margins : float32 ndarray of shape (len(indices), n_train + n_test), row m
    from the model of seed index indices[m]; reused / trained_now count the models found and trained."""

    request: Request
    indices: np.ndarray
    margins: np.ndarray
    meta: dict = field(default_factory=dict)
    reused: int = 0
    trained_now: int = 0

    @property
    def cached(self) -> bool:
        return self.trained_now == 0

    @property
    def seeds(self) -> tuple[int, ...]:
        return seeds_of(self.request, self.indices)

    @property
    def targets(self) -> list[int]:
        return list(self.meta.get("targets", []))


class Storage(Protocol):
    """Where the entries of a kind of request live (the log here, control files in control.py)."""

    wants_features: bool

    def load(self, request: Request) -> Held | None: ...

    def save(self, request: Request, held: Held, targets: set[int], features: np.ndarray | None,
             device: str) -> Held: ...

    def add_targets(self, request: Request, held: Held, targets: set[int]) -> Held: ...


class LogStorage:
    """The counterfactual log: counterfactuals/<key>.npz and .json (module docstring)."""

    wants_features = False

    def __init__(self, run: Run, meta: dict | None = None):
        self.run, self.meta = run, meta or {}

    def load(self, request: Request) -> Held | None:
        found = _read(self.run, request.key)
        return None if found is None else found[1]

    def save(self, request, held, targets, features, device) -> Held:
        with transaction(self.run.dir, "counterfactual"):  # the .npz and its .json appear together
            return self._save(request, held, targets, device)

    def _save(self, request, held, targets, device) -> Held:
        npz, _ = _paths(self.run, request.key)
        npz.parent.mkdir(exist_ok=True)
        relabel = request.relabel is not None
        with atomic_path(npz) as tmp, open(tmp, "wb") as f:
            np.savez(f, remove=request.remove.astype(np.int64), stream=np.int64(request.stream),
                     relabel=(request.relabel if relabel else np.zeros(0)).astype(np.int64),
                     is_relabel=np.array(relabel), recipe=np.array(request.recipe), indices=held.indices,
                     seeds=np.array(seeds_of(request, held.indices), dtype=np.int64),
                     margins=np.asarray(held.margins, dtype=np.float32))
        meta = dict(held.meta, **self.meta, key=request.key, n_changed=len(request.remove), n_models=len(held.indices),
                    mode="relabel" if relabel else "remove", remove=[int(i) for i in request.remove],
                    relabel=None if not relabel else [int(c) for c in request.relabel], stream=request.stream,
                    indices=held.indices.tolist(), seeds=list(seeds_of(request, held.indices)), device=device,
                    created=held.meta.get("created", time.strftime("%Y-%m-%dT%H:%M:%S")))
        return self._write_meta(request, Held(held.indices, held.margins, meta), targets)

    def add_targets(self, request, held, targets) -> Held:
        if set(held.meta.get("targets", [])) >= targets and all(held.meta.get(k) == v for k, v in self.meta.items()):
            return held
        return self._write_meta(request, Held(held.indices, held.margins, dict(held.meta, **self.meta)), targets)

    def _write_meta(self, request: Request, held: Held, targets: set[int]) -> Held:
        new = sorted(set(held.meta.get("targets", [])) | targets)
        means = {str(t): float(np.asarray(held.margins[:, t], dtype=np.float64).mean()) for t in new}
        held.meta = dict(held.meta, targets=new, target_margins=means)
        write_json(self.run.dir, COUNTERFACTUAL_META, held.meta, key=request.key)
        return held


def _paths(run: Run, key: str) -> tuple[Path, Path]:
    return COUNTERFACTUAL.path(run.dir, key=key), COUNTERFACTUAL_META.path(run.dir, key=key)


def _read(run: Run, key: str) -> tuple[Request, Held] | None:
    npz, meta_path = _paths(run, key)
    if not current_path(meta_path).exists():
        return None
    meta = read_json(run.dir, COUNTERFACTUAL_META, key=key)
    z = read_npz(run.dir, COUNTERFACTUAL, run.sizes, key=key)
    relabel = z["relabel"] if bool(z["is_relabel"]) else None
    request = Request(z["remove"], relabel, int(z["stream"]), str(z["recipe"]))
    return request, Held(z["indices"], z["margins"], meta)


def load(run: Run, key: str) -> Counterfactual | None:
    """Every model the entry with this key holds, or None if none was ever finished."""
    found = _read(run, key)
    if found is None:
        return None
    request, held = found
    start = int(held.indices[0]) if len(held.indices) else 0
    return Counterfactual(replace(request, start=start, n_models=len(held.indices)), held.indices, held.margins,
                          held.meta, reused=len(held.indices))


def summaries(run: Run) -> list[dict]:
    """The .json record of every finished experiment, oldest first, without opening any margins."""
    found = [read_json(run.dir, COUNTERFACTUAL_META, **COUNTERFACTUAL_META.fields_of(path, run.dir))
             for path in COUNTERFACTUAL_META.glob(run.dir)]
    return sorted(found, key=lambda m: (m.get("created", ""), m["key"]))



def held_count(run: Run, request: Request, storage: Storage | None = None) -> int:
    """How many of the request's models are stored already (the rest would be trained)."""
    held = (storage or LogStorage(run)).load(request)
    return 0 if held is None else int(np.isin(request.indices, held.indices).sum())


def retrain_many(
    run: Run,
    requests: list[Request],
    targets: list[list[int]] | None = None,
    device: str = "auto",
    progress: Progress | None = None,
    *,
    data: engine.TrainingData | None = None,
    batch_models: int | None = None,
    storage: Storage | None = None,
) -> list[Counterfactual]:
    """The models of every request, training only the seed indices the store does not hold yet.

    One engine call trains models on training sets of one size with one label vector, so removals are
    grouped by size and each relabelling runs alone. Each batch is saved before the next, so a kill loses
    at most the batch in flight. progress counts models to train ("model"); `targets` are recorded per
    request as the targets it was asked for.
    """
    storage = storage or LogStorage(run)
    targets = targets or [[] for _ in requests]
    held: dict[str, Held] = {}
    wanted: dict[str, set[int]] = {}
    missing: dict[str, tuple[Request, list[int]]] = {}
    for request, asked in zip(requests, targets):
        key = request.key
        if key not in held:
            held[key] = storage.load(request) or Held(np.zeros(0, np.int64), np.zeros((0, run.n_targets), np.float32))
            wanted[key] = set()
        wanted[key].update(int(t) for t in asked)
        queued = missing.setdefault(key, (request, []))[1]
        have = set(held[key].indices.tolist()) | set(queued)
        queued.extend(int(i) for i in request.indices if int(i) not in have)
    missing = {k: v for k, v in missing.items() if v[1]}
    trained = {k: set(ix) for k, (_, ix) in missing.items()}
    total = sum(len(ix) for _, ix in missing.values())
    if progress:
        progress(0, total, "model")
    if missing:
        data = data or retraining.training_data(run, device)
        step = batch_models or engine.default_batch_models(run.manifest["arch"], data.train_x.device)
        done = 0
        for group in _groups(list(missing.values())):
            for batch in _batches(group, step):
                n = sum(len(ix) for _, ix in batch)
                want_features = storage.wants_features and batch[0][1][0] == 0
                margins, features = _train_batch(run, data, batch, step, offset(progress, done, total),
                                                 want_features)
                pos = 0
                for request, ix in batch:
                    key = request.key
                    held[key] = storage.save(request, _merge(held[key], ix, margins[pos:pos + len(ix)]), wanted[key],
                                             features if pos == 0 else None, str(data.train_x.device))
                    pos += len(ix)
                done += n
                if progress:
                    progress(done, total, "model")
    for request in {r.key: r for r in requests}.values():
        if request.key not in trained:
            held[request.key] = storage.add_targets(request, held[request.key], wanted[request.key])
    results = []
    for request in requests:
        entry = held[request.key]
        n_new = len(trained.get(request.key, set()) & set(request.indices.tolist()))
        results.append(Counterfactual(request, request.indices, entry.margins[np.searchsorted(entry.indices, request.indices)],
                                      entry.meta, reused=request.n_models - n_new, trained_now=n_new))
    return results


def _merge(held: Held, indices: list[int], margins: np.ndarray) -> Held:
    """The held models plus new ones, sorted by seed index."""
    all_indices = np.concatenate([held.indices, np.asarray(indices, dtype=np.int64)])
    order = np.argsort(all_indices, kind="stable")
    return Held(all_indices[order], np.concatenate([np.asarray(held.margins, dtype=np.float32), margins])[order], held.meta)


def _groups(todo: list[tuple[Request, list[int]]]) -> list[list[tuple[Request, list[int]]]]:
    """Requests that can share engine calls: removals of equal size together, each relabelling alone."""
    groups: dict[object, list] = {}
    for item in todo:
        request = item[0]
        key = ("relabel", request.key) if request.relabel is not None else ("remove", len(request.remove))
        groups.setdefault(key, []).append(item)
    return list(groups.values())


def _batches(group: list[tuple[Request, list[int]]], step: int) -> list[list[tuple[Request, list[int]]]]:
    """Consecutive requests whose models add up to at most `step`; a bigger one is split into batches of `step`."""
    batches, current, size = [], [], 0
    for request, ix in group:
        if len(ix) > step:
            batches += ([current] if current else []) + [[(request, ix[lo:lo + step])] for lo in range(0, len(ix), step)]
            current, size = [], 0
            continue
        if current and size + len(ix) > step:
            batches.append(current)
            current, size = [], 0
        current.append((request, ix))
        size += len(ix)
    return batches + ([current] if current else [])


def _train_batch(run: Run, data: engine.TrainingData, batch: list[tuple[Request, list[int]]], step: int, progress,
                 first_features: bool) -> tuple[np.ndarray, np.ndarray | None]:
    subsets, seeds = [], []
    train_labels = None
    for request, ix in batch:
        if request.relabel is not None:
            keep = np.arange(run.n_train, dtype=np.int64)
            train_labels = np.array(run.labels[:run.n_train], dtype=np.int64)
            train_labels[request.remove] = request.relabel
        else:
            keep = np.setdiff1d(np.arange(run.n_train, dtype=np.int64), request.remove, assume_unique=True)
        subsets.extend([keep] * len(ix))
        seeds.extend(seeds_of(request, np.asarray(ix)))
    return retraining.train_sets(run, data, np.stack(subsets), seeds, train_labels=train_labels, batch_models=step,
                      progress=progress, first_features=first_features)
