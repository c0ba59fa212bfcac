"""`methods-eval` and `plant-label-noise`: every attribution method on the same yardsticks (LDS, support, mislabels, cost)."""
from __future__ import annotations

import argparse
from pathlib import Path

from .args import (TqdmProgress, add_dataset_args, add_device_arg, add_force_arg, non_negative_int, positive_int,
                   refuse_existing, unit_fraction)


def cmd_methods_eval(args: argparse.Namespace) -> dict:
    from backend.attribution.yardsticks import MODES, evaluate_methods
    from backend.store.run_dir import Run
    from backend.store.schema import MANIFEST, METHODS_EVAL

    run = Run(args.run)
    heldout_dir = args.heldout or run.dir / "heldout"
    if not MANIFEST.path(heldout_dir).is_file():
        raise ValueError(f"{heldout_dir} is no run: train held-out models first with "
                         f"`python -m precompute train --seed SEED+1 --out {heldout_dir}` (the run's flags), or pass --heldout")
    if args.k_max is not None and not 0 < args.k_max < run.n_train:
        raise ValueError(f"--k-max {args.k_max} is out of range: give 1..{run.n_train - 1}")
    heldout = Run(heldout_dir)
    if args.validation_models and args.validation_models >= len(heldout.masks):
        raise ValueError(f"--validation-models {args.validation_models} leaves no test models of {heldout_dir}'s "
                         f"{len(heldout.masks)}: give at most {len(heldout.masks) - 1}")
    modes = MODES if args.modes is None else () if args.modes == "none" else tuple(args.modes.split(","))
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise ValueError(f"--modes {args.modes}: unknown mode {bad[0]!r}, give a comma-separated subset of {','.join(MODES)}, or none")
    names = args.methods.split(",") if args.methods else None
    selections = {}
    if args.select:
        from backend.attribution.selection import select_and_attribute
        from backend.attribution.store import available

        if not args.validation_models:
            raise ValueError("--select chooses settings on validation models: give --validation-models N too "
                             f"(e.g. {len(heldout.masks) // 2}, half of {heldout_dir}'s models)")
        with TqdmProgress("methods-eval (select on validation)") as bar:
            selections = select_and_attribute(run, heldout, names or available(run), args.validation_models,
                                              device=args.device, progress=bar)
    with TqdmProgress("methods-eval") as bar:
        report = evaluate_methods(run, heldout, methods=names, n_targets=args.targets, n_models=args.models,
                                  budget=args.budget, k_max=args.k_max, modes=modes,
                                  validation_models=args.validation_models, selections=selections,
                                  device=args.device, progress=bar)
    return {"written": str(METHODS_EVAL.path(run.dir)), "targets": len(report["targets"]),
            "methods": {name: {"lds": m["lds"]["mean"], "lds_validation": m.get("lds_validation", {}).get("mean"),
                               "chosen": m.get("selection", {}).get("chosen"),
                               "seconds": {mode: s["seconds"] for mode, s in m["support"].items()},
                               "mislabel_auc": m.get("mislabel_auc")} for name, m in report["methods"].items()}}


def cmd_plant_label_noise(args: argparse.Namespace) -> dict:
    from backend.datasets import load_dataset, write_npz_dataset
    from backend.datasets.planted import plant_label_noise

    if args.out.is_dir():
        raise ValueError(f"--out {args.out} is a directory: give the .npz file to write, e.g. {args.out / 'noisy.npz'}")
    refuse_existing(args.out, "--out", args.force)
    ds = load_dataset(args.dataset, args.data_dir, args.download)
    arrays, truth = plant_label_noise(ds, args.fraction, args.seed)
    path = write_npz_dataset(args.out, arrays)
    return {"out": str(path), "dataset": f"npz:{path}", "source": args.dataset, "fraction": args.fraction,
            "seed": args.seed, "n_flipped": int(len(truth["flipped_train"])),
            "next": f"python -m precompute all --dataset npz:{path} --out data/runs/noisy"}


def register(sub) -> None:
    from backend.attribution.yardsticks import DEFAULT_EVAL_MODELS, DEFAULT_TARGETS

    p = sub.add_parser("methods-eval", help="judge every stored attribution method by the same yardsticks",
                       description="For every method with stored scores (`attribute`): LDS on the held-out models, "
                                   "certified data-removal and mislabel support by bisection with retraining on the "
                                   "same test targets, mislabel-detection AUC on a plant-label-noise run, and cost. "
                                   "Writes RUN/attribution/methods_eval.json; retrainings are kept in the retrain "
                                   "store, so a rerun trains nothing it has trained before.")
    p.add_argument("--run", type=Path, required=True, help="run directory")
    p.add_argument("--heldout", type=Path, default=None, help="held-out run (default RUN/heldout)")
    p.add_argument("--validation-models", type=non_negative_int, default=0,
                   help="judge LDS on the held-out models after the first N (test), and report it on the first N "
                        "apart (validation: choose a method's settings there, e.g. `attribute --damping`; default 0, "
                        "every held-out model is test)")
    p.add_argument("--select", action="store_true",
                   help="first choose each method's main knob from its small grid (backend/attribution/selection.py: "
                        "trak's ridge, influence's last-layer damping, tracin's checkpoints, representation's kept "
                        "share, ssl-esvm's C) by its LDS on the --validation-models, and store its scores at that "
                        "setting (`attribute`); the LDS reported is then the test models', which chose nothing. "
                        "With --methods, a listed method not yet scored is scored")
    p.add_argument("--methods", default=None, help="comma-separated methods (default every method with stored scores)")
    p.add_argument("--targets", type=positive_int, default=DEFAULT_TARGETS,
                   help=f"shared test targets of the support search: the first N the control models get right (default {DEFAULT_TARGETS})")
    p.add_argument("--models", type=positive_int, default=DEFAULT_EVAL_MODELS,
                   help=f"models per bisection step (default {DEFAULT_EVAL_MODELS})")
    p.add_argument("--budget", type=positive_int, default=7, help="bisection steps (default 7)")
    p.add_argument("--k-max", type=positive_int, default=None, help="largest k searched (default min(1280, n_train - 1))")
    p.add_argument("--modes", default=None, help="support modes, a comma-separated subset of remove,mislabel (default both), or none: "
                        "LDS, mislabel AUC and cost alone, without the support search's retraining")
    add_device_arg(p)
    p.set_defaults(func=cmd_methods_eval)

    p = sub.add_parser("plant-label-noise", help="write a dataset with a known fraction of training labels flipped",
                       description="Flip the labels of a fraction of the training images, each to another class, and "
                                   "write the result as an npz dataset with the flipped positions recorded as "
                                   "flipped_train (and original_labels). Train a run on it with --dataset npz:OUT; "
                                   "`methods-eval` then reports each method's mislabel-detection AUC.")
    add_dataset_args(p)
    p.add_argument("--fraction", type=unit_fraction("the fraction of training labels to flip, e.g. 0.05"), default=0.05,
                   help="fraction of training labels flipped (default 0.05)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="which labels are flipped and to what (default 0)")
    p.add_argument("--out", type=Path, required=True, help="the .npz file to write, e.g. data/noisy.npz")
    add_force_arg(p, "--out")
    p.set_defaults(func=cmd_plant_label_noise)
