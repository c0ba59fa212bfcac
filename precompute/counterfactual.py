"""`control`, `counterfactual` and `support`: retraining experiments that check the datamodels, asked through the
public API (backend.api) by target names as the dashboard asks them (a layers contract holds this module to it);
`cf-eval`, the stage that scores many of them, is cf_eval.py."""
from __future__ import annotations

import argparse
from pathlib import Path

from .args import TqdmProgress, add_device_arg, non_negative_int, positive_int

REMOVE_HELP = "top:K | bottom:K | random-class:K | random:K | train:I,train:J-K,... (training image names)"


def train_control(api, args: argparse.Namespace) -> None:
    """Top up the run's control models to --control-models (a bar while they train)."""
    with TqdmProgress("control models") as bar:
        api.train_control(args.control_models, device=args.device, progress=bar)


def parse_removal(spec: str, api, target: str, seed: int) -> list[str]:
    """Training image names for a --remove spec (REMOVE_HELP), before validation."""
    from backend.api import REMOVAL_HEURISTICS, RemovalError, TargetError

    kind, _, value = spec.partition(":")
    if kind == "train":
        try:
            names = api.target_list(spec)
        except TargetError as exc:
            raise RemovalError(f"bad --remove {spec[:60]!r}: {exc}") from None
        tested = [name for name in names if name.startswith("test:")]
        if tested:
            raise RemovalError(f"bad --remove: {tested[0]} is a test image; a removal set holds training images, "
                               "e.g. train:3,train:17")
        return names
    if kind not in REMOVAL_HEURISTICS or not value.isdigit() or int(value) == 0:
        raise RemovalError(f"bad --remove {spec!r}: write {REMOVE_HELP}, with K a positive integer")
    if int(value) > api.run.n_train:
        raise RemovalError(f"bad --remove {spec!r}: K is more than the run's {api.run.n_train} training images")
    return api.removal(target, kind, int(value), seed)


def cmd_control(args: argparse.Namespace) -> dict:
    from backend.api import open_run
    api = open_run(args.run)
    train_control(api, args)
    return {"run": str(api.run.dir)} | api.control_summary()


def cmd_counterfactual(args: argparse.Namespace) -> dict:
    from backend.api import open_run

    api = open_run(args.run)
    api.require_fitted([args.target])  # a bad or unfitted target is refused before the removal set is read
    changed = api.check_removal(parse_removal(args.remove, api, args.target, args.seed), args.max_remove)
    deltas = api.removal_deltas(changed, args.max_remove)  # reads the datamodels before anything trains
    train_control(api, args)
    with TqdmProgress("retraining") as bar:
        found = api.verify(args.target, changed, args.models, args.device, bar, relabel=args.relabel,
                           max_remove=args.max_remove, deltas=deltas)
    prediction = found.prediction
    return {
        "target": args.target, "label": api.label(args.target), "remove": args.remove,
        "n_changed": len(changed), "changed": changed, "relabelled_to": found.relabelled_to,
        "control_margin": prediction.control_margin,
        "predicted": None if found.relabelled_to is not None else {
            "margin": prediction.predicted_margin, "delta": prediction.delta, "flips": prediction.flips,
            "test_flips": len(prediction.flipped_test)},
        "actual": {"margin": found.actual_margin, "delta": found.actual_delta, "flips": found.actual_flips,
                   "test_flips": found.test_flips, "model_margins": [round(m, 4) for m in found.margins],
                   "n_models": len(found.margins), "from_log": found.trained_now == 0, "key": found.key},
        "reused": found.reused, "trained_now": found.trained_now,
    }


def cmd_support(args: argparse.Namespace) -> dict:
    from backend.api import SUPPORT_MODELS, open_run

    api = open_run(args.run)
    targets = api.target_list(args.targets)
    api.require_fitted(targets)  # before the control models train
    if args.k_max is not None and not 0 < args.k_max < api.run.n_train:
        raise ValueError(f"--k-max {args.k_max} is out of range: give 1..{api.run.n_train - 1}")
    train_control(api, args)
    with TqdmProgress("certified support") as bar:
        records = api.certify_supports(targets, args.models or SUPPORT_MODELS, mislabel=args.mislabel, k_max=args.k_max,
                                       budget=args.budget, check=args.check, device=args.device, progress=bar)
    summary, path = api.write_support_summary(records, args.targets, mislabel=args.mislabel)
    return {"mode": summary["mode"], "search": summary["search"],
            "heuristic_median_all_test": summary["heuristic_all_test"]["median"], "written": str(path)}


def common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", type=Path, required=True, help="run directory with datamodels (weights.npy)")
    add_device_arg(p, help="auto uses CUDA when present (default auto)")
    p.add_argument("--control-models", type=positive_int, default=64,
                   help="models trained on the full training set as the baseline, built once per run (default 64)")


def register(sub) -> None:
    p = sub.add_parser("control", help="train the control models (full training set) once per run",
                       description="Train N models on the full training set: control_margins.npy, control_features.npy "
                                   "(penultimate features of model 0) and control.json. Existing ones are kept.")
    common_args(p)
    p.set_defaults(func=cmd_control)

    p = sub.add_parser("counterfactual", help="predict, then retrain to check, the effect of removing training images",
                       description="Predict a target's margin without a set of training images (control mean − Σ weights), "
                                   "retrain N models without them (or with them relabelled) and print both.")
    common_args(p)
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
    common_args(p)
    p.add_argument("--targets", required=True, help="targets, e.g. test:0-99")
    p.add_argument("--mislabel", action="store_true", help="relabel the top-k to the competing class instead of removing them")
    p.add_argument("--models", type=positive_int, default=None,
                   help="models per bisection step (default backend.counterfactuals.support.DEFAULT_SUPPORT_MODELS, 16)")
    p.add_argument("--budget", type=positive_int, default=7, help="bisection steps (default 7)")
    p.add_argument("--k-max", type=positive_int, default=None, help="largest k searched (default min(1280, n_train - 1))")
    p.add_argument("--check", action="store_true",
                   help="retrain fresh models (other seeds) without each certified support and record their mean margin")
    p.set_defaults(func=cmd_support)
