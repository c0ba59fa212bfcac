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
from backend.attribution import yardsticks
from backend.counterfactuals.predict import actual_margin, predict_removal, retrain
from backend.counterfactuals.removal import default_max_remove, parse_ids, validate_removal
from backend.datamodels import quality
from backend.datamodels.evaluation import predict
from backend.datamodels.queries import fitted_targets, sparsity, weight_profile
from backend.leakage.analysis import load_candidates, review_candidates
from backend.leakage.candidates import centred_unit_rows, float32_unit_rows
from backend.progress import Progress
from backend.ranking import bottom_k, top_k
from backend.store import catalog
from backend.structure import clusters
from backend.store.artifacts import read_json
from backend.store.rows import read_row
from backend.store.errors import RunError
from backend.store.run_dir import Run
from backend.store.schema import (ATTRIBUTION_SCORES, ATTRIBUTION_SELF_SCORES, BIAS, CLUSTERS, CLUSTERS_ALL,
                                  CONTROL_FEATURES, CONTROL_MARGINS, IMAGES, LAM, LEAKAGE_SUMMARY, MAP_LAYOUT,
                                  METHODS_EVAL, NEIGHBORS, SSL_EMBEDDINGS, TARGET_MEAN_MARGIN,
                                  TARGET_PREDICTIONS, WEIGHTS, Artifact)
from backend.store.targets import TargetError, target_column, target_name
from backend.structure.map_layout import inside_polygon
from backend.structure.similar_targets import nearest_to, similar_to
from backend.target_table import TargetTable, target_table
from backend.training import target_stats

_METHOD = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
DATAMODELS = "datamodels"  # the method name of the run's own datamodels (weights.npy), beside stored scores


def _flat_unit_rows(block: np.ndarray) -> np.ndarray:
    return float32_unit_rows(block.reshape(len(block), -1))


