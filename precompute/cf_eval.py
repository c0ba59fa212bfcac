"""`cf-eval`: the stage that scores the datamodels' counterfactual predictions over many removals (Figure 8)."""
from __future__ import annotations

import argparse

from .args import TqdmProgress, add_force_arg, non_negative_int, positive_int, refuse_existing
from .counterfactual import common_args


def cmd_cf_eval(args: argparse.Namespace) -> dict:
    from backend.api import open_run
    from backend.counterfactuals.evaluation import evaluate_counterfactuals, sample_test_targets
    from backend.store.schema import COUNTERFACTUAL_EVAL
    from backend.counterfactuals.removal import HEURISTICS
    from backend.store.targets import parse_targets, target_name
    from backend.training.control import ensure_control

    api = open_run(args.run)
    run = api.run
    if args.targets.isdigit() and int(args.targets) == 0:
        raise ValueError("bad --targets 0: give a number of test targets of at least 1, or target names like test:0-9")
    targets = (sample_test_targets(run, int(args.targets), args.seed) if args.targets.isdigit()
               else parse_targets(args.targets, run.n_train, run.n_test))
    api.require_fitted([target_name(c, run.n_train) for c in targets])  # before anything trains
    refuse_existing(COUNTERFACTUAL_EVAL.path(run.dir), "the run's", args.force)
    ks = _int_list(args.k, "--k")
    heuristics = tuple(h.strip() for h in args.heuristics.split(",") if h.strip())
    unknown = [h for h in heuristics if h not in HEURISTICS]
    if unknown or not heuristics:
        raise ValueError(f"bad --heuristics {args.heuristics!r}: choose from {','.join(HEURISTICS)}")
    with TqdmProgress("control models") as bar:
        ensure_control(run, args.control_models, device=args.device, progress=bar)
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



def register(sub) -> None:
    p = sub.add_parser("cf-eval", help="predicted vs actual margin change over many removals (the paper's Figure 8)",
                       description="Targets × removal sizes × heuristics: retrain without each set and report Pearson and "
                                   "Spearman of predicted vs actual margin change, overall and per heuristic.")
    common_args(p)
    p.add_argument("--targets", default="30", help="a number of random test targets, or target names (default 30)")
    p.add_argument("--k", default="10,20,40,80,160", help="removal sizes (default 10,20,40,80,160)")
    p.add_argument("--heuristics", default="top,bottom,random-class,random", help="which removal heuristics (default all four)")
    p.add_argument("--models", type=positive_int, default=8, help="models per counterfactual (default 8)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the target sample and random sets (default 0)")
    add_force_arg(p, "the run's counterfactual_eval.json")
    p.set_defaults(func=cmd_cf_eval)
