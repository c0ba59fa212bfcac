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

    def self_scores(self, block: int = 4096) -> np.ndarray:
        """float64 (n_train,): each training image's effect on its own margin over the run's models,
        mean(y_i | i ∈ S) − mean(y_i | i ∉ S) (0 where a side has no model).

        Not the weight w_ii: eq. 9 fits a training target's datamodel on the models that left it out, where
        x_i is always 0, so w_ii is 0 by construction. The difference of means is the same models' answer to
        the same question (the memorisation score of Feldman & Zhang 2020), read blockwise from masks and margins.
        """
        masks, margins, n = self.run.masks, self.run.margins, self.run.n_train
        n_in, sum_in, total = np.zeros(n), np.zeros(n), np.zeros(n)
        for lo in range(0, len(masks), block):
            x = np.asarray(masks[lo:lo + block], dtype=bool)
            y = np.asarray(margins[lo:lo + block, :n], dtype=np.float64)
            n_in += x.sum(axis=0)
            sum_in += np.where(x, y, 0.0).sum(axis=0)
            total += y.sum(axis=0)
        n_out = len(masks) - n_in
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where((n_in > 0) & (n_out > 0), sum_in / n_in - (total - sum_in) / n_out, 0.0)
