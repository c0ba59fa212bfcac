"""The yardsticks every attribution method is judged by, read from its stored scores alone.

* LDS (Ilyas et al. 2022; Park et al. 2023): a method's scores predict a held-out model's margin on test
  target j as Σ_{i∈S} score_ji (Spearman ignores any constant, so no bias is needed); the LDS of j is the
  Spearman correlation of that prediction with the margin measured, over the run's held-out models —
  the same function (backend.datamodels.evaluation.lds_by_block) and models as the datamodels' LDS.
* Data-removal and mislabel support (seed 002, Algorithm 1; Ilyas et al. App. F.3.1): the certified
  bisection of backend.counterfactuals.support over each method's ranking (training images by score,
  top positive first), on one set of shared test targets: the first `n_targets` test targets the
  run's control models classify correctly (mean margin > 0), so each has a support to find.
  Retrainings go through the run's retrain store: a removal set two methods share trains once.
* Mislabel detection (dattri's noisy-label benchmark): on a run trained on a `plant-label-noise`
  dataset, the ROC AUC of a method's self-scores (one per training image, stored by `attribute` beside its
  scores, higher = likelier mislabelled) against the flipped set; None for scores stored without them.
* Cost: seconds, models trained and bytes stored, from each method's meta.json.
* Validation and test (issue 26): with `validation_models` N, LDS is reported twice: on held-out models
  0..N-1 (`lds_validation`, the models to choose a method's settings on) and on the rest (`lds`, the test
  LDS, of models that chose nothing), so a setting picked by its validation LDS is judged on other models.

`evaluate_methods` runs them all and writes attribution/methods_eval.json (schema METHODS_EVAL).
"""
from __future__ import annotations

import os
import time
from typing import Callable

import numpy as np

from backend.attribution import store
from backend.attribution.methods import METHODS
from backend.attribution.selection import setting_label
from backend.counterfactuals.support import (DEFAULT_BUDGET, brittleness_cdf, default_k_max, search_supports)
from backend.datamodels.evaluation import check_heldout, lds_by_block
from backend.progress import Progress, part
from backend.store.artifacts import read_json, write_json
from backend.store.errors import RunError
from backend.store.run_dir import Run
from backend.store.schema import CLI, METHODS_EVAL
from backend.training.control import control_mean, ensure_control

DEFAULT_TARGETS = 30
# Models per bisection step: fewer than `support`'s 16 so that every method's search fits in minutes on digits
# (seed 002 trains the same models per step for every method, which this keeps).
DEFAULT_EVAL_MODELS = 8
MODES = ("remove", "mislabel")


def method_lds(scores: np.ndarray, heldout: Run, n_train: int, models: slice = slice(None)) -> np.ndarray:
    """Per-test-target LDS, float64 (n_test,), of scores (n_test, n_train) on the held-out run's models
    (rows `models` of its masks and margins)."""
    return rows_lds(lambda rows: scores[rows], heldout, n_train, models)


def rows_lds(score_rows: Callable[[slice], np.ndarray], heldout: Run, n_train: int,
             models: slice = slice(None)) -> np.ndarray:
    """method_lds of scores computed a block of test targets at a time: score_rows(rows) -> (len(rows), n_train)
    for the test targets rows.start..rows.stop-1 (a method's `score`), never all held at once."""
    columns = np.arange(n_train, heldout.n_targets)

    def linear(cols):
        return score_rows(slice(int(cols[0]) - n_train, int(cols[-1]) + 1 - n_train)), np.zeros(len(cols))
    return lds_by_block(linear, heldout.masks[models], heldout.margins[models], n_train, columns)["spearman"]


def shared_targets(run: Run, n: int) -> list[int]:
    """The first n test targets (margins columns) the control models classify correctly on average."""
    control = control_mean(run)
    return [int(c) for c in np.flatnonzero(control[run.n_train:] > 0)[:n] + run.n_train]


