"""The run format: one declarative entry per artifact a run directory can hold.

Every stage looks its files up here, so a file name is spelled once in the code, and every read
checks the file against its entry (kind, dtype, shape in the run's sizes) and names the command that
rebuilds it when it is missing or broken (backend.store.artifacts reads and writes; this module is data).
README.md's run-format tables list the same files (tests/store/test_schema.py holds them together).

Shapes are tuples of size symbols, resolved against the run: `n_train`, `n_test`, `n_targets`
(= n_train + n_test); `M` (models), `k` (candidates per row), `C` (principal components), `D`
(feature width), `n_control`, `n` (models of one retrain) are fixed by a stage's settings, so they are
free unless the reader passes them; None is a dimension no setting fixes. Patterned names hold
placeholders (`counterfactuals/<key>.npz`); `template` is their str.format form.
"""
from __future__ import annotations

import re
import string
from dataclasses import dataclass
from pathlib import Path

Shape = tuple  # of size symbols (str), fixed ints and None


@dataclass(frozen=True)
class Artifact:
    """One run file: where it lives, what it holds, which stage writes it and how to rebuild it.

    name    : path inside the run as README.md spells it, e.g. `weights.npy`, `support/<mode>-<column>.json`
    kind    : "npy", "json", "npz" or "run" (a run directory of its own)
    dtype, shape : of an npy (dtype may be a tuple of the dtypes allowed, first the default); members : of an npz
    keys    : of a JSON object, {key: spec} for the keys its readers index, a spec being a type or tuple of types,
              {key: spec} for an object nested in it ("*": every value of it) or [spec] for a list of such items
    stage   : the stage (CLI verb) that writes it
    rebuild : the command that writes it again, with RUN for the run directory
    remedy  : what to do with a broken copy before rebuilding ("delete it and" for files a stage keeps)
    below   : of an npy of indices or labels, the size symbol its every value lies under (lowest <= v < sizes[below]),
              so a value read from the run can index what it names (`n_train`, `n_classes`, ...)
    lowest  : the least value allowed with `below` (0; -1 where -1 marks an empty slot)
    finite  : of a float npy, every value is finite (no NaN or inf)
    """

    name: str
    kind: str
    stage: str
    rebuild: str
    dtype: str | None = None
    shape: Shape | None = None
    members: dict | None = None
    optional: tuple = ()
    keys: dict | None = None
    template: str | None = None
    remedy: str = "delete it and rebuild it with"
    below: str | None = None
    lowest: int = 0
    finite: bool = False

    @property
    def format(self) -> str:
        return self.template or re.sub(r"<(\w+)>", r"{\1}", self.name)

    def relpath(self, **fields) -> str:
        """The file's path inside the run; a patterned name needs every placeholder's value."""
        return self.format.format(**fields)

    def path(self, run_dir: str | Path, **fields) -> Path:
        return Path(run_dir) / self.relpath(**fields)

    def folder(self, run_dir: str | Path) -> Path:
        """The directory the file lives in (the run itself for top-level files)."""
        return (Path(run_dir) / self.format).parent

    def glob(self, run_dir: str | Path, **fields) -> list[Path]:
        """Every file of this entry in the run, sorted; placeholders given in `fields` are held fixed."""
        parts = []
        for literal, field, spec, _ in string.Formatter().parse(self.format):
            parts.append(literal)
            if field is not None:
                parts.append(format(fields[field], spec) if field in fields else "*")
        return sorted(p for p in Path(run_dir).glob("".join(parts)) if self.fields_of(p, run_dir) is not None)

    def fields_of(self, path: str | Path, run_dir: str | Path) -> dict[str, str] | None:
        """The placeholder values of a path of this entry, or None when the path is not one."""
        regex = []
        for literal, field, spec, _ in string.Formatter().parse(self.format):
            regex.append(re.escape(literal))
            if field is not None:
                regex.append(f"(?P<{field}>{'[0-9]+' if spec.endswith('d') else '[^/]+'})")
        match = re.fullmatch("".join(regex), Path(path).relative_to(run_dir).as_posix())
        return match.groupdict() if match else None

    def command(self, run_dir: str | Path) -> str:
        return self.rebuild.replace("RUN", str(run_dir))


# The CLI as `make run` installs it (README "Command line"): a hint's command runs as printed from the repository root.
CLI = ".venv/bin/python -m precompute"
_TRAIN = f"{CLI} train --out RUN"
_MERGE = f"{CLI} merge --run RUN"
_FIT = f"{CLI} fit --run RUN"
_EVAL = f"{CLI} eval --run RUN --heldout RUN/heldout"
_CONTROL = f"{CLI} control --run RUN"
_ANALYZE = f"{CLI} analyze --run RUN"
_FRESH = "delete the run and create it again with"
_IMPORT = f"{CLI} import-datamodels-data --release DIR --out RUN"


