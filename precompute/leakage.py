"""`plant-leaks`: write a dataset with known train-test leaks, to measure how well the leak candidates find them.

The leak candidates themselves are computed by `analyze` (backend.leakage.analysis.analyze_leakage), which reports
recall@k of the planted pairs when the run's dataset is such a file.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .args import add_dataset_args, add_force_arg, non_negative_float, non_negative_int, positive_int, refuse_existing


def cmd_plant_leaks(args: argparse.Namespace) -> dict:
    from backend.datasets import load_dataset, write_npz_dataset
    from backend.datasets.planted import plant_leaks

    if args.out.is_dir():
        raise ValueError(f"--out {args.out} is a directory: give the .npz file to write, e.g. {args.out / 'planted.npz'}")
    refuse_existing(args.out, "--out", args.force)
    ds = load_dataset(args.dataset, args.data_dir, args.download)
    arrays, truth = plant_leaks(ds, n=args.n, noise=args.noise, seed=args.seed, shift=not args.no_shift)
    path = write_npz_dataset(args.out, arrays)
    return {"out": str(path), "dataset": f"npz:{path}", "source": args.dataset, "n": args.n, "noise": args.noise,
            "shift": not args.no_shift, "seed": args.seed,
            "planted_test": truth["planted_test"].tolist(), "planted_train": truth["planted_train"].tolist(),
            "next": f"python -m precompute train --dataset npz:{path} --out data/runs/planted --models 2000"}


def register(sub) -> None:
    p = sub.add_parser("plant-leaks", help="write a dataset with known near-duplicate train-test leaks",
                       description="Replace N test images by perturbed copies (pixel noise, brightness, a one-pixel "
                                   "shift) of N training images and write the result as an npz dataset, with the "
                                   "pairs recorded as planted_test/planted_train. Train a run on it with "
                                   "--dataset npz:OUT; `analyze` then reports recall@10 of the planted pairs.")
    add_dataset_args(p)
    p.add_argument("--n", type=positive_int, default=30, help="number of leaks to plant (default 30)")
    p.add_argument("--noise", type=non_negative_float("a noise level, e.g. 0.05,"), default=0.05,
                   help="pixel noise std and brightness offset, as a fraction of 255 (default 0.05)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="which images are copied and how (default 0)")
    p.add_argument("--no-shift", action="store_true",
                   help="leave out the one-pixel shift (on 8x8 digits it hides most copies from every candidate list)")
    p.add_argument("--out", type=Path, required=True, help="the .npz file to write, e.g. data/planted.npz")
    add_force_arg(p, "--out")
    p.set_defaults(func=cmd_plant_leaks)