def method_supports(run: Run, scores: np.ndarray, targets: list[int], params: dict, *, device: str = "auto",
                    progress: Progress | None = None) -> list[int | None]:
    """Certified support of each target column under a method's scores (n_test, n_train); None: not found."""
    records = search_supports(run, targets, lambda t: np.asarray(scores[t - run.n_train], dtype=np.float64), params,
                              device=device, progress=progress)
    return [r["support"] for r in records]


def support_cdf(supports: list[int | None]) -> dict:
    """{"k": sorted supports found, "fraction": share of targets with support <= k, "never": not found}."""
    values = np.array([np.inf if s is None else s for s in supports], dtype=np.float64)
    ks = np.unique(values[np.isfinite(values)])
    return {"k": ks.tolist(), "fraction": np.round(brittleness_cdf(values, ks), 4).tolist(),
            "never": int((~np.isfinite(values)).sum())}


def smaller_fraction(a: list[int | None], b: list[int | None]) -> float:
    """Share of targets where support a is strictly smaller than b (not found counts as infinite)."""
    x = np.array([np.inf if s is None else s for s in a], dtype=np.float64)
    y = np.array([np.inf if s is None else s for s in b], dtype=np.float64)
    return float((x < y).mean()) if len(x) else float("nan")


def mislabel_auc(scores: np.ndarray, flipped: np.ndarray) -> float:
    """ROC AUC of self-scores (n_train,) against the flipped training positions: dattri's mislabel_detection_auc,
    which inspects training images from the highest self-score down (ties counted half, as roc_auc_score does)."""
    from sklearn.metrics import roc_auc_score

    truth = np.zeros(len(scores), dtype=bool)
    truth[flipped] = True
    return float(roc_auc_score(truth, scores))


def flipped_labels(run: Run) -> np.ndarray | str | None:
    """The training positions a `plant-label-noise` dataset flipped, None for another dataset, or why not."""
    from backend.datasets.planted import npz_ground_truth

    dataset = run.manifest["dataset"]
    truth = npz_ground_truth(dataset["spec"], dataset.get("fingerprint"), ("flipped_train",), "mislabel detection")
    return truth[0] if isinstance(truth, tuple) else truth


def cost(meta: dict) -> dict:
    """Seconds, models used and trained, and bytes of stored scores, from a method's meta.json."""
    models = meta.get("models", {})
    return {"seconds": meta["seconds"], "n_models": models.get("n_models"), "models_trained": models.get("trained"),
            "model_kind": models.get("kind"), "bytes": meta["bytes"]}


def mean_finite(values: np.ndarray) -> float | None:
    ok = np.asarray(values, dtype=np.float64)
    ok = ok[np.isfinite(ok)]
    return float(ok.mean()) if ok.size else None


