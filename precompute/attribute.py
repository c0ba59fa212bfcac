"""`attribute`: one attribution method's scores of every test target against every training image."""
from __future__ import annotations

import argparse
from pathlib import Path

from .args import (MAX_EPOCHS, MAX_MODELS, TqdmProgress, add_device_arg, bounded_int, non_negative_float,
                   positive_float, positive_int)


def cmd_attribute(args: argparse.Namespace) -> dict:
    from backend.attribution import methods
    from backend.attribution.compute import attribute
    from backend.store.run_dir import Run

    run = Run(args.run)
    method = methods.make(args.method, run, device=args.device, **method_options(args))
    with TqdmProgress(f"attribute ({args.method})") as bar:
        meta = attribute(run, method, block_rows=args.block_rows, progress=bar)
    return {"run": str(run.dir), "method": args.method, "seconds": meta["seconds"], "bytes": meta["bytes"],
            "models": meta["models"]}


# Method-specific flags: flag -> (the methods that take it, its keyword option). A flag left unset keeps
# the method's default; one given to a method that does not take it is refused.
METHOD_OPTIONS = {
    "proj_dim": (("trak",), "proj_dim"),
    "proj_type": (("trak",), "proj_type"),
    "models": (("trak",), "models"),
    "damping": (("trak", "influence"), "damping"),
    "influence_params": (("influence",), "influence_params"),
    "checkpoints": (("tracin",), "checkpoints"),
    "top_fraction": (("representation",), "top_fraction"),
    "esvm_score": (("ssl-esvm",), "score"),
    "esvm_c": (("ssl-esvm",), "c"),
    "ssl_epochs": (("ssl-esvm",), "epochs"),
    "ssl_temperature": (("ssl-esvm",), "temperature"),
}


def method_options(args: argparse.Namespace) -> dict:
    """The method-specific flags given, as make()'s options; ValueError (exit 2) if one does not apply."""
    options = {}
    for dest, (methods, keyword) in METHOD_OPTIONS.items():
        value = getattr(args, dest)
        if value is None:
            continue
        if args.method not in methods:
            raise ValueError(f"--{dest.replace('_', '-')} applies to --method {' or '.join(methods)}, "
                                             f"not {args.method}: drop it")
        options[keyword] = value
    if args.esvm_score == "l2" and args.esvm_c is not None:
        raise ValueError("--esvm-c is the SVM's C and --esvm-score l2 fits no SVM: drop --esvm-c or use --esvm-score svm")
    return options


def add_gradient_flags(p: argparse.ArgumentParser) -> None:
    from backend.attribution import defaults

    p.add_argument("--proj-dim", type=bounded_int(1, 1 << 20, "projection dimension, e.g. 2048"),
                   help=f"trak: dimension of the random gradient projection (default {defaults.TRAK_PROJ_DIM})")
    p.add_argument("--proj-type", choices=defaults.TRAK_PROJECTIONS, help="trak: random projection entries (default gaussian)")
    p.add_argument("--models", type=bounded_int(1, MAX_MODELS, "number of ensemble models, e.g. 10"),
                   help=f"trak: ensemble size, the run's α-subset models 0..K-1 retrained (default {defaults.TRAK_MODELS})")
    p.add_argument("--damping", type=non_negative_float("a damping"),
                   help=f"influence: λ added to the Hessian (default {defaults.INFLUENCE_DAMPING['all']} with "
                        f"--influence-params all, {defaults.INFLUENCE_DAMPING['last']:g} with last); "
                        f"trak: ridge λ · tr(ΦᵀΦ)/d added to the kernel ΦᵀΦ, relative to its mean eigenvalue "
                        f"(default {defaults.TRAK_DAMPING})")
    p.add_argument("--influence-params", choices=defaults.INFLUENCE_PARAMS,
                   help="influence: all parameters by conjugate gradient, or the last layer by an exact solve (default all)")
    p.add_argument("--checkpoints", type=bounded_int(1, MAX_EPOCHS, "number of checkpoints, e.g. 5"),
                   help="tracin: checkpoints spread over the control model's training (default every epoch)")


def register(sub) -> None:
    from backend.attribution.methods import METHODS
    from backend.attribution.representation import TOP_FRACTION
    from backend.attribution.ssl_esvm import DEFAULT_C

    p = sub.add_parser("attribute", help="one attribution method's scores for every test target",
                       description="Score every training image's attribution to every test target's margin under one "
                                   "method; writes attribution/<method>/scores.npy and meta.json. An interrupted run "
                                   "resumes from its finished blocks.")
    p.add_argument("--run", type=Path, required=True, help="run directory")
    p.add_argument("--method", required=True, choices=sorted(METHODS), help="attribution method")
    p.add_argument("--block-rows", type=positive_int, default=256, help="test targets scored per resumable block (default 256)")
    add_device_arg(p)
    add_gradient_flags(p)
    p.add_argument("--top-fraction", type=positive_float(1.0, "the share of training images kept per target, e.g. 0.05"),
                   default=None, help=f"representation: the share of training images kept per target by |score|, "
                                      f"the rest 0 (default {TOP_FRACTION})")
    ssl = p.add_argument_group("ssl-esvm", "seed 002's self-supervised encoder and exemplar SVM")
    ssl.add_argument("--esvm-score", choices=["svm", "l2"], default=None,
                     help="score by the exemplar SVM's signed distance (svm, default) or by ℓ2 distance of embeddings (l2)")
    ssl.add_argument("--esvm-c", type=positive_float(1e6, "a positive SVM regularisation C, e.g. 0.1"), default=None,
                     help=f"the exemplar SVM's C (default {DEFAULT_C:g}, chosen on validation; the paper's 0.1)")
    ssl.add_argument("--ssl-epochs", type=bounded_int(1, 100_000, "number of SimCLR epochs"), default=None,
                     help="epochs of the SimCLR encoder (default 100; a stored encoder of the same settings is reused)")
    ssl.add_argument("--ssl-temperature", type=positive_float(100.0, "a positive NT-Xent temperature, e.g. 0.5"),
                     default=None, help="the NT-Xent loss's temperature (default 0.5)")
    p.set_defaults(func=cmd_attribute)