# The spaces `similar` searches: the stored matrix (one row per target, in margins-column order), how its rows
# are made unit vectors, and what the similarity is. "datamodels" reads the neighbours `analyze` stored.
SIMILARITY_SPACES = {
    "datamodels": (NEIGHBORS, None, "cosine of datamodel embeddings (weights.npy rows)"),
    "representation": (CONTROL_FEATURES, _flat_unit_rows, "cosine of control model 0's penultimate features"),
    "pixels": (IMAGES, centred_unit_rows, "pixel correlation"),
    "ssl": (SSL_EMBEDDINGS, _flat_unit_rows, "cosine of the ssl-esvm method's SimCLR embeddings"),
}
# What the embeddings map can be coloured by.
MAP_COLOURINGS = ("label", "prediction", "correct", "cluster", "split", "tag")


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

    @property
    def n_models(self) -> int:
        """How many models the run holds (rows of masks.npy and margins.npy)."""
        return len(self.run.masks)

    # Names ------------------------------------------------------------------------------------------------
    def column(self, target: str) -> int:
        """The margins column of a target name (TargetError when malformed or out of range)."""
        return target_column(target, self.run.n_train, self.run.n_test)

    def name(self, column: int) -> str:
        return target_name(int(column), self.run.n_train)

    def train_list(self, text: str) -> list[int]:
        """The training indices of a list such as a basket's URL value ("3,10-14,7"), in order, each once; a bad
        part or an index out of range is a ValueError (RemovalError) naming it."""
        return parse_ids(text, self.run.n_train)

    def train_index(self, image: str) -> int:
        """The training index of a training image's name ("train:7" → 7); a test name is a TargetError."""
        column = self.column(image)
        if column >= self.run.n_train:
            raise TargetError(f"{image} is a test image: a removal set holds training images, e.g. train:7")
        return column

    # Scores -----------------------------------------------------------------------------------------------
    def methods(self) -> list[str]:
        """Methods with scores in the run: "datamodels" (weights.npy) first, then each stored attribution."""
        stored = self.stored_methods()
        own = [DATAMODELS] if self.run.has(WEIGHTS) else []
        return own + [m for m in stored if m not in own]

    def stored_methods(self) -> list[str]:
        """Methods whose scores `attribute` stored (attribution/<method>/), "datamodels" among them only when
        stored that way: the methods the yardsticks of methods-eval judge."""
        return attribution_store.available(self.run)

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

    def top(self, target: str, k: int = 10, method: str = DATAMODELS, side: str = "positive",
            among: np.ndarray | None = None) -> list[str]:
        """The k training images that most raise (side="positive") or most lower ("negative") the target's
        margin by `method`'s scores, strongest first, by backend.ranking's rule: a zero score is never
        returned, so a sparse datamodel may give fewer than k; with `among` (margins columns, e.g. a tag's), only
        the training images among them."""
        if side not in ("positive", "negative"):
            raise ValueError(f"side must be 'positive' or 'negative', got {side!r}")
        scores = self.scores(target, method)
        if among is not None:
            kept = among[among < self.run.n_train]
            only = np.zeros(len(scores), dtype=np.asarray(scores).dtype)
            only[kept] = scores[kept]  # a zero score is never returned
            scores = only
        picked = top_k(scores, k) if side == "positive" else bottom_k(scores, k)
        return [self.name(j) for j in picked]

    def is_fitted(self, target: str) -> bool:
        """Whether the target has a datamodel (`fit --targets` leaves the others with NaN λ and zero weights)."""
        column = self.column(target)
        self._require(LAM, "datamodels")
        return bool(fitted_targets(self.run.array(LAM)[column:column + 1])[0])

    def nonzero_weights(self, target: str) -> int:
        """How many training images the target's datamodel gives a nonzero weight."""
        return sparsity(self.scores(target))

    def weight_profile(self, target: str, max_points: int = 2000) -> tuple[list[str], np.ndarray]:
        """The datamodel's nonzero weights from most positive to most negative, (training image names, weights
        (n,)); past max_points only the max_points // 2 largest and smallest (the middle is flat near zero)."""
        indices, values = weight_profile(self.scores(target), max_points)
        return [self.name(j) for j in indices], values

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

    def similarity_spaces(self) -> list[str]:
        """The spaces `similar` can search in this run (SIMILARITY_SPACES whose matrix is stored)."""
        return [space for space, (artifact, _, _) in SIMILARITY_SPACES.items() if self.run.has(artifact)]

    def similar(self, target: str, k: int | None = 10, by: str = "datamodels",
                among: np.ndarray | None = None) -> list[tuple[str, float]]:
        """The k targets (train and test) most similar to `target` in the space `by` (SIMILARITY_SPACES), most
        similar first, with their similarity; never the target itself. "datamodels" returns the neighbours
        `analyze` stored (exact cosine, at most its --neighbors of them; k=None: all of them); the other spaces
        are searched exactly on each call, one pass over their stored matrix (k=None: every target). With
        `among` (margins columns, e.g. a tag's), only those targets."""
        if among is not None:
            found = self.similar(target, None, by)
            inside = set(np.asarray(among).tolist())
            return [(name, s) for name, s in found if self.column(name) in inside][:k]
        column = self.column(target)
        if by not in SIMILARITY_SPACES:
            raise ValueError(f"by must be one of {', '.join(SIMILARITY_SPACES)}, got {str(by)[:40]!r}")
        artifact, unit_rows, what = SIMILARITY_SPACES[by]
        self._require(artifact, f"{what} to search")
        if unit_rows is None:
            neighbours, similarity = similar_to(self.run, column)
            keep = neighbours >= 0
            neighbours, similarity = neighbours[keep][:k], similarity[keep][:k]
        else:
            matrix = self.run.images if artifact is IMAGES else self.run.array(artifact)
            neighbours, similarity = nearest_to(matrix, column, len(matrix) if k is None else k, unit_rows)
        return [(self.name(c), float(s)) for c, s in zip(neighbours, similarity)]

    def map_layout(self) -> np.ndarray:
        """float32 (n_targets, 2), memory-mapped: every target's point on the embeddings map, row = margins column
        (a 2-D t-SNE of its datamodel PCA coordinates, written by `analyze`: backend.structure.map_layout)."""
        self._require(MAP_LAYOUT, "embeddings map")
        return self.run.array(MAP_LAYOUT)

    def map_lasso(self, polygon: np.ndarray) -> np.ndarray:
        """int64 margins columns, ascending, of the targets whose map point lies inside `polygon` (m, 2), in the
        map's coordinates: a lasso drawn on the embeddings map."""
        return np.flatnonzero(inside_polygon(self.map_layout(), polygon))

    def map_colourings(self) -> list[str]:
        """What the map can be coloured by in this run (MAP_COLOURINGS whose artifact is stored)."""
        predictions = target_stats.stored_prediction_counts(self.run) is not None
        stored = {"prediction": predictions, "correct": predictions, "cluster": self.run.has(CLUSTERS_ALL)}
        return [by for by in MAP_COLOURINGS if stored.get(by, True)]

    def map_colours(self, by: str, tagged: np.ndarray | None = None) -> tuple[np.ndarray, list[str]]:
        """Every target's category when the map is coloured `by` (MAP_COLOURINGS): (codes int64 (n_targets,),
        names list[str]), codes[c] indexing names. "prediction" is the class most of the run's models predict,
        "correct" whether that is the label (Quality's Mistakes), "cluster" the whole test set's spectral cluster
        (training targets are not clustered: their own category), "tag" whether a target is among `tagged` (margins
        columns: a tag's, which the annotation database holds)."""
        run, names = self.run, self.run.class_names
        if by == "tag":
            return np.isin(np.arange(run.n_targets), tagged).astype(np.int64), ["other", "tagged"]
        labels = np.asarray(run.labels, dtype=np.int64)
        if by == "label":
            return labels, list(names)
        if by == "split":
            return (np.arange(run.n_targets) >= run.n_train).astype(np.int64), ["train", "test"]
        if by in ("prediction", "correct"):
            counts = target_stats.stored_prediction_counts(run)
            if counts is None:
                raise MissingArtifact(f"run {run.name} has no prediction counts of its current models "
                                      f"({TARGET_PREDICTIONS.path(run.dir)}): `{TARGET_PREDICTIONS.command(run.dir)}`")
            predicted = target_stats.majority_prediction(np.asarray(counts))[0]
            if by == "prediction":
                return predicted.astype(np.int64), [f"predicted {n}" for n in names]
            return (predicted == labels).astype(np.int64), ["mistaken (the majority of models)", "right"]
        if by == "cluster":
            self._require(CLUSTERS, "clusters")
            found = np.asarray(run.array(CLUSTERS_ALL), dtype=np.int64)
            k = int(found.max()) + 1 if len(found) else 0
            codes = np.concatenate([np.full(run.n_train, k, dtype=np.int64), found])
            return codes, [f"cluster {c}" for c in range(k)] + ["train (not clustered)"]
        raise ValueError(f"by must be one of {', '.join(MAP_COLOURINGS)}, got {str(by)[:40]!r}")

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
        fitted = self.is_fitted(target)
        out["lam"] = float(lam[column]) if fitted else None
        out["bias"] = float(self.run.array(BIAS)[column]) if fitted else None
        out["nonzero_weights"] = self.nonzero_weights(target) if fitted else None
        return out

    def table(self) -> TargetTable:
        """Every target's stored fields as columns (label, majority prediction, correct, mean margin, LDS,
        self-scores, leak score, cluster; backend.target_table), each an array of shape (n_targets,)."""
        return target_table(self.run)

    def removal_cap(self) -> int:
        """The most training images one removal may take out (1280, or half the training set if smaller)."""
        return default_max_remove(self.run.n_train)

    # Spectral clusters of datamodel embeddings: what the Clusters page shows --------------------------------
    def cluster_quality(self) -> dict:
        """clusters.json: each class's and the whole test set's k, silhouette, NMI and γ (analyze's structure half)."""
        return clusters.load_quality(self.run)

    def clustering(self, label: int | None = None) -> tuple[list[str], clusters.Clustering]:
        """The spectral clustering of the test targets of class `label` (an index of the run's class names), or of
        the whole test set (None): (the targets' names, in the order of the Clustering's arrays; the Clustering)."""
        if label is None:
            members, clustering = np.arange(self.run.n_test), clusters.whole_clustering(self.run)
        else:
            members, clustering = clusters.class_clustering(self.run, label)
        return [self.name(self.run.n_train + int(j)) for j in members], clustering

    def typical(self, targets: list[str], clustering: clusters.Clustering, cluster: int, n: int,
                among: np.ndarray | None = None) -> list[str]:
        """The n members of `cluster` with the highest silhouette, most typical first (an undefined one counts 0);
        with `among` (margins columns, e.g. a tag's), only the members among them."""
        inside = np.flatnonzero(clustering.labels == cluster)
        if among is not None:
            inside = inside[np.isin([self.column(targets[j]) for j in inside], among)]
        return [targets[j] for j in inside[top_k(np.nan_to_num(clustering.silhouette[inside]), n, signed=False)]]

    # The eval stage: what the Overview and Quality pages show ------------------------------------------------
    def metrics(self) -> dict | None:
        """metrics.json (the eval stage's summary: LDS, MSE, Table 5, sample complexity), or None before eval."""
        return quality.read_metrics(self.run)

    def lds(self) -> np.ndarray | None:
        """Per-target LDS on the held-out models, float32 (n_targets,) in margins-column order (train:0 … then
        test:0 …; NaN where undefined), or None before the eval stage."""
        return quality.stored_lds(self.run)

    def lds_is_stale(self) -> bool:
        """Whether the datamodels were refitted after the eval stage scored them."""
        return quality.is_stale(self.run)

    def eval_command(self) -> str:
        """The command that writes metrics.json and lds.npy."""
        return quality.eval_command(self.run)

    def heldout_command(self, n_models: int = 300) -> str:
        """The command that trains the held-out run eval scores on: this run's recipe, the next seed."""
        return quality.heldout_command(self.run, n_models)

    def heldout(self) -> "RunAPI | None":
        """The held-out run the metrics were measured on (or heldout/ before eval), None when it is gone; a
        RunError when metrics.json names one outside the data directory."""
        path = quality.heldout_dir(self.run, self.metrics(), catalog.data_dir())
        return None if path is None else RunAPI(Run(path))

    def heldout_predictions(self, heldout: "RunAPI", targets: list[str], models: np.ndarray
                            ) -> tuple[np.ndarray, np.ndarray]:
        """(predicted, actual) margins, float64 (len(models), len(targets)): what the datamodels predict from
        each held-out model's mask (Ilyas et al. eq. 2, w·1_S + b) beside the margin that model reached."""
        columns = np.array([self.column(t) for t in targets], dtype=np.int64)
        self._require(WEIGHTS, "datamodels")
        predicted = predict(self.run.array(WEIGHTS), self.run.array(BIAS), heldout.run.masks[models], columns)
        return predicted, np.asarray(heldout.run.margins[np.ix_(models, columns)], dtype=np.float64)

    @staticmethod
    def sample_complexity(metrics: dict, split: str = "test") -> dict:
        """metrics.json's sample-complexity curve as arrays (backend.datamodels.quality.complexity_curve)."""
        return quality.complexity_curve(metrics, split)

    @staticmethod
    def table5(metrics: dict, split: str = "test") -> list[dict]:
        """Table 5 of Ilyas et al. 2022 from metrics.json: one row per estimator (quality.table5_rows)."""
        return quality.table5_rows(metrics, split)

    def targets(self, split: str) -> list[str]:
        """Every target name of a split ("train" or "test"), in order."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        start, stop = (0, self.run.n_train) if split == "train" else (self.run.n_train, self.run.n_targets)
        return [self.name(c) for c in range(start, stop)]

    def lowest(self, values: np.ndarray, split: str, k: int, among: np.ndarray | None = None) -> list[str]:
        """The k targets of `split` with the lowest of `values` (one per target, margins-column order, e.g.
        lds()), lowest first; NaN is skipped; with `among` (margins columns, e.g. a tag's), only those targets."""
        start, stop = (0, self.run.n_train) if split == "train" else (self.run.n_train, self.run.n_targets)
        if among is not None:
            kept = np.full(len(values), np.nan, dtype=np.float64)
            kept[among] = np.asarray(values, dtype=np.float64)[among]
            values = kept
        return [self.name(c) for c in target_stats.lowest_targets(values, start, stop, k)]

    # Attribution methods judged side by side: what the Methods page shows ----------------------------------
    def methods_eval(self) -> dict | None:
        """attribution/methods_eval.json (methods-eval's report), or None before it ran."""
        return read_json(self.run.dir, METHODS_EVAL, missing_ok=True)

    def methods_table(self, report: dict) -> list[dict]:
        """One row per judged method: every yardstick and the cost (None where not measured)."""
        return yardsticks.table_rows(report)

    def lds_curves(self, report: dict | None) -> dict[str, tuple[list, list]]:
        """LDS against models used, {label: (n_models, mean test LDS)}: the datamodels and every method."""
        return yardsticks.lds_curves(self.run, report)

    def missing_method_steps(self, report: dict | None) -> list[str]:
        """The commands that fill in what the methods comparison lacks (unscored methods, an evaluation)."""
        return yardsticks.missing_steps(self.run, report)

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