def evaluate_methods(run: Run, heldout: Run, *, methods: list[str] | None = None, n_targets: int = DEFAULT_TARGETS,
                     n_models: int = DEFAULT_EVAL_MODELS, budget: int = DEFAULT_BUDGET, k_max: int | None = None,
                     modes: tuple[str, ...] = MODES, validation_models: int = 0, selections: dict | None = None,
                     device: str = "auto", progress: Progress | None = None) -> dict:
    """Every yardstick for every method with stored scores (or `methods`); writes attribution/methods_eval.json.

    progress counts one step per method and mode of the support search ("search"), each reporting within.
    An earlier methods_eval.json's `lds_vs_models` points are kept, so a method scored again with another
    number of models (e.g. `trak --models 5`, then 20) adds a point to its curve. Its results for methods
    not judged now are kept too, where they were judged on the same targets, parameters and held-out run
    and their scores are unchanged, so `--methods trak` adds to the table instead of replacing it.
    `selections` ({method: backend.attribution.selection.select_setting's record}) is stored in each method's
    entry as "selection"; an earlier record is kept while the method's scores and the validation split stand.
    """
    check_heldout(run, heldout)
    validation, test = slice(0, validation_models), slice(validation_models, None)
    have = store.available(run)
    names = have if methods is None else list(methods)
    missing = sorted(set(names) - set(have))
    if missing:
        raise RunError(f"{run.dir} has no stored scores for {', '.join(missing)}: compute them first with "
                       f"`{CLI} attribute --run {run.dir} --method {missing[0]}`")
    if not names:
        raise RunError(f"{run.dir} has no attribution scores: compute some first with "
                       f"`{CLI} attribute --run {run.dir} --method datamodels`")
    ensure_control(run, device=device)
    targets = shared_targets(run, n_targets)
    params = {"n_models": n_models, "k_max": k_max or default_k_max(run.n_train), "budget": budget}
    flipped = flipped_labels(run)
    previous = read_json(run.dir, METHODS_EVAL, missing_ok=True) or {}
    # Relative to the run, as metrics.json names it, so a moved run still names its own held-out run.
    heldout_run = os.path.relpath(heldout.dir.resolve(), run.dir.resolve())
    same_split = (previous.get("heldout_run"), previous.get("n_heldout_models"), previous.get("validation_models", 0)) == (
        heldout_run, int(len(heldout.masks)), validation_models)
    same = same_split and (previous.get("targets"), previous.get("support_params")) == (targets, params)
    curve = {name: list(points) for name, points in previous.get("lds_vs_models", {}).items()}
    total = len(names) * len(modes)
    if progress:
        progress(0, total, "search")
    results = {}
    for m, name in enumerate(names):
        scores, meta = store.read_scores(run, name), store.read_meta(run, name)
        lds = method_lds(scores, heldout, run.n_train, test)
        entry = {"lds": {"mean": mean_finite(lds), "n_targets": int(np.isfinite(lds).sum())}, "cost": cost(meta),
                 "config": meta["config"], "support": {}}
        if validation_models:
            chosen_on = method_lds(scores, heldout, run.n_train, validation)
            entry["lds_validation"] = {"mean": mean_finite(chosen_on), "n_targets": int(np.isfinite(chosen_on).sum())}
        earlier = previous.get("methods", {}).get(name, {})
        if name in (selections or {}):
            entry["selection"] = selections[name]
        elif "selection" in earlier and earlier["config"] == meta["config"] and same_split:
            entry["selection"] = earlier["selection"]
        for s, mode in enumerate(modes):
            started = time.time()
            supports = method_supports(run, scores, targets, dict(params, mode=mode), device=device,
                                       progress=part(progress, m * len(modes) + s, 1, total, "search"))
            entry["support"][mode] = {"supports": supports, "cdf": support_cdf(supports),
                                      "seconds": round(time.time() - started, 3)}
        if isinstance(flipped, np.ndarray):
            own = store.read_self_scores(run, name)
            entry["mislabel_auc"] = None if own is None else mislabel_auc(np.asarray(own, dtype=np.float64), flipped)
        point = {"n_models": entry["cost"]["n_models"], "lds": entry["lds"]["mean"], "config": meta["config"]}
        curve[name] = [p for p in curve.get(name, []) if p["config"] != meta["config"]] + [point]
        curve[name].sort(key=lambda p: (p["n_models"] is None, p["n_models"] or 0))
        results[name] = entry
    kept = {name: entry for name, entry in previous.get("methods", {}).items() if same and name not in results
            and name in have and entry.get("config") == store.read_meta(run, name)["config"]}
    results = {name: results.get(name) or kept[name] for name in have if name in results or name in kept}
    judged = [mode for mode in MODES if any(mode in entry["support"] for entry in results.values())]
    pairs = {mode: {a: {b: smaller_fraction(results[a]["support"][mode]["supports"], results[b]["support"][mode]["supports"])
                        for b in results if b != a and mode in results[b]["support"]}
                    for a in results if mode in results[a]["support"]} for mode in judged}
    report = {"heldout_run": heldout_run, "n_heldout_models": int(len(heldout.masks)), "validation_models": validation_models,
              "targets": targets, "target_rule": f"the first {n_targets} test targets the control models classify correctly",
              "support_params": params, "modes": judged, "methods": results, "smaller_support": pairs,
              "mislabel": {"note": flipped} if isinstance(flipped, str) else
              {"n_flipped": int(len(flipped))} if isinstance(flipped, np.ndarray) else
              {"note": "the run's dataset has no planted label noise: train a run on a `plant-label-noise` dataset"},
              "lds_vs_models": curve}
    write_json(run.dir, METHODS_EVAL, report)
    if progress:
        progress(total, total, "search")
    return report


