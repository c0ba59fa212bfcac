"""`fit`, `eval` and `all`: datamodels from a run's masks and margins, and their held-out quality."""
from __future__ import annotations

import argparse
from pathlib import Path

from .args import ProgressBar, add_train_args, hparam_overrides, open_unit_float, positive_int


def fit_run(run_dir: Path, device: str, val_frac: float, n_lambdas: int, eps: float, seed: int = 0) -> dict:
    from backend.datamodels import fit_datamodels, fit_summary, save_datamodels
    from backend.run_store import Run
    from backend.training import resolve_device

    run = Run(run_dir)
    bar = ProgressBar("fitting", "step")
    bar.start(0)

    def progress(done: int, total: int) -> None:
        if bar.bar.total != total:
            bar.start(total)
        bar(done)

    try:
        fit = fit_datamodels(run.masks, run.margins, run.n_train, val_frac=val_frac, n_lambdas=n_lambdas, eps=eps,
                             seed=seed, device=resolve_device(device), progress=progress)
    finally:
        bar.close()
    save_datamodels(run.dir, fit)
    summary = fit_summary(fit)
    return {"run": str(run.dir), "targets": summary["n_targets"], "seconds": round(summary["wall_time_s"], 2),
            "device": summary.get("device"), "iterations": summary["iterations"]}


def cmd_fit(args: argparse.Namespace) -> dict:
    return fit_run(args.run, args.device, args.val_frac, args.n_lambdas, args.eps)


def add_fit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--val-frac", type=open_unit_float, default=0.1, help="fraction of models held out to choose each target's λ (default 0.1)")
    p.add_argument("--n-lambdas", type=positive_int, default=50, help="λ values on each target's path (default 50)")
    p.add_argument("--eps", type=open_unit_float, default=1e-3, help="the path runs from λ_max down to λ_max·eps (default 1e-3)")


def register(sub) -> None:
    p = sub.add_parser("fit", help="fit every target's datamodel (LASSO path, validation-selected λ, refit)",
                       description="Fit one LASSO per target from masks to margins (eq. 9 exclusion for training targets); "
                                   "writes weights.npy, bias.npy, lam.npy and fit.json into the run.")
    p.add_argument("--run", type=Path, required=True, help="run directory")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto uses CUDA when present")
    add_fit_args(p)
    p.set_defaults(func=cmd_fit)
