"""`attribute`: one attribution method's scores of every test target against every training image."""
from __future__ import annotations

import argparse
from pathlib import Path

from .args import TqdmProgress, add_device_arg, positive_int


def cmd_attribute(args: argparse.Namespace) -> dict:
    from backend.attribution import methods
    from backend.attribution.compute import attribute
    from backend.store.run_dir import Run

    run = Run(args.run)
    method = methods.make(args.method, run, device=args.device)
    with TqdmProgress(f"attribute ({args.method})") as bar:
        meta = attribute(run, method, block_rows=args.block_rows, progress=bar)
    return {"run": str(run.dir), "method": args.method, "seconds": meta["seconds"], "bytes": meta["bytes"],
            "models": meta["models"]}


def register(sub) -> None:
    from backend.attribution.methods import METHODS

    p = sub.add_parser("attribute", help="one attribution method's scores for every test target",
                       description="Score every training image's attribution to every test target's margin under one "
                                   "method; writes attribution/<method>/scores.npy and meta.json. An interrupted run "
                                   "resumes from its finished blocks.")
    p.add_argument("--run", type=Path, required=True, help="run directory")
    p.add_argument("--method", required=True, choices=sorted(METHODS), help="attribution method")
    p.add_argument("--block-rows", type=positive_int, default=256, help="test targets scored per resumable block (default 256)")
    add_device_arg(p)
    p.set_defaults(func=cmd_attribute)
