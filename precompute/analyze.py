"""`analyze`: control models, dataset structure and leakage candidates, from a run's datamodels."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from .args import TqdmProgress, add_device_arg, positive_int


def cmd_analyze(args: argparse.Namespace) -> dict:
    from backend.training.control import ensure_control
    from backend.leakage.analysis import analyze_leakage
    from backend.store.artifacts import write_json
    from backend.store.atomic import transaction
    from backend.store.run_dir import Run
    from backend.store.schema import ANALYSIS

    from backend.structure.analyze import analyze_structure

    run = Run(args.run)
    summary: dict = {"run": str(run.dir)}
    started = time.time()
    with TqdmProgress("control models") as bar:
        ensure_control(run, n_control=args.n_control, device=args.device, progress=bar)
    with transaction(run.dir, "analyze"):  # structure/, leakage/ and analysis.json appear together
        with TqdmProgress("structure") as bar:
            summary["structure"] = analyze_structure(run, args.components, args.clusters_per_class, bar, args.device)
        with TqdmProgress("leakage") as bar:
            summary["leakage"] = analyze_leakage(run, bar, device=args.device)
        summary["seconds"] = round(time.time() - started, 1)
        write_json(run.dir, ANALYSIS, summary)
    return summary


def register(sub) -> None:
    p = sub.add_parser("analyze", help="control models, PCA/spectral structure and leakage candidates",
                       description="Train the full-training-set control models (control_margins.npy), then write the "
                                   "structure/ artifacts (PCA, spectral clusters, similar targets) and the leakage "
                                   "candidate lists; summary in analysis.json.")
    p.add_argument("--run", type=Path, required=True, help="run directory with fitted datamodels")
    add_device_arg(p)
    p.add_argument("--n-control", type=positive_int, default=64, help="models trained on the full training set (default 64)")
    p.add_argument("--components", type=positive_int, default=50, help="principal components of the datamodel embeddings (default 50)")
    p.add_argument("--clusters-per-class", type=positive_int, default=5, help="spectral clusters per class (default 5)")
    p.set_defaults(func=cmd_analyze)
