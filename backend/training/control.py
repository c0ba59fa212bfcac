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

import numpy as np

from backend.progress import Progress
from backend.store.artifacts import read_array, write_array, write_json
from backend.store.atomic import transaction
from backend.training.retrain_store import Held, Request, make_request, retrain_many
from backend.training.seeds import CONTROL_STREAM, stream_seeds
from backend.store.run_dir import Run
from backend.store.schema import CONTROL_FEATURES, CONTROL_MARGINS, CONTROL_META, Artifact
DEFAULT_N_CONTROL = 64


def control_seeds(run_seed: int, n_control: int) -> list[int]:
    return stream_seeds(run_seed, CONTROL_STREAM, 0, n_control)


class ControlStorage:
    """The retrain store's entry of the control request (nothing removed, CONTROL_STREAM), kept in the
    run's control files: models [0, n_control) in control_margins.npy, the features of model 0 beside them."""

    wants_features = True

    def __init__(self, run: Run):
        self.run = run

    def load(self, request: Request) -> Held | None:
        if not (self.run.has(CONTROL_MARGINS) and self.run.has(CONTROL_FEATURES)):
            return None
        margins = load_control(self.run)
        return Held(np.arange(len(margins), dtype=np.int64), margins)

    def save(self, request: Request, held: Held, targets: set[int], features: np.ndarray | None, device: str) -> Held:
        # One transaction: features, control.json and margins appear together (the margins mark a finished set).
        with transaction(self.run.dir, "control"):
            margins = self._save(held, features, device)
        return Held(held.indices, margins)

    def _save(self, held: Held, features: np.ndarray | None, device: str) -> np.ndarray:
        """Write the set; return the margins as written."""
        run, n_control = self.run, len(held.indices)
        margins = np.asarray(held.margins, dtype=np.float32)
        dim = features.shape[1] if features is not None else load_control_features(run).shape[1]
        if features is not None:
            write_array(run.dir, CONTROL_FEATURES, features)
        write_json(run.dir, CONTROL_META, {
            "n_control": n_control, "seed_stream": CONTROL_STREAM, "seeds": control_seeds(int(run.manifest["seed"]), n_control),
            "arch": run.manifest["arch"], "hparams": run.manifest["hparams"],
            "features_of_model": 0, "features_dim": int(dim),
            "mean_test_accuracy": round(float((margins[:, run.n_train:] > 0).mean()), 4),
            "device": device,
        })
        write_array(run.dir, CONTROL_MARGINS, margins)
        return margins

    def add_targets(self, request: Request, held: Held, targets: set[int]) -> Held:
        return held


def ensure_control(
    run: Run,
    n_control: int = DEFAULT_N_CONTROL,
    device: str = "auto",
    progress: Progress | None = None,
    batch_models: int | None = None,
) -> np.ndarray:
    """The run's control margins, shape (>= n_control, n_train + n_test), trained first if missing or too few.

    The controls are models [0, n) of the control stream trained on the whole training set, a request of
    the retrain store: a run holding fewer is topped up (model i always comes from the same seed, so the
    first ones are kept), batch by batch. progress counts the models to train (0 when all are stored).
    """
    storage = ControlStorage(run)
    held = storage.load(make_request(run, [], stream=CONTROL_STREAM))
    n_control = max(n_control, 0 if held is None else len(held.indices))
    request = make_request(run, [], n_models=n_control, stream=CONTROL_STREAM)
    retrain_many(run, [request], device=device, progress=progress, batch_models=batch_models, storage=storage)
    return load_control(run)


def load_control(run: Run) -> np.ndarray:
    """Control margins, memory-mapped, shape (n_control, n_train + n_test); RunError if not built yet."""
    return _load(run, CONTROL_MARGINS)


def load_control_features(run: Run) -> np.ndarray:
    """Penultimate features of control model 0, memory-mapped, shape (n_train + n_test, D)."""
    return _load(run, CONTROL_FEATURES)


def _load(run: Run, artifact: Artifact) -> np.ndarray:
    # Opened afresh each time (not cached on the Run): a top-up replaces the file under a running app.
    return read_array(run.dir, artifact, run.sizes)


def control_mean(run: Run) -> np.ndarray:
    """Mean control margin of every target, float64 of shape (n_train + n_test,)."""
    return np.asarray(load_control(run), dtype=np.float64).mean(axis=0)
