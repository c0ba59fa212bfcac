"""`datamodels`: the run's fitted weights, read as attribution scores (nothing is trained)."""
from __future__ import annotations

import numpy as np

from backend.attribution.base import register
from backend.store.run_dir import Run, read_json
from backend.store.schema import FIT, WEIGHTS


@register("datamodels")
class Datamodels:
    def __init__(self, run: Run, device: str = "auto"):
        self.run = run
        fit = read_json(run.dir, FIT)
        self.config = {"fit": {key: fit[key] for key in sorted(fit) if key in ("n_lambdas", "eps", "val_frac", "seed", "tol", "max_iter", "patience")}}
        self.models = {"kind": "alpha-subset", "n_models": int(run.manifest["n_models"]), "trained": 0}

    def prepare(self, progress=None) -> None:
        self.weights = self.run.array(WEIGHTS)

    def score(self, rows: slice) -> np.ndarray:
        n = self.run.n_train
        return np.asarray(self.weights[n + rows.start:n + rows.stop], dtype=np.float32)
