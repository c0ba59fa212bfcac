"""`datamodels`: the run's fitted weights, read as attribution scores (nothing is trained)."""
from __future__ import annotations

import numpy as np

from backend.attribution.base import register
from backend.attribution.difference_of_means import memorisation
from backend.store.artifacts import read_json
from backend.store.run_dir import Run
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

    def self_scores(self) -> np.ndarray:
        """float64 (n_train,): each training image's effect on its own margin over the run's models,
        mean(y_i | i ∈ S) − mean(y_i | i ∉ S), the margin memorisation score (difference_of_means.memorisation).

        Not the weight w_ii: eq. 9 fits a training target's datamodel on the models that left it out, where
        x_i is always 0, so w_ii is 0 by construction. The difference of means is the same models' answer to
        the same question (the memorisation score of Feldman & Zhang 2020), read blockwise from masks and margins.
        """
        return memorisation(self.run.masks, self.run.margins, self.run.n_train)