def table_rows(report: dict) -> list[dict]:
    """One row per method of a methods_eval.json: every yardstick and the cost (None where not measured)."""
    n = len(report["targets"])
    rows = []
    for name, m in report["methods"].items():
        row = {"method": name, "setting": setting_label(name, m), "LDS": m["lds"]["mean"],
               "validation LDS": m.get("lds_validation", {}).get("mean")}
        for mode in ("remove", "mislabel"):
            found = [s for s in m["support"].get(mode, {}).get("supports", []) if s is not None]
            row[f"median {mode} support"] = float(np.median(found)) if found else None
            row[f"{mode} found"] = f"{len(found)} / {n}" if mode in m["support"] else None
        row["mislabel AUC"] = m.get("mislabel_auc")
        row.update({"seconds": m["cost"]["seconds"], "models used": m["cost"]["n_models"],
                    "models trained": m["cost"]["models_trained"], "MB stored": m["cost"]["bytes"] / 2**20,
                    "support seconds": sum(s["seconds"] for s in m["support"].values())})
        rows.append(row)
    return rows


def lds_curves(run: Run, report: dict | None) -> dict[str, tuple[list, list]]:
    """LDS against models used, {label: (n_models, mean test LDS)}: the datamodels' sample-complexity curve
    from metrics.json, and every method's points in methods_eval.json (one per configuration scored)."""
    from backend.store.schema import METRICS

    curves = {}
    metrics = read_json(run.dir, METRICS, missing_ok=True) or {}
    points = [p for p in metrics.get("sample_complexity", {}).get("points", []) if "lds" in p]
    if points:
        curves["datamodels (sample complexity)"] = ([p["n_models"] for p in points],
                                                    [p["lds"]["test"].get("mean") for p in points])
    for name, points in (report or {}).get("lds_vs_models", {}).items():
        if len(points) > 1 or name != "datamodels":
            curves[name] = ([p["n_models"] for p in points], [p["lds"] for p in points])
    return curves


def missing_steps(run: Run, report: dict | None) -> list[str]:
    """The commands that fill in what the Methods page lacks: unscored methods, an evaluation, a noisy run."""
    have = store.available(run)
    steps = [f"{CLI} attribute --run {run.dir} --method {name}" for name in sorted(METHODS) if name not in have]
    unjudged = [name for name in have if report is None or name not in report["methods"]]
    if unjudged:
        steps.append(f"{CLI} methods-eval --run {run.dir}   # judges {', '.join(unjudged)}")
    unsearched = [name for name, m in (report or {}).get("methods", {}).items() if not m["support"]]
    if unsearched:
        steps.append(f"{CLI} methods-eval --run {run.dir} --methods {','.join(unsearched)}"
                     "   # the support search `--modes none` skipped")
    stale = [name for name in have if store.read_self_scores(run, name) is None]
    if report is not None and "n_flipped" in report["mislabel"] and stale:
        steps += [f"{CLI} attribute --run {run.dir} --method {name}   # its self-scores, for the mislabel AUC"
                  for name in stale]
        steps.append(f"{CLI} methods-eval --run {run.dir}   # then the mislabel AUC of {', '.join(stale)}")
    if report is not None and "n_flipped" not in report["mislabel"]:
        steps.append(f"{CLI} plant-label-noise --dataset DATASET --fraction 0.05 --out data/noisy.npz"
                     "   # then a run on npz:data/noisy.npz, attribute and methods-eval for mislabel AUC")
    return steps
