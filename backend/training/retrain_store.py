"""The run's counterfactual log: every retraining experiment, kept so nothing is recomputed or lost.

One experiment = one request (which training images are removed or relabelled, and the seeds of its
models) and its result, stored under `counterfactuals/` in the run as two files named by the request's
content hash:

  <key>.npz   remove int64 (k,), relabel int64 (k,) (empty when removing), seeds int64 (N,),
              margins float32 (N, n_train + n_test)
  <key>.json  the request (remove, relabel, seeds), summary numbers, `targets` (the targets it was run
              for) and `target_margins` (their mean margin over the models), so the record of all
              experiments is read from the small .json files alone

The .npz appears first and the .json last, both atomically; an experiment without its .json is
unfinished and is simply trained again.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from backend.store import run_dir
from backend.store.run_dir import Run
from backend.store.schema import COUNTERFACTUAL, COUNTERFACTUAL_META


@dataclass(frozen=True)
class Request:
    """Train len(seeds) models on the full training set with `remove` taken away, or relabelled.

    remove  : sorted unique int64 ndarray of training indices
    relabel : None to remove them, or int64 ndarray of the same length: their new labels
    seeds   : one seed per model
    """

    remove: np.ndarray
    relabel: np.ndarray | None
    seeds: tuple[int, ...]

    @property
    def key(self) -> str:
        """Content hash: an identical request always maps to the same stored result."""
        canon = {"remove": [int(i) for i in self.remove], "seeds": [int(s) for s in self.seeds],
                 "relabel": None if self.relabel is None else [int(c) for c in self.relabel]}
        return hashlib.sha256(json.dumps(canon, sort_keys=True).encode()).hexdigest()[:24]


@dataclass
class Counterfactual:
    """A finished experiment. margins : float32 ndarray of shape (n_models, n_train + n_test)."""

    request: Request
    margins: np.ndarray
    meta: dict = field(default_factory=dict)
    cached: bool = False

    @property
    def targets(self) -> list[int]:
        return list(self.meta.get("targets", []))


def _paths(run: Run, key: str) -> tuple[Path, Path]:
    return COUNTERFACTUAL.path(run.dir, key=key), COUNTERFACTUAL_META.path(run.dir, key=key)


def load(run: Run, key: str) -> Counterfactual | None:
    """The stored experiment with this key, or None if it was never finished."""
    npz, meta_path = _paths(run, key)
    if not meta_path.exists():
        return None
    meta = run_dir.read_json(run.dir, COUNTERFACTUAL_META, key=key)
    z = run_dir.read_npz(run.dir, COUNTERFACTUAL, run.sizes, key=key)
    relabel = z["relabel"] if bool(z["is_relabel"]) else None
    request = Request(z["remove"], relabel, tuple(int(s) for s in z["seeds"]))
    margins = z["margins"]
    return Counterfactual(request, margins, meta, cached=True)


def save(run: Run, request: Request, margins: np.ndarray, meta: dict, targets: list[int]) -> Counterfactual:
    """Store a finished experiment (margins (n_models, n_targets)) and return it."""
    npz, meta_path = _paths(run, request.key)
    npz.parent.mkdir(exist_ok=True)
    relabel = request.relabel is not None
    with run_dir.atomic_path(npz) as tmp, open(tmp, "wb") as f:
        np.savez(f, remove=request.remove.astype(np.int64), seeds=np.asarray(request.seeds, dtype=np.int64),
                 relabel=(request.relabel if relabel else np.zeros(0)).astype(np.int64),
                 is_relabel=np.array(relabel), margins=margins.astype(np.float32))
    meta = dict(meta, key=request.key, n_changed=len(request.remove), n_models=len(request.seeds),
                mode="relabel" if relabel else "remove", remove=[int(i) for i in request.remove],
                relabel=None if not relabel else [int(c) for c in request.relabel], seeds=list(request.seeds),
                created=time.strftime("%Y-%m-%dT%H:%M:%S"), targets=[], target_margins={})
    return add_targets(run, Counterfactual(request, margins.astype(np.float32), meta), targets, force=True)


def add_targets(run: Run, found: Counterfactual, targets: list[int], force: bool = False) -> Counterfactual:
    """Record that a stored experiment also answered for `targets` (it holds margins of every target)."""
    new = sorted(set(found.targets) | set(int(t) for t in targets))
    if new != found.targets or force:
        means = {str(t): float(np.asarray(found.margins[:, t], dtype=np.float64).mean()) for t in new}
        found.meta = dict(found.meta, targets=new, target_margins=means)
        run_dir.save_json(_paths(run, found.request.key)[1], found.meta)
    return found


def summaries(run: Run) -> list[dict]:
    """The .json record of every finished experiment, oldest first, without opening any margins."""
    found = [run_dir.read_json(run.dir, COUNTERFACTUAL_META, **COUNTERFACTUAL_META.fields_of(path, run.dir))
             for path in COUNTERFACTUAL_META.glob(run.dir)]
    return sorted(found, key=lambda m: (m.get("created", ""), m["key"]))


def entries(run: Run) -> list[Counterfactual]:
    """Every finished experiment of the run, oldest first."""
    found = [load(run, p.stem) for p in COUNTERFACTUAL_META.glob(run.dir)]
    return sorted((c for c in found if c is not None), key=lambda c: (c.meta.get("created", ""), c.request.key))