def _npy(name: str, dtype: str, shape: Shape, stage: str, rebuild: str, **kw) -> Artifact:
    return Artifact(name, "npy", stage, rebuild, dtype=dtype, shape=shape, **kw)


def _json(name: str, stage: str, rebuild: str, **kw) -> Artifact:
    return Artifact(name, "json", stage, rebuild, **kw)


class Count:
    """A JSON spec: an integer (not a bool) of at least `minimum` (a number of models, images, ...)."""

    def __init__(self, minimum: int = 0):
        self.minimum = minimum


# The run directory (README "Run directory format").
_NUMBER = (int, float)
_NUMBER_OR_NONE = (int, float, type(None))
MANIFEST = _json("manifest.json", "train", _TRAIN, remedy=_FRESH, keys={
    "dataset": {"n_train": Count(1), "n_test": Count(0), "class_names": [str]}, "alpha": _NUMBER, "seed": int, "arch": str,
    "hparams": dict, "n_models": Count(0)})
MASKS = _npy("masks.npy", "bool", ("M", "n_train"), "merge", _MERGE)
MARGINS = _npy("margins.npy", ("float32", "float16"), ("M", "n_targets"), "merge", _MERGE)
LABELS = _npy("labels.npy", "int64", ("n_targets",), "train", _TRAIN, remedy=_FRESH, below="n_classes")
IMAGES = _npy("images.npy", "uint8", ("n_targets", None, None, None), "train", _TRAIN, remedy=_FRESH)
SHARD = Artifact("shards/AAAAAAAAA-BBBBBBBBB.npz", "npz", "train", _TRAIN + " (the run's own flags)",
                 members={"masks": ("bool", ("n", "n_train")), "margins": (("float32", "float16"), ("n", "n_targets")),
                          "predictions": ("int16", ("n", "n_targets"))},
                 optional=("predictions",),  # shards written before prediction counts existed
                 template="shards/{start:09d}-{end:09d}.npz", remedy="delete it and retrain its models with")
TARGET_MEAN_MARGIN = _npy("target_mean_margin.npy", "float32", ("n_targets",), "merge", _MERGE)
TARGET_ACCURACY = _npy("target_accuracy.npy", "float32", ("n_targets",), "merge", _MERGE)
# The running sums behind the two above, so a top-up adds its new models' margins without rereading the rest.
TARGET_SUMS = Artifact("target_sums.npz", "npz", "merge", _MERGE, members={
    "margin_sum": ("float64", ("n_targets",)), "positive": ("int64", ("n_targets",)), "n_models": ("int64", ())})
# A run whose shards predate the predictions member has none: only retraining its models writes them.
TARGET_PREDICTIONS = _npy("target_predictions.npy", "int32", ("n_targets", "n_classes"), "merge",
                          _TRAIN + " (a new run: shards written before prediction counts lack the predictions)")
WEIGHTS = _npy("weights.npy", ("float32", "float16"), ("n_targets", "n_train"), "fit", _FIT)
# The test rows of weights.npy transposed, so a removal set's effect on every test target is |R| row reads.
WEIGHTS_BY_TRAIN = _npy("weights_test_by_train.npy", ("float32", "float16"), ("n_train", "n_test"), "fit", _FIT)
BIAS = _npy("bias.npy", "float32", ("n_targets",), "fit", _FIT)
LAM = _npy("lam.npy", "float32", ("n_targets",), "fit", _FIT)
FIT = _json("fit.json", "fit", _FIT, keys={"n_targets": int, "targets": (str, list), "iterations": dict})
_LDS_SUMMARY = {"n_targets": int, "n_undefined": int}
METRICS = _json("metrics.json", "eval", _EVAL, keys={
    "lds": {"test": _LDS_SUMMARY, "train": _LDS_SUMMARY}, "mse": {"test": dict, "train": dict}, "n_heldout_models": int,
    "table5": {"n_fit_models": int, "n_heldout_models": int}})
LDS = _npy("lds.npy", "float32", ("n_targets",), "eval", _EVAL)
# Run files an imported run reads in place from the release (backend.store.external): name -> parts, checksums.
EXTERNAL = _json("external.json", "import-datamodels-data", _IMPORT, remedy=_FRESH,
                 keys={"release": (str, type(None)), "arrays": dict})
