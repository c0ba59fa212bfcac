"""The public API: one object per run whose methods take and return target names ("test:42", "train:7").

    from backend.api import open_run
    run = open_run("data/runs/digits")
    top = run.top("test:42", k=10)                      # ['train:1048', 'train:310', ...]
    run.predict_removal("test:42", top).predicted_margin
    run.leak_candidates("test:42")

This module is the top of `backend/`: it imports the stage packages, and the pages and notebooks import it.
Every method reads what a stage stored; only `verify` trains (through the run's retrain store). A missing
artifact is a `MissingArtifact` (a RunError) whose one-line message names the command that builds it; a bad
name is a TargetError, a refused removal a RemovalError. `BatchedLasso` (the solver over plain arrays) is
imported from here on first use, so opening a run does not import torch.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from backend.attribution import store as attribution_store
from backend.counterfactuals.predict import actual_margin, predict_removal, retrain
from backend.counterfactuals.removal import default_max_remove, validate_removal
from backend.datamodels.queries import fitted_targets
from backend.leakage.analysis import load_candidates, review_candidates
from backend.progress import Progress
from backend.ranking import bottom_k, top_k
from backend.store.rows import read_row
from backend.store.errors import RunError
from backend.store.run_dir import Run
from backend.store.schema import (ATTRIBUTION_SCORES, ATTRIBUTION_SELF_SCORES, BIAS, CONTROL_MARGINS, LAM,
                                  LEAKAGE_SUMMARY, NEIGHBOR_SIMILARITY, NEIGHBORS, TARGET_MEAN_MARGIN, WEIGHTS,
                                  Artifact)
from backend.store.targets import TargetError, target_column, target_name
from backend.target_table import TargetTable, target_table
from backend.training import target_stats

_METHOD = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
DATAMODELS = "datamodels"  # the method name of the run's own datamodels (weights.npy), beside stored scores


class MissingArtifact(RunError):
    """What a method needs is not in the run; the message names the file and the command that builds it."""


@dataclass(frozen=True)
class PredictedRemoval:
    """The datamodels' prediction for one target when `removed` leaves the training set (Ilyas et al. §4.1.2).

    removed : training image names, sorted by index; delta = −Σ_{i∈removed} w_i; predicted = control + delta;
    flipped_test : test targets predicted to change between right and wrong, most changed first.
    """

    target: str
    removed: list[str]
    control_margin: float
    delta: float
    predicted_margin: float
    flips: bool
    flipped_test: list[str]


@dataclass(frozen=True)
class VerifiedRemoval:
    """A prediction beside the truth: `n_models` models retrained without `removed`, their mean margin."""

    prediction: PredictedRemoval
    n_models: int
    actual_margin: float

    @property
    def actual_delta(self) -> float:
        return self.actual_margin - self.prediction.control_margin


@dataclass(frozen=True)
class LeakCandidate:
    """A training image a reviewer sees beside a test image, with its three similarities to it."""

    train: str
    source: str  # "top weight", "bottom weight", "features" or "pixels"
    weight: float
    feature_similarity: float
    pixel_correlation: float


def open_run(path: str | Path) -> "RunAPI":
    """The run at `path` (a run directory); RunError naming the fix when it is not one."""
    return RunAPI(Run(path))


class RunAPI:
    """A run read by target names. `run.run` is the underlying store (backend.store.run_dir.Run)."""

    def __init__(self, run: Run):
        self.run = run

    def __repr__(self) -> str:
        return f"open_run({str(self.run.dir)!r})"

    # Names ------------------------------------------------------------------------------------------------
    def column(self, target: str) -> int:
        """The margins column of a target name (TargetError when malformed or out of range)."""
        return target_column(target, self.run.n_train, self.run.n_test)

    def name(self, column: int) -> str:
        return target_name(int(column), self.run.n_train)

    def train_index(self, image: str) -> int:
        """The training index of a training image's name ("train:7" → 7); a test name is a TargetError."""
        column = self.column(image)
        if column >= self.run.n_train:
            raise TargetError(f"{image} is a test image: a removal set holds training images, e.g. train:7")
        return column

    # Scores -----------------------------------------------------------------------------------------------
    def methods(self) -> list[str]:
        """Methods with scores in the run: "datamodels" (weights.npy) first, then each stored attribution."""
        stored = attribution_store.available(self.run)
        own = [DATAMODELS] if self.run.has(WEIGHTS) else []
        return own + [m for m in stored if m not in own]

    def scores(self, target: str, method: str = DATAMODELS) -> np.ndarray:
        """One score per training image for `target`, float (n_train,): its datamodel's weights for
        "datamodels" (any target), else the method's stored scores (test targets only)."""
        column = self.column(target)
        if method == DATAMODELS:
            self._require(WEIGHTS, "datamodels")
            return np.asarray(read_row(self.run.array(WEIGHTS), column))
        if column < self.run.n_train:
            raise TargetError(f"{method} scores test targets only, and {target} is a training image: "
                              "pick a test target, or use method='datamodels'")
        self._require(ATTRIBUTION_SCORES, f"{method} scores", method=method)
        return np.asarray(read_row(attribution_store.read_scores(self.run, method), column - self.run.n_train))

    def self_scores(self, method: str = DATAMODELS) -> np.ndarray:
        """The method's self-score of every training image, float32 (n_train,): higher = likelier mislabelled."""
        self._require(ATTRIBUTION_SELF_SCORES, f"{method} self-scores", method=method)
        return np.asarray(attribution_store.read_self_scores(self.run, method))

    def top(self, target: str, k: int = 10, method: str = DATAMODELS, side: str = "positive") -> list[str]:
        """The k training images that most raise (side="positive") or most lower ("negative") the target's
        margin by `method`'s scores, strongest first, by backend.ranking's rule: a zero score is never
        returned, so a sparse datamodel may give fewer than k."""
        if side not in ("positive", "negative"):
            raise ValueError(f"side must be 'positive' or 'negative', got {side!r}")
        scores = self.scores(target, method)
        picked = top_k(scores, k) if side == "positive" else bottom_k(scores, k)
        return [self.name(j) for j in picked]

    # Counterfactuals --------------------------------------------------------------------------------------
    def predict_removal(self, target: str, removed: Iterable[str]) -> PredictedRemoval:
        """What the datamodels predict for `target` when the training images `removed` (names) are taken out."""
        column, ids = self.column(target), self._removal(removed)
        self._require(WEIGHTS, "datamodels")
        self._require(CONTROL_MARGINS, "control models")
        found = predict_removal(self.run, column, ids)
        return PredictedRemoval(target=self.name(column), removed=[self.name(i) for i in found.removed],
                                control_margin=found.control_margin, delta=found.delta,
                                predicted_margin=found.predicted_margin, flips=found.flips,
                                flipped_test=[self.name(c) for c in found.flipped])

    def verify(self, target: str, removed: Iterable[str], n_models: int = 8, device: str = "auto",
               progress: Progress | None = None) -> VerifiedRemoval:
        """Retrain `n_models` models without `removed` (stored in the run's retrain store, so asking again
        trains nothing) and set their mean margin on `target` beside the prediction."""
        prediction = self.predict_removal(target, removed)
        column = self.column(target)
        ids = np.array([self.train_index(n) for n in prediction.removed], dtype=np.int64)
        cf = retrain(self.run, ids, n_models=n_models, device=device, progress=progress, target=column)
        return VerifiedRemoval(prediction, n_models, actual_margin(cf, column))

    # Leakage, structure, statistics -----------------------------------------------------------------------
    def leak_candidates(self, target: str, n: int = 5) -> list[LeakCandidate]:
        """The training images a reviewer sees for test target `target`: its top n and bottom n by datamodel
        weight, then up to n nearest by control-model features and n nearest in pixels not already shown."""
        column = self.column(target)
        if column < self.run.n_train:
            raise TargetError(f"leak candidates are for test images, and {target} is a training image: e.g. test:42")
        self._require(LEAKAGE_SUMMARY, "leak candidates")
        found = review_candidates(self.run, load_candidates(self.run), column - self.run.n_train, n)
        return [LeakCandidate(self.name(c.train), c.source, c.weight, c.similarity, c.pixel) for c in found]

    def similar(self, target: str, k: int = 10) -> list[tuple[str, float]]:
        """The k targets whose datamodels are nearest `target`'s (cosine of datamodel embeddings), nearest first."""
        column = self.column(target)
        self._require(NEIGHBORS, "similar targets")
        neighbours = read_row(self.run.array(NEIGHBORS), column)
        similarity = read_row(self.run.array(NEIGHBOR_SIMILARITY), column)
        keep = neighbours >= 0
        return [(self.name(c), float(s)) for c, s in zip(neighbours[keep][:k], similarity[keep][:k])]

    def stats(self, target: str) -> dict:
        """What the run knows about one target: label, mean margin and accuracy over the run's models, the
        majority prediction and its share (None without prediction counts), and its datamodel's bias, λ and
        number of nonzero weights (None when `fit --targets` left it out)."""
        column = self.column(target)
        run = self.run
        out: dict = {"target": self.name(column), "label": run.class_names[int(run.labels[column])]}
        stored = target_stats.stored_target_stats(run)
        if stored is None:
            raise MissingArtifact(f"run {run.name} has no per-target statistics of its models ({TARGET_MEAN_MARGIN.path(run.dir)} "
                                  f"is missing or stale): build them with `{TARGET_MEAN_MARGIN.command(run.dir)}`")
        out["mean_margin"], out["accuracy"] = float(stored[0][column]), float(stored[1][column])
        counts = target_stats.stored_prediction_counts(run)
        if counts is None:
            out["majority"] = out["majority_share"] = None
        else:
            cls, share = target_stats.majority_prediction(np.asarray(counts[column:column + 1]))
            out["majority"], out["majority_share"] = run.class_names[int(cls[0])], float(share[0])
        self._require(LAM, "datamodels")
        lam = self.run.array(LAM)
        fitted = bool(fitted_targets(lam[column:column + 1])[0])
        out["lam"] = float(lam[column]) if fitted else None
        out["bias"] = float(self.run.array(BIAS)[column]) if fitted else None
        out["nonzero_weights"] = int(np.count_nonzero(read_row(self.run.array(WEIGHTS), column))) if fitted else None
        return out

    def table(self) -> TargetTable:
        """Every target's stored fields as columns (label, majority prediction, correct, mean margin, LDS,
        self-scores, leak score, cluster; backend.target_table), each an array of shape (n_targets,)."""
        return target_table(self.run)

    def removal_cap(self) -> int:
        """The most training images one removal may take out (1280, or half the training set if smaller)."""
        return default_max_remove(self.run.n_train)

    # ------------------------------------------------------------------------------------------------------
    def _removal(self, removed: Iterable[str]) -> np.ndarray:
        if isinstance(removed, str):
            raise TypeError("removed is a list of training image names, e.g. ['train:3', 'train:17'] or run.top(...)")
        ids = [self.train_index(n) for n in removed]
        labels = np.asarray(self.run.labels[:self.run.n_train])
        return validate_removal(np.array(ids, dtype=np.int64), labels, self.run.class_names, self.removal_cap())

    def _require(self, artifact: Artifact, what: str, **fields) -> None:
        """MissingArtifact naming the artifact's command when the run lacks it (a method is a name, not a path)."""
        if "method" in fields and not _METHOD.fullmatch(fields["method"]):
            raise ValueError(f"bad method {fields['method'][:40]!r}: a method is a name like trak or ssl-esvm")
        if not self.run.has(artifact, **fields):
            command = artifact.command(self.run.dir).replace("METHOD", fields.get("method", "METHOD"))
            raise MissingArtifact(f"run {self.run.name} has no {what} ({artifact.path(self.run.dir, **fields)} is "
                                  f"missing): build it with `{command}`")


def __getattr__(name: str):
    # BatchedLasso imports torch: loaded on first use, so a page that imports this module does not pay for it.
    if name == "BatchedLasso":
        from backend.datamodels.estimator import BatchedLasso
        return BatchedLasso
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
