"""`import-datamodels-data`: the published CIFAR-10 datamodels release as a run (backend.importers.release)."""
from __future__ import annotations

import argparse
from pathlib import Path

from . import report
from .args import TqdmProgress, non_negative_int


def cmd_import(args: argparse.Namespace) -> dict:
    from backend.importers.release import import_release
    from backend.store.provenance import code_version

    with TqdmProgress("import-datamodels-data") as bar:
        summary = import_release(args.release, args.pct, args.cifar_dir, args.out, convention=args.convention,
                                 dtype=args.dtype, heldout_models=args.heldout_models, progress=bar,
                                 code_version=code_version())
    check = summary.get("convention_check")
    if check:
        for name in ("standardized", "raw"):
            chosen = " (chosen)" if name == summary["convention"] else ""
            report.say(f"convention {name}{chosen}: MSE {check[name]['mse']:.4g}, mean error {check[name]['mean_error']:+.4g} "
                       f"on {check['models']:,} evaluation models x {check['targets']:,} targets")
        other = "raw" if summary["convention"] == "standardized" else "standardized"
        if check[other]["mse"] < check[summary["convention"]]["mse"]:
            report.say(f"warning: --convention {other} predicts the evaluation models better: check the release's convention")
    return summary


def register(sub) -> None:
    p = sub.add_parser("import-datamodels-data", help="import the published datamodels-data release (CIFAR-10) as a run",
                       description="Build a run from the datamodels-data release of Ilyas et al. (2022): images and "
                                   "labels from the CIFAR-10 binaries, masks and margins memory-mapped in place from the "
                                   "release (not copied), its last --heldout-models models as RUN/heldout, and its "
                                   "datamodels transposed into weights.npy. Then `eval --run OUT --heldout OUT/heldout`.")
    p.add_argument("--release", type=Path, required=True,
                   help="the release's dataset folder, holding data/ and/or datamodels/ (e.g. datamodels-data/cifar)")
    p.add_argument("--pct", type=non_negative_int, default=50, help="α in percent: 10, 20, 50 or 75 (default 50)")
    p.add_argument("--cifar-dir", type=Path, default=Path("data") / "cifar10",
                   help="folder of the CIFAR-10 binary release (cifar-10-batches-bin; default data/cifar10)")
    p.add_argument("--out", type=Path, required=True, help="run directory to create (e.g. data/runs/cifar10-dm50)")
    p.add_argument("--convention", choices=("standardized", "raw"), default="standardized",
                   help="what the published weights act on: standardised masks (fast_l1's, the default) or raw 0/1 masks")
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                   help="storage type of weights.npy (default float32; float16 halves it)")
    p.add_argument("--heldout-models", type=non_negative_int, default=10_000,
                   help="the release's last models kept as the evaluation run OUT/heldout (default 10,000, as published)")
    p.set_defaults(func=cmd_import)