HELDOUT = Artifact("heldout/", "run", "all", f"{CLI} train --seed SEED+1 --out RUN/heldout (the run's flags)")
CONTROL_MARGINS = _npy("control_margins.npy", "float32", ("n_control", "n_targets"), "control", _CONTROL)
CONTROL_FEATURES = _npy("control_features.npy", "float32", ("n_targets", "D"), "control", _CONTROL)
CONTROL_META = _json("control.json", "control", _CONTROL, keys={
    "n_control": int, "features_dim": int, "mean_test_accuracy": _NUMBER, "seeds": [int]})
ANALYSIS = _json("analysis.json", "analyze", _ANALYZE, keys={"structure": dict, "leakage": dict})
_RETRAIN = f"{CLI} counterfactual --run RUN (the same request)"
COUNTERFACTUAL = Artifact("counterfactuals/<key>.npz", "npz", "counterfactual", _RETRAIN, members={
    "remove": ("int64", ("k",)), "relabel": ("int64", (None,)), "is_relabel": ("bool", ()), "stream": ("int64", ()),
    "recipe": (None, ()), "indices": ("int64", ("n",)), "seeds": ("int64", ("n",)),
    "margins": ("float32", ("n", "n_targets"))},
    remedy="delete it and its .json, then rebuild it with")
COUNTERFACTUAL_META = _json("counterfactuals/<key>.json", "counterfactual", _RETRAIN,
                            remedy="delete it and its .npz, then rebuild it with",
                            keys={"key": str, "n_models": int, "targets": [int], "target_margins": {"*": _NUMBER}})
_SUPPORT = f"{CLI} support --run RUN --targets TARGETS"
SUPPORT = _json("support/<mode>-<column>.json", "support", _SUPPORT, keys={
    "target": int, "support": (int, type(None)), "control_margin": _NUMBER, "steps": [list]})
SUPPORT_SUMMARY = _json("support/summary-<mode>.json", "support", _SUPPORT)
COUNTERFACTUAL_EVAL = _json("counterfactual_eval.json", "cf-eval", f"{CLI} cf-eval --run RUN")
# What the dashboard's retraining clicks have trained in the run (backend.access.budget), kept across restarts.
RETRAIN_SPEND = _json("retrain_budget.json", "counterfactual", _RETRAIN.replace("(the same request)", "(not capped)"),
                      keys={"spent": int}, remedy="delete it (the run's click budget then starts again) or retrain with")

# Attribution scores of every method (README "Attribution methods"): rows test targets, columns training images,
# positive = the image raises the target's margin.
_ATTRIBUTE = f"{CLI} attribute --run RUN --method METHOD"
ATTRIBUTION_SCORES = _npy("attribution/<method>/scores.npy", "float32", ("n_test", "n_train"), "attribute", _ATTRIBUTE)
# Each training image's self-score under the method (higher = likelier mislabelled), from the scores' own models.
ATTRIBUTION_SELF_SCORES = _npy("attribution/<method>/self_scores.npy", "float32", ("n_train",), "attribute", _ATTRIBUTE)
ATTRIBUTION_META = _json("attribution/<method>/meta.json", "attribute", _ATTRIBUTE, keys={
    "method": str, "config": dict, "models": dict, "seconds": _NUMBER, "bytes": int, "code_version": dict})
# The ssl-esvm method's self-supervised encoder, kept so a resumed or repeated attribution does not retrain it.
SSL_EMBEDDINGS = _npy("attribution/ssl-esvm/embeddings.npy", "float32", ("n_targets", "D"), "attribute",
                      _ATTRIBUTE.replace("METHOD", "ssl-esvm"))
SSL_ENCODER = _json("attribution/ssl-esvm/encoder.json", "attribute", _ATTRIBUTE.replace("METHOD", "ssl-esvm"),
                    keys={"config": dict, "seconds": _NUMBER, "final_loss": _NUMBER})
METHODS_EVAL = _json("attribution/methods_eval.json", "methods-eval", f"{CLI} methods-eval --run RUN", keys={
    "targets": list, "modes": [str], "target_rule": str, "n_heldout_models": int,
    "support_params": {"n_models": int, "budget": int, "k_max": int},
    "methods": {"*": {"lds": {"mean": _NUMBER_OR_NONE}, "cost": {"seconds": _NUMBER, "bytes": int},
                      "support": {"*": {"seconds": _NUMBER, "cdf": {"k": list, "fraction": list}}}}},
    "smaller_support": {"*": {"*": dict}}, "mislabel": dict,
    "lds_vs_models": {"*": [{"n_models": (int, type(None)), "lds": _NUMBER_OR_NONE}]}})

