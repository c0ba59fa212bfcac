"""Control models: the run's architecture trained on the *full* training set, the baseline of every counterfactual.

Datamodels predict the change a removal makes; the paper measures it against models trained on all of
S (Ilyas et al. 2022, §4.1.2, Figure 8). They are trained once per run and stored:

  control_margins.npy   float32 (n_control, n_train + n_test)  margins of each control model
  control_features.npy  float32 (n_train + n_test, D)          penultimate features of control model 0,
                                                               the representation baseline of [structure]/[leakage]
  control.json          how they were made: count, seed stream, seeds, hparams

Their seeds come from a stream of their own (seeds.CONTROL_STREAM), never a run model's.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from backend.store import run_dir
from backend.training.retraining import train_sets, training_data
from backend.training.seeds import CONTROL_STREAM, stream_seeds
from backend.store.run_dir import Run, RunError

CONTROL_MARGINS = "control_margins.npy"
CONTROL_FEATURES = "control_features.npy"
CONTROL_META = "control.json"
DEFAULT_N_CONTROL = 64


def control_seeds(run_seed: int, n_control: int) -> list[int]:
    return stream_seeds(run_seed, CONTROL_STREAM, 0, n_control)


def ensure_control(
    run: Run,
    n_control: int = DEFAULT_N_CONTROL,
    device: str = "auto",
    progress: Callable[[float], None] | None = None,
    batch_models: int | None = None,
    on_start: Callable[[int], None] | None = None,
) -> np.ndarray:
    """The run's control margins, shape (>= n_control, n_train + n_test), trained first if missing or too few.

    A run holding fewer controls is topped up: model i always comes from the same seed, so the first
    ones are kept. Features (of model 0) are written before the margins, so the margins file, which
    appears last and atomically, marks a finished control set. on_start gets the number of models to
    train (0 when all are stored), progress the models finished.
    """
    have = np.zeros((0, run.n_targets), dtype=np.float32)
    if run.has(CONTROL_MARGINS) and run.has(CONTROL_FEATURES):
        have = load_control(run)
    n_new = max(0, n_control - len(have))
    if on_start:
        on_start(n_new)
    if n_new == 0:
        return have
    data = training_data(run, device)
    seeds = control_seeds(int(run.manifest["seed"]), n_control)
    subsets = np.tile(np.arange(run.n_train, dtype=np.int64), (n_new, 1))
    margins, features = train_sets(run, data, subsets, seeds[len(have):], batch_models=batch_models,
                                   progress=progress, first_features=len(have) == 0)
    if features is not None:
        run_dir.save_npy(run.dir / CONTROL_FEATURES, features)
    all_margins = np.concatenate([np.asarray(have), margins])
    run_dir.save_json(run.dir / CONTROL_META, {
        "n_control": n_control, "seed_stream": CONTROL_STREAM, "seeds": seeds,
        "arch": run.manifest["arch"], "hparams": run.manifest["hparams"],
        "features_of_model": 0, "features_dim": int(load_control_features(run).shape[1]),
        "mean_test_accuracy": round(float((all_margins[:, run.n_train:] > 0).mean()), 4),
        "device": str(data.train_x.device),
    })
    run_dir.save_npy(run.dir / CONTROL_MARGINS, all_margins)
    return load_control(run)


def load_control(run: Run) -> np.ndarray:
    """Control margins, memory-mapped, shape (n_control, n_train + n_test); RunError if not built yet."""
    return _load(run, CONTROL_MARGINS, 1)


def load_control_features(run: Run) -> np.ndarray:
    """Penultimate features of control model 0, memory-mapped, shape (n_train + n_test, D)."""
    return _load(run, CONTROL_FEATURES, 0)


def _load(run: Run, filename: str, targets_axis: int) -> np.ndarray:
    # Opened afresh each time (not cached on the Run): a top-up replaces the file under a running app.
    if not run.has(filename):
        raise RunError(f"{run.dir} has no {filename}: build it with `python -m precompute control --run {run.dir}`")
    array = run_dir.load_npy(run.dir / filename)
    if array.ndim != 2 or array.shape[targets_axis] != run.n_targets:
        raise RunError(f"{run.dir / filename} has shape {array.shape}, not {run.n_targets} targets: delete it and rebuild the controls")
    return array


def control_mean(run: Run) -> np.ndarray:
    """Mean control margin of every target, float64 of shape (n_train + n_test,)."""
    return np.asarray(load_control(run), dtype=np.float64).mean(axis=0)
