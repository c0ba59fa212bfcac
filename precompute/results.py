"""`results`: what a run finds, as the README reports it (backend.results): leak counts against a real dataset's
near-duplicate pairs, the images each method flags, pictures of the clusters and components, LDS and cost per stage."""
from __future__ import annotations

import argparse
from pathlib import Path

from .args import add_force_arg, refuse_existing


def cmd_results(args: argparse.Namespace) -> dict:
    from backend.results import write_results

    refuse_existing(args.out / "results.md", "--out", args.force)
    for flag, path in (("--pairs", args.pairs), ("--times", args.times)):
        if path is not None and not path.is_file():
            raise ValueError(f"{flag} {path} is not a file")
    report = write_results(args.run, args.out, pairs=args.pairs, times=args.times)
    return {"out": str(args.out / "results.md"), **{k: report[k] for k in ("leakage", "methods") if k in report}}


def register(sub) -> None:
    p = sub.add_parser("results", help="write a run's results (leak counts, flagged images, pictures, LDS, cost) to a folder",
                       description="Write OUT/results.md, results.json and pictures: with --pairs, how many of a real "
                                   "dataset's near-duplicate pairs (`near-duplicates`' CSV, in the run's positions) "
                                   "each leakage list ranks in its top 10 and the review queue in its first 100, and "
                                   "the nearest pairs; the training images each method's self-scores flag first; the "
                                   "clusters and the principal components; held-out LDS and mislabel AUC per method "
                                   "(methods_eval.json); wall, CPU and peak RSS per stage from the run's records and "
                                   "--times.")
    p.add_argument("--run", type=Path, required=True, help="run directory")
    p.add_argument("--out", type=Path, required=True, help="folder to write results.md and the pictures into")
    p.add_argument("--pairs", type=Path, default=None,
                   help="near-duplicate pairs CSV (test,train,rms), e.g. data/fashion-mnist/near_duplicates.csv")
    p.add_argument("--times", type=Path, default=None,
                   help="a log of `/usr/bin/time -a -o LOG -f '%%C|wall=%%e|user=%%U|sys=%%S|maxrss_kb=%%M'` lines, "
                        "each optionally ending '|load=...', for the stages the run does not time itself")
    add_force_arg(p, "--out")
    p.set_defaults(func=cmd_results)