# Structure of datamodel space (README "Structure of datamodel space").
PCA_COMPONENTS = _npy("structure/pca_components.npy", "float32", ("C", "n_train"), "analyze", _ANALYZE, finite=True)
PCA_MEAN = _npy("structure/pca_mean.npy", "float32", ("n_train",), "analyze", _ANALYZE)
PCA_EXPLAINED_VARIANCE = _npy("structure/pca_explained_variance.npy", "float32", ("C",), "analyze", _ANALYZE)
PCA_EXPLAINED_RATIO = _npy("structure/pca_explained_variance_ratio.npy", "float32", ("C",), "analyze", _ANALYZE)
PCA_PROJECTIONS = _npy("structure/pca_projections.npy", "float32", ("n_targets", "C"), "analyze", _ANALYZE, finite=True)
REPRESENTATION_RATIO = _npy("structure/representation_explained_variance_ratio.npy", "float32", (None,),
                            "analyze", _ANALYZE)
CLUSTERS_BY_CLASS = _npy("structure/clusters_by_class.npy", "int32", ("n_test",), "analyze", _ANALYZE, below="n_test")
LAYOUT_BY_CLASS = _npy("structure/layout_by_class.npy", "float32", ("n_test", 2), "analyze", _ANALYZE)
SILHOUETTE_BY_CLASS = _npy("structure/silhouette_by_class.npy", "float32", ("n_test",), "analyze", _ANALYZE)
CLUSTERS_ALL = _npy("structure/clusters_all.npy", "int32", ("n_test",), "analyze", _ANALYZE, below="n_test")
LAYOUT_ALL = _npy("structure/layout_all.npy", "float32", ("n_test", 2), "analyze", _ANALYZE)
SILHOUETTE_ALL = _npy("structure/silhouette_all.npy", "float32", ("n_test",), "analyze", _ANALYZE)
_CLUSTERING = {"k": int, "gamma": _NUMBER, "silhouette": _NUMBER_OR_NONE}
CLUSTERS = _json("structure/clusters.json", "analyze", _ANALYZE, keys={
    "per_class": [dict(_CLUSTERING, **{"class": int})], "whole": dict(_CLUSTERING, nmi=_NUMBER), "pixels": {"nmi": _NUMBER}})
# The embeddings map (backend.structure.map_layout): every target's point of a 2-D t-SNE of its PCA coordinates.
MAP_LAYOUT = _npy("structure/map_layout.npy", "float32", ("n_targets", 2), "analyze", _ANALYZE)  # NaN: unfitted
NEIGHBORS = _npy("structure/neighbors.npy", "int64", ("n_targets", None), "analyze", _ANALYZE, below="n_targets")
NEIGHBOR_SIMILARITY = _npy("structure/neighbor_similarity.npy", "float32", ("n_targets", None), "analyze", _ANALYZE)
STRUCTURE_SUMMARY = _json("structure/summary.json", "analyze", _ANALYZE,
                          keys={"pca": dict, "clusters": dict, "neighbors": dict})
# Leak candidates (README "Candidates (RUN/leakage/)"): rows are test positions, entries training positions.
LEAKAGE_LISTS = {name: _npy(f"leakage/{name}.npy", dtype, ("n_test", "k"), "analyze", _ANALYZE,
                             below="n_train" if dtype == "int64" else None, lowest=-1)  # -1: an empty slot
                 for name, dtype in (
    ("weight_top", "int64"), ("weight_top_value", "float32"), ("weight_bottom", "int64"),
    ("weight_bottom_value", "float32"), ("feature_nn", "int64"), ("feature_similarity", "float32"),
    ("pixel_nn", "int64"), ("pixel_similarity", "float32"), ("combined", "int64"), ("combined_score", "float32"))}
LEAKAGE_QUEUE = _npy("leakage/queue.npy", "int64", ("n_test",), "analyze", _ANALYZE, below="n_test")
LEAKAGE_QUEUE_SCORE = _npy("leakage/queue_score.npy", "float32", ("n_test",), "analyze", _ANALYZE)
LEAKAGE_SUMMARY = _json("leakage/leakage.json", "analyze", _ANALYZE,
                        keys={"k": int, "n_train": int, "n_test": int, "pixels": dict})

ARTIFACTS: tuple[Artifact, ...] = tuple(value for value in (*globals().values(), *LEAKAGE_LISTS.values())
                                        if isinstance(value, Artifact))
