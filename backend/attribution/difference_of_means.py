"""`diff-of-means` and `empirical-influence`: the two simple estimators of Table 5 of Ilyas et al. 2022.

Both read the run's α-subset models and train nothing. For test target t and training image i,

    diff-of-means        w_ti = mean(margin_t | i in the subset) − mean(margin_t | i out)
    empirical-influence  w_ti = P(t correct | i in) − P(t correct | i out)   (Feldman & Zhang 2020,
                                                                              correct = 1[margin > 0])

The estimator is the one `eval` scores for Table 5 (backend.datamodels.evaluation.difference_of_means),
so the method's scores are exactly the predictors behind that table. It reads the masks and a block's
margin columns memory-mapped, a chunk of models at a time, each once per block of targets.
"""
from __future__ import annotations

import numpy as np

from backend.attribution.base import register
from backend.datamodels.evaluation import difference_of_means
from backend.store.run_dir import Run


class _MarginalEffects:
    correctness: bool

    def __init__(self, run: Run, device: str = "auto"):
        self.run = run
        self.config = {"estimator": "difference of means of " + ("correctness 1[margin > 0]" if self.correctness
                                                                  else "margins"),
                       "n_models": int(len(run.masks))}
        self.models = {"kind": "alpha-subset", "n_models": int(len(run.masks)), "trained": 0}

    def prepare(self, progress=None) -> None:
        self.masks, self.margins = self.run.masks, self.run.margins

    def score(self, rows: slice) -> np.ndarray:
        n = self.run.n_train
        weights, _ = difference_of_means(self.masks, self.margins, n, np.arange(n + rows.start, n + rows.stop),
                                         correctness=self.correctness)
        return weights.astype(np.float32)


@register("diff-of-means")
class DifferenceOfMeans(_MarginalEffects):
    correctness = False


@register("empirical-influence")
class EmpiricalInfluence(_MarginalEffects):
    correctness = True
