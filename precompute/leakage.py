"""`plant-leaks`: write a dataset with known train-test leaks, to measure how well the leak candidates find them;
`near-duplicates`: a real dataset's train-test near-duplicates by exhaustive search, the ground truth its lists are scored on.

The leak candidates themselves are computed by `analyze` (backend.leakage.analysis.analyze_leakage), which reports
recall@k of the planted pairs when the run's dataset is such a file.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .args import (TqdmProgress, add_dataset_args, add_force_arg, non_negative_float, non_negative_int, positive_int,
                   refuse_existing)


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


def cmd_near_duplicates(args: argparse.Namespace) -> dict:
    import time

    from backend.datasets import load_dataset
    from backend.leakage.duplicates import near_duplicates, write_pairs

    refuse_existing(args.out, "--out", args.force)
    ds = load_dataset(args.dataset, args.data_dir, args.download)
    wall, cpu = time.perf_counter(), time.process_time()
    with TqdmProgress("near-duplicates") as bar:
        test_ids, train_ids, rms = near_duplicates(ds.test_images, ds.train_images, args.radius,
                                                   max_shift=args.max_shift, progress=bar)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    write_pairs(args.out, test_ids, train_ids, rms)
    same_label = ds.test_labels[test_ids] == ds.train_labels[train_ids]
    return {"out": str(args.out), "dataset": args.dataset, "radius": args.radius, "max_shift": args.max_shift,
            "pairs": int(len(test_ids)), "test_images": int(len(np.unique(test_ids))),
            "train_images": int(len(np.unique(train_ids))), "same_label": int(same_label.sum()),
            "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1)}


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

    p = sub.add_parser("near-duplicates", help="every train-test pair within an RMS pixel radius, by exhaustive search",
                       description="Compare every test image with every training image (float32 GEMMs, each hit "
                                   "re-measured exactly in integers) and write each pair whose root-mean-square pixel "
                                   "difference (0..255 scale), at the test image's best translation by up to "
                                   "--max-shift pixels, is at most --radius, as CSV (test,train,rms), nearest first. "
                                   "This is the ground truth a real dataset's leakage lists are scored on.")
    add_dataset_args(p)
    p.add_argument("--radius", type=non_negative_float("an RMS pixel difference on the 0..255 scale, e.g. 10,"),
                   required=True, help="largest RMS pixel difference of a pair (0..255 scale)")
    p.add_argument("--max-shift", type=non_negative_int, default=1,
                   help="translations of the test image tried, in pixels each way (default 1, as the pixel list's)")
    p.add_argument("--out", type=Path, required=True, help="the CSV file to write, e.g. data/fashion-mnist/near_duplicates.csv")
    add_force_arg(p, "--out")
    p.set_defaults(func=cmd_near_duplicates)
