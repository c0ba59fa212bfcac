"""The public API: one object per run whose methods take and return target names ("test:42", "train:7").

    from backend.api import open_run
    run = open_run("data/runs/digits")
    top = run.top("test:42", k=10)                      # ['train:1048', 'train:310', ...]
    run.predict_removal("test:42", top).predicted_margin
    run.leak_candidates("test:42")

This module is the top of `backend/`: it imports the stage packages, and the pages, the CLI's query verbs and
notebooks import it. Every method reads what a stage stored, except the few that train (`verify`, `faithfulness`,
`certify_support(s)`, `train_control`: through the run's retrain store, so asking again trains nothing),
`write_support_summary`, and `annotations()`, which reads and writes leak reviews in the shared annotation database. A missing artifact is a `MissingArtifact` (a
RunError) whose one-line message names the command that builds it; a bad name is a TargetError, a refused
removal a RemovalError. `BatchedLasso` (the solver over plain arrays) and `AnnotationStoreError` are imported
from here on first use, so opening a run imports neither torch nor SQLAlchemy.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterable, NamedTuple

import numpy as np

from backend.attribution import store as attribution_store
from backend.attribution import yardsticks
from backend.counterfactuals import support
from backend.counterfactuals.evaluation import correlations
from backend.counterfactuals.predict import (actual_margin, no_weights, predict_removal, removal_deltas, retrain,
                                             verified_removals)
# RemovalError is re-exported: check_removal, predict_removal and verify raise it.
from backend.counterfactuals.removal import (HEURISTICS, RemovalError, competitor_class, default_max_remove, format_ids,
                                             parse_ids, removal_set, validate_removal)
from backend.datamodels import quality
from backend.datamodels.evaluation import predict
from backend.datamodels.queries import fitted_targets, sparsity, weight_profile
from backend.leakage.agreement import category_counts, fleiss_kappa, pairwise_cohen_kappa
from backend.leakage.analysis import load_candidates, review_candidates
from backend.leakage.scores import PairScores, image_scores, rating_matrix
from backend.leakage.candidates import centred_unit_rows, float32_unit_rows
from backend.lazy_import import lazy_module
from backend.progress import Progress
from backend.ranking import bottom_k, top_k
from backend.access.names import AnnotatorNameError, validate_name  # (the error re-exported: Annotations.sign_in raises it)
from backend.store import catalog
from backend.structure import clusters, embeddings, faithfulness
from backend.store.artifacts import read_json
from backend.store.rows import read_row
from backend.store.errors import RunError
from backend.store.run_dir import Run
from backend.store.schema import (ATTRIBUTION_SCORES, ATTRIBUTION_SELF_SCORES, BIAS, CLUSTERS, CLUSTERS_ALL,
                                  CONTROL_FEATURES, CONTROL_MARGINS, CONTROL_META, COUNTERFACTUAL_META, IMAGES, LAM,
                                  LEAKAGE_SUMMARY, MAP_LAYOUT,
                                  METHODS_EVAL, NEIGHBORS, SSL_EMBEDDINGS, TARGET_MEAN_MARGIN,
                                  TARGET_PREDICTIONS, WEIGHTS, Artifact)
from backend.store.targets import (TargetError, describe_targets, parse_targets, split_name, split_position, target_column,
                                   target_name)
from backend.structure.map_layout import inside_polygon
from backend.structure.similar_targets import nearest_to, similar_to
from backend.target_table import TargetTable, target_table
from backend.training import target_stats
from backend.training.control import (DEFAULT_N_CONTROL, control_mean, ensure_control, load_control,
                                      load_control_features)

annotation_db = lazy_module("backend.leakage.annotations")  # SQLAlchemy: loaded by the review pages alone

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
# Control models (trained on the whole training set) a run is given when it has none.
CONTROL_MODELS = DEFAULT_N_CONTROL
# Values of k a certified data support tries at most (a bisection over (0, support_k_max()]), and the models
# retrained at each k unless asked otherwise.
SUPPORT_STEPS = support.DEFAULT_BUDGET
SUPPORT_MODELS = support.DEFAULT_SUPPORT_MODELS
# Models per removal side of a PCA faithfulness check (App. J) unless asked otherwise, the sides it removes (the
# component's most positive and most negative coordinates), and the test targets at each end it reports on.
FAITHFULNESS_MODELS = faithfulness.DEFAULT_MODELS
FAITHFULNESS_SIDES = faithfulness.SIDES
FAITHFULNESS_GROUP = faithfulness.DEFAULT_GROUP
# How `removal` picks a set for a target (Ilyas et al. §4.1.2, Fig. 8): top, bottom, random-class, random.
REMOVAL_HEURISTICS = HEURISTICS
# The columns of the votes export (Vote.record), in order: the integer test and train positions first, as
# exports always wrote them, and the images' target names last.
VOTE_EXPORT_COLUMNS = ("run", "annotator", "test", "train", "is_leak", "voted_at", "test_name", "train_name")
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
    """A prediction beside the truth: `n_models` models retrained without `removed`, their mean margin.

    margins : each retrained model's margin on the target; test_flips : how many test targets the retrained
    models' mean margin puts on the other side of zero than the control models' (right <-> wrong); key : the
    retrain store's entry; relabelled_to : a class name when the set was relabelled to it rather than removed
    (the datamodels predict removals only, so then `prediction` is that of removing the set, and only its
    control_margin applies); trained_now, reused : how many of the models this call trained and how many the
    retrain store already held (not part of the result's equality).
    """

    prediction: PredictedRemoval
    n_models: int
    actual_margin: float
    margins: tuple[float, ...]
    test_flips: int
    key: str
    relabelled_to: str | None = None
    trained_now: int = field(default=0, compare=False)
    reused: int = field(default=0, compare=False)

    @property
    def actual_flips(self) -> bool:
        """Whether the retrained models' mean margin has the other sign than the control models'."""
        return (self.prediction.control_margin > 0) != (self.actual_margin > 0)

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


@dataclass(frozen=True)
class Vote:
    """One annotator's verdict on one candidate pair: is training image `train` a near duplicate of test image `test`
    (both target names)?"""

    annotator: str
    test: str
    train: str
    is_leak: bool
    voted_at: datetime

    def record(self, run: str) -> dict:
        """The vote as a row of the votes export (README, "Annotations"): the images' positions within their split
        (test, train: the export's integer columns, as they always were) and their names (test_name, train_name)."""
        values = (run, self.annotator, split_position(self.test), split_position(self.train), self.is_leak,
                  self.voted_at.isoformat(), self.test, self.train)
        return dict(zip(VOTE_EXPORT_COLUMNS, values))


class _Positional(NamedTuple):
    """A vote by positions within the split, as backend.leakage's scores count them."""

    annotator: str
    test: int
    train: int
    is_leak: bool


@dataclass(frozen=True)
class LeakageScores:
    """The annotators' votes on one run summed up (Ilyas et al. 2022, §4.3 and Fig. 11).

    pairs : one row per voted (test, train) pair, sorted by test then train: its votes and leak marks (pairs.n_votes,
        pairs.n_leak), annotation score and conflict (backend.leakage.scores.PairScores); pairs.test and pairs.train
        are positions within the split, the exports' integer columns, and pair_names the same pairs by name
    tests, leakage : each voted test image's name (sorted by position) and leakage score, float (n_images,): the
        largest annotation score over its candidates
    annotators : names, sorted; ratings float (n_pairs, n_annotators): 1 leak, 0 not, NaN not voted
    fleiss : Fleiss' κ of every annotator on the pairs two or more voted on (NaN when undefined)
    cohen, overlap : (n_annotators, n_annotators) Cohen's κ of each pair of annotators and the pairs both voted on
    """

    pairs: PairScores
    pair_names: list[tuple[str, str]]
    tests: list[str]
    leakage: np.ndarray
    annotators: list[str]
    ratings: np.ndarray
    fleiss: float
    cohen: np.ndarray
    overlap: np.ndarray

    def records(self) -> list[dict]:
        """One row per pair for the scores export (README, "Annotations"): test, train (positions within their
        split), annotators, marked, annotation_score, conflict, its test image's leakage_score, then test_name and
        train_name."""
        leakage = dict(zip(self.tests, self.leakage.tolist()))
        p = self.pairs
        return [{"test": t, "train": i, "annotators": n, "marked": m, "annotation_score": score, "conflict": conflict,
                 "leakage_score": leakage[test], "test_name": test, "train_name": train}
                for t, i, n, m, score, conflict, (test, train) in zip(
                    p.test.tolist(), p.train.tolist(), p.n_votes.tolist(), p.n_leak.tolist(), p.score.tolist(),
                    p.conflict.tolist(), self.pair_names)]

    def image_records(self) -> list[dict]:
        """One row per voted test image: test (its position), leakage_score, test_name."""
        return [{"test": split_position(name), "leakage_score": score, "test_name": name}
                for name, score in zip(self.tests, self.leakage.tolist())]


def leakage_scores(votes: list[Vote]) -> LeakageScores:
    """Annotation scores, leakage scores and agreement of a list of votes (Annotations.votes())."""
    positional = [_Positional(v.annotator, split_position(v.test), split_position(v.train), v.is_leak) for v in votes]
    annotators, pairs, ratings = rating_matrix(positional)
    tests, leakage = image_scores(pairs)
    cohen, overlap = pairwise_cohen_kappa(ratings)
    named = [(split_name("test", t), split_name("train", i)) for t, i in zip(pairs.test.tolist(), pairs.train.tolist())]
    return LeakageScores(pairs, named, [split_name("test", t) for t in tests.tolist()], leakage, annotators, ratings,
                         fleiss_kappa(category_counts(ratings, np.array([0.0, 1.0]))), cohen, overlap)


class Annotations:
    """One run's leak reviews in the shared annotation database (DATAMODELS_DATABASE_URL, else annotations.db in
    the data directory), by target names. Every method may raise AnnotationStoreError naming what to do."""

    def __init__(self, api: "RunAPI"):
        self._api, self._run = api, api.run.name
        self._store = annotation_db.shared_store()

    def sign_in(self, name: str) -> str:
        """The annotator's name, checked (AnnotatorNameError naming what is wrong) and known to the database."""
        name = validate_name(name)
        self._store.annotator_id(name)
        return name

    def reviewed(self, annotator: str) -> set[str]:
        """The test images the annotator submitted votes on (a skip is not a review)."""
        return self._names(self._store.reviewed(self._run, annotator))

    def skipped(self, annotator: str) -> set[str]:
        """The test images the annotator skipped (out of their queue until undone)."""
        return self._names(self._store.skipped(self._run, annotator))

    def submit(self, test: str, annotator: str, decisions: dict[str, bool]) -> int:
        """Record {training image: is a near duplicate} for `test` in one transaction; the number written."""
        return self._store.submit(self._run, self._test(test), annotator,
                                  {self._api.train_index(t): leak for t, leak in decisions.items()})

    def skip(self, test: str, annotator: str) -> None:
        self._store.skip(self._run, self._test(test), annotator)

    def undo_last(self, annotator: str) -> tuple[str, dict[str, bool]] | None:
        """Bring back the annotator's last submitted or skipped test image: (it, the votes deleted), or None."""
        undone = self._store.undo_last(self._run, annotator)
        if undone is None:
            return None
        test, votes = undone
        return self._api.name(self._api.run.n_train + test), {self._api.name(t): leak for t, leak in votes.items()}

    def votes(self) -> list[Vote]:
        """Every vote on the run, by test, train, annotator. The database is shared and written by other servers:
        a vote may name an image this run lacks (in_run says which)."""
        return [Vote(v.annotator, split_name("test", v.test), split_name("train", v.train), v.is_leak, v.voted_at)
                for v in self._store.votes(self._run)]

    def in_run(self, vote: Vote) -> bool:
        """Whether both images of a vote are in this run (a vote cast on another run of the same name may not be)."""
        return self._api.is_target(vote.test) and self._api.is_target(vote.train)

    def skip_counts(self) -> dict[str, int]:
        """{annotator: test images skipped}."""
        return self._store.skip_counts(self._run)

    def _test(self, test: str) -> int:
        column = self._api.column(test)
        if column < self._api.run.n_train:
            raise TargetError(f"leak reviews are of test images, and {test} is a training image: e.g. test:42")
        return column - self._api.run.n_train

    def _names(self, tests: set[int]) -> set[str]:
        return {self._api.name(self._api.run.n_train + t) for t in tests}


def open_run(path: str | Path) -> "RunAPI":
    """The run at `path` (a run directory); RunError naming the fix when it is not one."""
    return RunAPI(Run(path))


class RunAPI:
    """A run read by target names. `run.run` is the underlying store (backend.store.run_dir.Run)."""

    def __init__(self, run: Run):
        self.run = run
        self._control: tuple[int, np.ndarray] | None = None  # (control_margins.npy's mtime, its mean)

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

    def is_target(self, name: str) -> bool:
        """Whether `name` is a target of this run (well formed and in range)."""
        try:
            self.column(name)
        except TargetError:
            return False
        return True

    def name(self, column: int) -> str:
        return target_name(int(column), self.run.n_train)

    def train_list_text(self, indices: Iterable[int]) -> str:
        """The compact text of a list of training indices, as train_list reads it ([3, 10, 11, 12, 7] → "3,10-12,7")."""
        return format_ids(indices)

    def train_list(self, text: str) -> list[int]:
        """The training indices of a list such as a basket's URL value ("3,10-14,7"), in order, each once; a bad
        part or an index out of range is a ValueError (RemovalError) naming it."""
        return parse_ids(text, self.run.n_train)

    def target_list(self, text: str) -> list[str]:
        """The targets of a list of names and inclusive ranges ("test:0-99,train:5"), in its order (a TargetError
        naming a malformed or out-of-range part, or an empty list)."""
        return [self.name(c) for c in parse_targets(text, self.run.n_train, self.run.n_test)]

    def label(self, target: str) -> str:
        """The class name of a target's label."""
        return self.run.class_names[int(self.run.labels[self.column(target)])]

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

    def require_fitted(self, targets: Iterable[str]) -> None:
        """A RunError naming those of `targets` without a datamodel, and the command that fits them. Why: a removal
        ranked by a datamodel of zero weights is empty or arbitrary, so a prediction or a retraining check of one
        means nothing, and a support search would retrain for minutes to say so."""
        columns = np.array([self.column(t) for t in targets], dtype=np.int64)
        self._require(WEIGHTS, "datamodels")  # a run not fitted at all: the line the CLI has always printed
        self._require(LAM, "datamodels")
        missing = columns[~fitted_targets(np.asarray(self.run.array(LAM))[columns])]
        if len(missing):
            spec = describe_targets(missing, self.run.n_train, self.run.n_test)
            raise RunError(f"{spec} {'has' if len(missing) == 1 else 'have'} no datamodel yet (the run's fit left "
                           f"{'it' if len(missing) == 1 else 'them'} out): fit with "
                           f"`{WEIGHTS.command(self.run.dir)} --targets {spec}` (the first fit's settings keep the fitted targets "
                           "as they are)")

    def nonzero_weights(self, target: str) -> int:
        """How many training images the target's datamodel gives a nonzero weight."""
        return sparsity(self.scores(target))

    def weight_profile(self, target: str, max_points: int = 2000) -> tuple[list[str], np.ndarray]:
        """The datamodel's nonzero weights from most positive to most negative, (training image names, weights
        (n,)); past max_points only the max_points // 2 largest and smallest (the middle is flat near zero)."""
        indices, values = weight_profile(self.scores(target), max_points)
        return [self.name(j) for j in indices], values

    # Counterfactuals --------------------------------------------------------------------------------------
    def removal(self, target: str, heuristic: str, k: int, seed: int = 0) -> list[str]:
        """k training images picked for `target` by one of REMOVAL_HEURISTICS (Ilyas et al. §4.1.2, Fig. 8): "top"
        and "bottom" the largest positive and most negative datamodel weights, strongest first, by backend.ranking's
        rule (a zero weight never: a sparse datamodel may give fewer than k); "random-class" k random training images
        of the target's class (all of them when it has fewer) and "random" k of the whole training set, ascending,
        drawn from SeedSequence([seed, the target's margins column]), so a target and seed always give one set.
        Unchecked: check_removal says whether it may be predicted or retrained."""
        column = self.column(target)
        if heuristic not in HEURISTICS:
            raise RemovalError(f"unknown removal heuristic {str(heuristic)[:40]!r}: use one of {', '.join(HEURISTICS)}")
        if not 0 < k <= self.run.n_train:
            raise RemovalError(f"k must be 1..{self.run.n_train} (the run's training images), got {k}")
        labels = np.asarray(self.run.labels)
        # The random heuristics do not read the weights (a run without datamodels still draws them).
        weights = self.scores(target) if heuristic in ("top", "bottom") else np.zeros(self.run.n_train, np.float32)
        rng = np.random.default_rng(np.random.SeedSequence([seed, column]))
        picked = removal_set(heuristic, k, weights, labels[:self.run.n_train], int(labels[column]), rng)
        return [self.name(i) for i in picked]

    def competitor(self, target: str) -> str:
        """The wrong class the target's datamodel weighs against its own (the most total negative weight on its
        training images; backend.counterfactuals.removal.competitor_class): what verify(relabel=True) and a
        mislabel support relabel a set to."""
        return self.run.class_names[self._competitor(target)]

    def check_removal(self, removed: Iterable[str], max_remove: int | None = None) -> list[str]:
        """The removal set `removed` (training image names) sorted, each once; a RemovalError naming the problem
        when it must not be predicted or retrained (empty, a whole class, more than max_remove, by default
        removal_cap())."""
        return [self.name(i) for i in self._removal(removed, max_remove)]

    def removal_deltas(self, removed: Iterable[str], max_remove: int | None = None) -> np.ndarray:
        """float64 (n_test,): the predicted change of every test target's margin, −Σ_{i∈removed} w_i (Ilyas et al.
        §4.1.2). It reads every test row of weights.npy (or |removed| rows of the transposed copy): a page caches
        it per removal set and passes it to predict_removal."""
        ids = self._removal(removed, max_remove)
        self._require(WEIGHTS, "datamodels")
        return removal_deltas(self.run, ids)

    def predict_removal(self, target: str, removed: Iterable[str], deltas: np.ndarray | None = None,
                        max_remove: int | None = None) -> PredictedRemoval:
        """What the datamodels predict for `target` when the training images `removed` (names) are taken out;
        deltas: removal_deltas(removed), when the caller has it."""
        column, ids = self.column(target), self._removal(removed, max_remove)
        self.require_fitted([target])
        self._require(CONTROL_MARGINS, "control models")
        found = predict_removal(self.run, column, ids, self.control_margins(), deltas=deltas)
        return PredictedRemoval(target=self.name(column), removed=[self.name(i) for i in found.removed],
                                control_margin=found.control_margin, delta=found.delta,
                                predicted_margin=found.predicted_margin, flips=found.flips,
                                flipped_test=[self.name(c) for c in found.flipped])

    def verify(self, target: str, removed: Iterable[str], n_models: int = 8, device: str = "auto",
               progress: Progress | None = None, *, relabel: bool = False, max_remove: int | None = None,
               deltas: np.ndarray | None = None) -> VerifiedRemoval:
        """Retrain `n_models` models without `removed` (stored in the run's retrain store, so asking again
        trains nothing) and set their mean margin on `target` beside the prediction. relabel : keep the set but
        relabel it to competitor(target) instead (App. F.3's mislabel experiment). deltas, max_remove : as for
        predict_removal."""
        prediction = self.predict_removal(target, removed, deltas, max_remove)
        column = self.column(target)
        ids = np.array([self.train_index(n) for n in prediction.removed], dtype=np.int64)
        to = self._competitor(target) if relabel else None
        relabelled = None if to is None else np.full(len(ids), to)
        cf = retrain(self.run, ids, relabelled, n_models=n_models, device=device, progress=progress, target=column)
        test_control = self.control_margins()[self.run.n_train:]
        test_actual = cf.margins[:, self.run.n_train:].mean(axis=0, dtype=np.float64)
        return VerifiedRemoval(prediction, n_models, actual_margin(cf, column),
                               tuple(float(m) for m in cf.margins[:, column]),
                               int(((test_control > 0) != (test_actual > 0)).sum()), cf.request.key,
                               None if to is None else self.run.class_names[to],
                               cf.trained_now, cf.reused)

    def verified_removals(self) -> list[dict]:
        """Predicted beside actual change for every removal retrained in the run and the target it was made for
        (the record behind Ilyas et al.'s Fig. 8): key, target (a name), n_removed, n_models, predicted_delta,
        actual_delta."""
        self._require(CONTROL_MARGINS, "control models")
        return [dict(row, target=self.name(row["target"])) for row in verified_removals(self.run)]

    @staticmethod
    def correlations(predicted: np.ndarray, actual: np.ndarray) -> dict:
        """{n, pearson, spearman} of predicted against actual changes (None where fewer than 3 or constant)."""
        return correlations(predicted, actual)

    def has_control(self) -> bool:
        """Whether the run has control models (trained on the whole training set), what predictions start from."""
        return self.run.has(CONTROL_MARGINS) and self.run.has(CONTROL_FEATURES)

    def train_control(self, n_models: int = CONTROL_MODELS, device: str = "auto", progress: Progress | None = None) -> None:
        """Train control models until the run has `n_models` of them (none when it has)."""
        ensure_control(self.run, n_models, device=device, progress=progress)

    def control_summary(self) -> dict:
        """The control models: {n_control, mean_test_accuracy, features_dim}; a RunError naming the fix when
        control.json and control_features.npy (control model 0's penultimate features) disagree."""
        self._require(CONTROL_META, "control models")
        meta = read_json(self.run.dir, CONTROL_META)
        features = load_control_features(self.run)  # checked here, not first by the analyze stage that uses them
        if features.shape[1] != meta["features_dim"]:
            raise RunError(f"{CONTROL_FEATURES.path(self.run.dir)} has {features.shape[1]} features but "
                           f"{CONTROL_META.name} says {meta['features_dim']}: delete both and rebuild them with "
                           f"`{CONTROL_META.command(self.run.dir)}`")
        return {"n_control": len(load_control(self.run)), "mean_test_accuracy": meta["mean_test_accuracy"],
                "features_dim": int(features.shape[1])}

    def control_margins(self) -> np.ndarray:
        """float64 (n_targets,): every target's mean margin over the control models, in margins-column order (read
        once per version of control_margins.npy: a page's prediction, supports and chart all start from it)."""
        self._require(CONTROL_MARGINS, "control models")
        stamp = CONTROL_MARGINS.path(self.run.dir).stat().st_mtime_ns
        if self._control is None or self._control[0] != stamp:
            self._control = (stamp, control_mean(self.run))
        return self._control[1]

    def predictions_version(self) -> tuple[int, int]:
        """Changes when weights.npy or control_margins.npy is rewritten (their mtimes): a key for caching what is
        computed from them (removal_deltas, heuristic_supports)."""
        return tuple(a.path(self.run.dir).stat().st_mtime_ns for a in (WEIGHTS, CONTROL_MARGINS))

    def top_in_class(self, target: str, label: int, k: int) -> list[str]:
        """The k training images of class `label` with the largest weights in the target's datamodel, largest
        first; unsigned (zero and negative weights rank too: k images of the class are asked for)."""
        members = np.flatnonzero(np.asarray(self.run.labels[:self.run.n_train]) == label)
        return [self.name(j) for j in members[top_k(self.scores(target)[members], k, signed=False)]]

    # Data support (App. F.3): how few removals flip a prediction ------------------------------------------------
    def heuristic_support(self, target: str) -> float:
        """The fewest top positive weights whose sum exceeds the target's control margin (App. F.3.2): 0 when the
        control models already misclassify it, inf when all positive weights together do not."""
        margin = np.array([self.control_margins()[self.column(target)]])
        return float(support.heuristic_support(self.scores(target)[None], margin)[0])

    def heuristic_supports(self) -> np.ndarray:
        """float64 (n_test,): heuristic_support of every test target, in order (reads every test row of weights.npy)."""
        self._require(WEIGHTS, "datamodels")
        control = self.control_margins()[self.run.n_train:]
        return support.heuristic_support(self.run.array(WEIGHTS), control, np.arange(self.run.n_train, self.run.n_targets))

    def support_k_max(self) -> int:
        """The largest removal a certified support tries (1280, or n_train − 1 if smaller)."""
        return support.default_k_max(self.run.n_train)

    def certify_support(self, target: str, n_models: int = SUPPORT_MODELS, device: str = "auto",
                        progress: Progress | None = None) -> dict:
        """The certified support of `target`: a bisection over k, each step `n_models` models retrained without the
        top-k weights, k accepted when their mean margin is below zero; stored in the run, so asking again trains
        nothing. {support (None: no k up to k_max flipped), k_max, lower, steps [(k, mean margin)], ...}."""
        (found,) = self.certify_supports([target], n_models, device=device, progress=progress)
        return found

    def certify_supports(self, targets: list[str], n_models: int = SUPPORT_MODELS, *, mislabel: bool = False,
                         k_max: int | None = None, budget: int = SUPPORT_STEPS, check: bool = False,
                         device: str = "auto", progress: Progress | None = None) -> list[dict]:
        """certify_support of many targets, searched side by side (App. F.3), one stored record each in the order
        of `targets` (its "name" the target's; a stored search with these settings is reused). mislabel : relabel
        the top-k to competitor(target) instead of removing them; k_max : the largest k tried (support_k_max());
        budget : bisection steps; check : also retrain fresh models (other seeds) without each certified support
        and record their mean margin ("check_margin"). progress counts the targets ("target")."""
        columns = [self.column(t) for t in targets]
        self.require_fitted(targets)
        self._require(CONTROL_MARGINS, "control models")
        return support.certified_supports(self.run, columns, n_models, mislabel=mislabel, k_max=k_max, budget=budget,
                                          check=check, device=device, progress=progress)

    def write_support_summary(self, records: list[dict], targets: str, mislabel: bool = False) -> tuple[dict, Path]:
        """Write support/summary-<mode>.json for certify_supports' `records` of the targets `targets` (their list
        as written, e.g. "test:0-99"): the search's counts, the certified CDF beside the heuristic support of every
        test target (App. F.3), one row per target. (the summary without its rows, the file written)."""
        return support.save_support_summary(self.run, records, self.control_margins(), targets, mislabel=mislabel)

    def certified_supports(self) -> np.ndarray:
        """float64 (n_certified,): every stored certified support (inf where no tested k flipped the target)."""
        return support.certified_array(support.stored_supports(self.run))

    @staticmethod
    def brittleness_cdf(supports: np.ndarray, ks: np.ndarray) -> np.ndarray:
        """The fraction of `supports` at most k, for each k of ks (float64, ks's shape): Fig. 6's brittleness curve."""
        return support.brittleness_cdf(supports, ks)

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

    def leak_queue(self) -> list[tuple[str, float]]:
        """The test images in the order reviewers see them, with their queue score (most likely leaked first)."""
        self._require(LEAKAGE_SUMMARY, "leak candidates")
        candidates = load_candidates(self.run)
        return [(self.name(self.run.n_train + int(j)), float(candidates.queue_score[int(j)])) for j in candidates.queue]

    def annotations(self) -> Annotations:
        """The run's leak reviews in the shared annotation database (opens it: AnnotationStoreError when it cannot)."""
        return Annotations(self)

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

    # Principal components of datamodel embeddings and their faithfulness check: what the PCA page shows -----
    def pca(self) -> tuple[np.ndarray, np.ndarray]:
        """(components float32 (n_components, n_train): each component's coordinate for every training image;
        projections float32 (n_targets, n_components): every target's coordinates, row = margins column), both
        memory-mapped, as `analyze` stored them."""
        return embeddings.pca_components(self.run), embeddings.pca_projections(self.run)

    def explained_ratios(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Explained-variance ratio of each component, (n_components,), and of the representation baseline's
        (None when `analyze` had no control features to fit it on)."""
        return embeddings.explained_ratios(self.run)

    def structure_summary(self) -> dict:
        """structure/summary.json: the settings and headline numbers of the last `analyze` ({} before it)."""
        return embeddings.load_summary(self.run)

    def pc_extremes(self, pc: int, k: int, among: str = "test",
                    tagged: np.ndarray | None = None) -> tuple[list[str], list[str]]:
        """The two ends of component `pc`: (the k highest, highest first; the k lowest, lowest first). among="test"
        or "train": the targets of that split by their projection; "coordinates": the training images by their
        coordinate in the component (the images a faithfulness check removes). A coordinate's sign is no verdict:
        zero and negative values rank too (backend.ranking, unsigned). tagged : margins columns (a tag's): only
        those targets or training images rank."""
        components, projections = self.pca()
        if among == "coordinates":
            values, start = np.asarray(components[pc]), 0
        elif among in ("train", "test"):
            start, stop = self._split_range(among)
            values = np.asarray(projections[start:stop, pc])
        else:
            raise ValueError(f"among must be 'test', 'train' or 'coordinates', got {str(among)[:40]!r}")
        kept = np.arange(len(values))
        if tagged is not None:
            kept = np.unique(np.asarray(tagged, dtype=np.int64) - start)
            kept = kept[(kept >= 0) & (kept < len(values))]
            values = values[kept]
        top, bottom = embeddings.extremes(values, k)
        return [self.name(start + kept[j]) for j in top], [self.name(start + kept[j]) for j in bottom]

    def faithfulness_to_train(self, pc: int, k: int, n_models: int = FAITHFULNESS_MODELS) -> int:
        """How many models `faithfulness(pc, k, n_models)` would train (0: it answers from the retrain store)."""
        return faithfulness.models_to_train(self.run, pc, k, n_models=n_models)

    def faithfulness(self, pc: int, k: int, n_models: int = FAITHFULNESS_MODELS, device: str = "auto",
                     progress: Progress | None = None, *, sides: tuple[str, ...] = FAITHFULNESS_SIDES,
                     n_group: int = FAITHFULNESS_GROUP, n_control: int = CONTROL_MODELS) -> dict:
        """App. J for component `pc`: retrain without the k training images at each end (of `sides`) and report
        the mean margin change against at least n_control control models (the missing ones trained first), per
        side, of the n_group most positive, n_group most negative and all test targets
        (backend.structure.faithfulness.faithfulness_check; each side's `removed` as training image names)."""
        result = faithfulness.faithfulness_check(self.run, pc, k, n_models=n_models, sides=sides, n_group=n_group,
                                                 n_control=n_control, device=device, progress=progress)
        for side in result["sides"].values():
            side["removed"] = [self.name(j) for j in side["removed"]]
        return result

    def faithfulness_checks(self) -> list[dict]:
        """Every stored faithfulness retrain: its pc, k, side, model count, file and whether the current PCA
        still gives its removal set."""
        return faithfulness.stored_checks(self.run)

    def retrains_version(self) -> int:
        """A number that changes whenever a retrain is stored (the retrain folder's mtime: each is added by an
        atomic rename), for caching what reads them; 0 before the first."""
        folder = COUNTERFACTUAL_META.folder(self.run.dir)
        return folder.stat().st_mtime_ns if folder.exists() else 0

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

    def _split_range(self, split: str) -> tuple[int, int]:
        """The margins columns [start, stop) of a split: "train" the first n_train, any other the test targets."""
        return (0, self.run.n_train) if split == "train" else (self.run.n_train, self.run.n_targets)

    def targets(self, split: str) -> list[str]:
        """Every target name of a split ("train" or "test"), in order."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        start, stop = self._split_range(split)
        return [self.name(c) for c in range(start, stop)]

    def lowest(self, values: np.ndarray, split: str, k: int, among: np.ndarray | None = None) -> list[str]:
        """The k targets of `split` with the lowest of `values` (one per target, margins-column order, e.g.
        lds()), lowest first; NaN is skipped; with `among` (margins columns, e.g. a tag's), only those targets."""
        start, stop = self._split_range(split)
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
    def _removal(self, removed: Iterable[str], max_remove: int | None = None) -> np.ndarray:
        if isinstance(removed, str):
            raise TypeError("removed is a list of training image names, e.g. ['train:3', 'train:17'] or run.top(...)")
        ids = [self.train_index(n) for n in removed]
        labels = np.asarray(self.run.labels[:self.run.n_train])
        return validate_removal(np.array(ids, dtype=np.int64), labels, self.run.class_names,
                                max_remove or self.removal_cap())

    def _competitor(self, target: str) -> int:
        labels = np.asarray(self.run.labels)
        return competitor_class(self.scores(target), labels[:self.run.n_train], int(labels[self.column(target)]),
                                len(self.run.class_names))

    def _require(self, artifact: Artifact, what: str, **fields) -> None:
        """MissingArtifact naming the artifact's command when the run lacks it (a method is a name, not a path)."""
        if "method" in fields and not _METHOD.fullmatch(fields["method"]):
            raise ValueError(f"bad method {fields['method'][:40]!r}: a method is a name like trak or ssl-esvm")
        if not self.run.has(artifact, **fields):
            if artifact is WEIGHTS:  # the line the CLI's query verbs have always printed
                raise MissingArtifact(no_weights(self.run))
            command = artifact.command(self.run.dir).replace("METHOD", fields.get("method", "METHOD"))
            raise MissingArtifact(f"run {self.run.name} has no {what} ({artifact.path(self.run.dir, **fields)} is "
                                  f"missing): build it with `{command}`")


def __getattr__(name: str):
    # BatchedLasso imports torch, AnnotationStoreError SQLAlchemy: loaded on first use, so a page that imports
    # this module does not pay for them.
    if name == "BatchedLasso":
        from backend.datamodels.estimator import BatchedLasso
        return BatchedLasso
    if name == "AnnotationStoreError":
        return annotation_db.AnnotationStoreError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
