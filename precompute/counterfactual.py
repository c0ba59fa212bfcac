"""`control`, `counterfactual`, `support` and `cf-eval`: retraining experiments that check the datamodels."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .args import TqdmProgress, add_device_arg, add_force_arg, non_negative_int, positive_int, refuse_existing

REMOVE_HELP = "top:K | bottom:K | random-class:K | random:K | train:I,train:J-K,... (training image names)"


def _ensure_control(run, args: argparse.Namespace) -> np.ndarray:
    from backend.training.control import ensure_control
    with TqdmProgress("control models") as bar:
        return ensure_control(run, args.control_models, device=args.device, progress=bar)


def parse_removal(spec: str, run, target: int, seed: int) -> np.ndarray:
    """Training indices for a --remove spec (REMOVE_HELP), before validation."""
    from backend.store.rows import read_row
    from backend.counterfactuals.predict import load_weights
    from backend.counterfactuals.removal import HEURISTICS, RemovalError, removal_set
    from backend.store.targets import TargetError, parse_targets, target_name

    kind, _, value = spec.partition(":")
    if kind == "train":
        try:
            columns = parse_targets(spec, run.n_train, run.n_test)
        except TargetError as exc:
            raise RemovalError(f"bad --remove {spec[:60]!r}: {exc}") from None
        tested = [c for c in columns if c >= run.n_train]
        if tested:
            raise RemovalError(f"bad --remove: {target_name(tested[0], run.n_train)} is a test image; a removal set "
                               "holds training images, e.g. train:3,train:17")
        return np.array(columns, dtype=np.int64)  # train:i is column i
    if kind not in HEURISTICS or not value.isdigit() or int(value) == 0:
        raise RemovalError(f"bad --remove {spec!r}: write {REMOVE_HELP}, with K a positive integer")
    if int(value) > run.n_train:
        raise RemovalError(f"bad --remove {spec!r}: K is more than the run's {run.n_train} training images")
    labels = np.asarray(run.labels)
    rng = np.random.default_rng(np.random.SeedSequence([seed, target]))
    return removal_set(kind, int(value), read_row(load_weights(run), target), labels[:run.n_train], int(labels[target]), rng)


def cmd_control(args: argparse.Namespace) -> dict:
    from backend.store.artifacts import read_json
    from backend.store.errors import RunError
    from backend.store.run_dir import Run
    from backend.store.schema import CONTROL_FEATURES, CONTROL_META
    from backend.training.control import load_control_features
    run = Run(args.run)
    margins = _ensure_control(run, args)
    meta = read_json(run.dir, CONTROL_META)
    features = load_control_features(run)  # checked here, not first by the analyze stage that uses them
    if features.shape[1] != meta["features_dim"]:
        raise RunError(f"{CONTROL_FEATURES.path(run.dir)} has {features.shape[1]} features but {CONTROL_META.name} says "
                       f"{meta['features_dim']}: delete both and rebuild them with `{CONTROL_META.command(run.dir)}`")
    return {"run": str(run.dir), "n_control": len(margins), "mean_test_accuracy": meta["mean_test_accuracy"],
            "features_dim": int(features.shape[1])}


def cmd_counterfactual(args: argparse.Namespace) -> dict:
    from backend.store.rows import read_row
    from backend.counterfactuals.predict import actual_margin, load_weights, predict_removal, retrain
    from backend.counterfactuals.removal import competitor_class, default_max_remove, validate_removal
    from backend.store.run_dir import Run
    from backend.store.targets import target_column, target_name

    run = Run(args.run)
    target = target_column(args.target, run.n_train, run.n_test)
    labels = np.asarray(run.labels)
    removed = validate_removal(parse_removal(args.remove, run, target, args.seed), labels[:run.n_train], run.class_names,
                               args.max_remove or default_max_remove(run.n_train))
    control = _ensure_control(run, args).mean(axis=0, dtype=np.float64)
    prediction = predict_removal(run, target, removed, control)
    relabel = None
    if args.relabel:
        to = competitor_class(read_row(load_weights(run), target), labels[:run.n_train], int(labels[target]), len(run.class_names))
        relabel = np.full(len(removed), to)
    with TqdmProgress("retraining") as bar:
        cf = retrain(run, removed, relabel, args.models, args.device, bar, target=target)
    margin = actual_margin(cf, target)
    test_mean = cf.margins[:, run.n_train:].mean(axis=0, dtype=np.float64)
    return {
        "target": args.target, "label": run.class_names[labels[target]], "remove": args.remove,
        "n_changed": len(removed), "changed": [target_name(int(i), run.n_train) for i in removed],
        "relabelled_to": None if relabel is None else run.class_names[int(relabel[0])],
        "control_margin": prediction.control_margin,
        "predicted": None if relabel is not None else {
            "margin": prediction.predicted_margin, "delta": prediction.delta, "flips": prediction.flips,
            "test_flips": int(len(prediction.flipped))},
        "actual": {"margin": margin, "delta": margin - prediction.control_margin,
                   "flips": bool((prediction.control_margin > 0) != (margin > 0)),
                   "test_flips": int(((prediction.test_control > 0) != (test_mean > 0)).sum()),
                   "model_margins": [round(float(m), 4) for m in cf.margins[:, target]],
                   "n_models": len(cf.margins), "from_log": cf.cached, "key": cf.request.key},
        "reused": cf.reused, "trained_now": cf.trained_now,
    }


def cmd_support(args: argparse.Namespace) -> dict:
    from backend.counterfactuals.support import DEFAULT_SUPPORT_MODELS, certified_supports, save_support_summary
    from backend.store.run_dir import Run
    from backend.store.targets import parse_targets

    run = Run(args.run)
    targets = parse_targets(args.targets, run.n_train, run.n_test)
    if args.k_max is not None and not 0 < args.k_max < run.n_train:
        raise ValueError(f"--k-max {args.k_max} is out of range: give 1..{run.n_train - 1}")
    control = _ensure_control(run, args).mean(axis=0, dtype=np.float64)
    with TqdmProgress("certified support") as bar:
        records = certified_supports(run, targets, args.models or DEFAULT_SUPPORT_MODELS, mislabel=args.mislabel, k_max=args.k_max,
                                     budget=args.budget, check=args.check, device=args.device, progress=bar)
    summary, path = save_support_summary(run, records, control, args.targets, mislabel=args.mislabel)
    return {"mode": summary["mode"], "search": summary["search"],
            "heuristic_median_all_test": summary["heuristic_all_test"]["median"], "written": str(path)}


def cmd_cf_eval(args: argparse.Namespace) -> dict:
    from backend.counterfactuals.evaluation import evaluate_counterfactuals, sample_test_targets
    from backend.store.schema import COUNTERFACTUAL_EVAL
    from backend.counterfactuals.removal import HEURISTICS
    from backend.store.run_dir import Run
    from backend.store.targets import parse_targets

    run = Run(args.run)
    if args.targets.isdigit() and int(args.targets) == 0:
        raise ValueError("bad --targets 0: give a number of test targets of at least 1, or target names like test:0-9")
    targets = (sample_test_targets(run, int(args.targets), args.seed) if args.targets.isdigit()
               else parse_targets(args.targets, run.n_train, run.n_test))
    refuse_existing(COUNTERFACTUAL_EVAL.path(run.dir), "the run's", args.force)
    ks = _int_list(args.k, "--k")
    heuristics = tuple(h.strip() for h in args.heuristics.split(",") if h.strip())
    unknown = [h for h in heuristics if h not in HEURISTICS]
    if unknown or not heuristics:
        raise ValueError(f"bad --heuristics {args.heuristics!r}: choose from {','.join(HEURISTICS)}")
    _ensure_control(run, args)
    with TqdmProgress("retraining") as bar:
        result = evaluate_counterfactuals(run, targets, ks, args.models, heuristics, seed=args.seed, device=args.device,
                                          progress=bar)
    return {k: result[k] for k in ("overall", "per_heuristic", "n_counterfactuals", "n_skipped", "n_models", "ks")} | {
        "n_targets": len(targets), "written": str(COUNTERFACTUAL_EVAL.path(run.dir))}


def _int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"bad {flag} {text!r}: write positive integers separated by commas, e.g. 10,20,40") from None
    if not values or min(values) < 1:
        raise ValueError(f"bad {flag} {text!r}: write positive integers separated by commas, e.g. 10,20,40")
    return values


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", type=Path, required=True, help="run directory with datamodels (weights.npy)")
    add_device_arg(p, help="auto uses CUDA when present (default auto)")
    p.add_argument("--control-models", type=positive_int, default=64,
                   help="models trained on the full training set as the baseline, built once per run (default 64)")


def register(sub) -> None:
    p = sub.add_parser("control", help="train the control models (full training set) once per run",
                       description="Train N models on the full training set: control_margins.npy, control_features.npy "
                                   "(penultimate features of model 0) and control.json. Existing ones are kept.")
    _common(p)
    p.set_defaults(func=cmd_control)

    p = sub.add_parser("counterfactual", help="predict, then retrain to check, the effect of removing training images",
                       description="Predict a target's margin without a set of training images (control mean − Σ weights), "
                                   "retrain N models without them (or with them relabelled) and print both.")
    _common(p)
    p.add_argument("--target", required=True, help="train:i or test:j, e.g. test:42")
    p.add_argument("--remove", required=True, help=f"the set: {REMOVE_HELP}; top:K is the K largest positive weights "
                   "(bottom:K the K most negative), fewer when the datamodel has fewer: a zero weight is never removed")
    p.add_argument("--models", type=positive_int, default=8, help="models to retrain (default 8)")
    p.add_argument("--relabel", action="store_true",
                   help="relabel the set to the target's competing class (read from its datamodel) instead of removing it")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the random heuristics (default 0)")
    p.add_argument("--max-remove", type=positive_int, default=None, help="largest set accepted (default min(1280, n_train/2))")
    p.set_defaults(func=cmd_counterfactual)

    p = sub.add_parser("support", help="certified data support (brittleness) of targets by bisection with retraining",
                       description="For each target, bisect over k: retrain N models without its top-k positive-weight "
                                   "training images and accept k when their mean margin is below zero (App. F.3). "
                                   "Results are stored per target in RUN/support/; a rerun resumes.")
    _common(p)
    p.add_argument("--targets", required=True, help="targets, e.g. test:0-99")
    p.add_argument("--mislabel", action="store_true", help="relabel the top-k to the competing class instead of removing them")
    p.add_argument("--models", type=positive_int, default=None,
                   help="models per bisection step (default backend.counterfactuals.support.DEFAULT_SUPPORT_MODELS, 16)")
    p.add_argument("--budget", type=positive_int, default=7, help="bisection steps (default 7)")
    p.add_argument("--k-max", type=positive_int, default=None, help="largest k searched (default min(1280, n_train - 1))")
    p.add_argument("--check", action="store_true",
                   help="retrain fresh models (other seeds) without each certified support and record their mean margin")
    p.set_defaults(func=cmd_support)

    p = sub.add_parser("cf-eval", help="predicted vs actual margin change over many removals (the paper's Figure 8)",
                       description="Targets × removal sizes × heuristics: retrain without each set and report Pearson and "
                                   "Spearman of predicted vs actual margin change, overall and per heuristic.")
    _common(p)
    p.add_argument("--targets", default="30", help="a number of random test targets, or target names (default 30)")
    p.add_argument("--k", default="10,20,40,80,160", help="removal sizes (default 10,20,40,80,160)")
    p.add_argument("--heuristics", default="top,bottom,random-class,random", help="which removal heuristics (default all four)")
    p.add_argument("--models", type=positive_int, default=8, help="models per counterfactual (default 8)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the target sample and random sets (default 0)")
    add_force_arg(p, "the run's counterfactual_eval.json")
    p.set_defaults(func=cmd_cf_eval)
