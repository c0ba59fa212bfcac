"""`diff-of-means` and `empirical-influence`: the two simple estimators of Table 5 of Ilyas et al. 2022.

Both read the run's α-subset models and train nothing. For test target t and training image i,

    diff-of-means        w_ti = mean(margin_t | i in the subset) − mean(margin_t | i out)
    empirical-influence  w_ti = P(t correct | i in) − P(t correct | i out)   (Feldman & Zhang 2020,
                                                                              correct = 1[margin > 0])

Their self-score is the same estimator on each training image's own outcome, with every model:

    memorisation_i = mean(y_i | i in) − mean(y_i | i out)      (y the margin, or 1[margin > 0])

Feldman & Zhang 2020's memorisation score (their estimator with correctness): a mislabelled image is
fitted to its wrong label only by the models that saw it, so it scores high. It is not the pair
estimator's diagonal, which excludes the models trained on a training target itself (eq. 9) and is 0.

The estimator is the one `eval` scores for Table 5 (backend.datamodels.evaluation.difference_of_means),
so the method's scores are exactly the predictors behind that table. It reads the masks and a block's
margin columns memory-mapped, a chunk of models at a time, each once per block of targets.
"""
from __future__ import annotations

import numpy as np

from backend.attribution.base import register
from backend.datamodels.evaluation import difference_of_means
from backend.store.run_dir import Run


def memorisation(masks: np.ndarray, margins: np.ndarray, n_train: int, *, correctness: bool = False,
                 block: int = 4096) -> np.ndarray:
    """float64 (n_train,): mean(y_i | i in) − mean(y_i | i out) over all M models (0 where a side has none).

    masks : (M, n_train) bool; margins : (M, ≥ n_train), training columns first; y = margins[:, i], or with
    `correctness` 1[margin > 0]. Read `block` models at a time, memory-mapped arrays stay on disk.
    """
    n_in, sum_in, total = np.zeros(n_train), np.zeros(n_train), np.zeros(n_train)
    for lo in range(0, len(masks), block):
        x = np.asarray(masks[lo:lo + block], dtype=bool)
        y = np.asarray(margins[lo:lo + block, :n_train], dtype=np.float64)
        y = (y > 0).astype(np.float64) if correctness else y
        n_in += x.sum(axis=0)
        sum_in += np.where(x, y, 0.0).sum(axis=0)
        total += y.sum(axis=0)
    n_out = len(masks) - n_in
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_in > 0) & (n_out > 0), sum_in / n_in - (total - sum_in) / n_out, 0.0)


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

    def self_scores(self) -> np.ndarray:
        """float64 (n_train,): the memorisation score of the method's own outcome (margin or correctness)."""
        return memorisation(self.masks, self.margins, self.run.n_train, correctness=self.correctness)


@register("diff-of-means")
class DifferenceOfMeans(_MarginalEffects):
    correctness = False


@register("empirical-influence")
class EmpiricalInfluence(_MarginalEffects):
    correctness = True
