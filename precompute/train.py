"""`train` and `merge`: build a run's models in resumable shards."""
from __future__ import annotations

import argparse
from pathlib import Path

from .args import (TqdmProgress, add_keep_shards_arg, add_ray_args, add_train_args, executor_for, hparam_overrides,
                   ray_options)


def cmd_train(args: argparse.Namespace) -> dict:
    from backend.datasets import load_dataset
    from backend.training.train_stage import parse_shard, train_run

    shard = parse_shard(args.shard)
    ray = ray_options(args)  # stray Ray flags are refused before the dataset loads
    check_out_dir(args.out)
    if args.ray is not None and shard != (0, 1):
        raise ValueError("--ray hands every missing model to the cluster: drop --shard (it is for separate workers)")
    ds = load_dataset(args.dataset, args.data_dir, args.download)
    with TqdmProgress("training") as bar, executor_for(ray, bar) as executor:
        return train_run(ds, args.dataset, args.out, alpha=args.alpha, n_models=args.models, seed=args.seed,
                         arch=args.arch, hparams=hparam_overrides(args), device=args.device,
                         batch_models=args.batch_models, shard=shard, dtype=args.dtype, precision=args.precision,
                         keep_shards=args.keep_shards,
                         progress=bar, executor=executor)


def check_out_dir(out: Path) -> None:
    """--out names a directory: a file there is refused before any work (not a NotADirectoryError later)."""
    for path in (out, *out.parents):
        if path.exists() and not path.is_dir():
            raise ValueError(f"--out {out}: {path} is a file, not a directory: choose a directory for the run")


def cmd_merge(args: argparse.Namespace) -> dict:
    from backend.store.run_dir import Run
    from backend.training.merge_stage import merge_run
    run = Run(args.run)  # checks the manifest's dataset entry
    return {"run": str(args.run), **merge_run(args.run, run.n_train, run.n_targets, args.keep_shards)}


def register(sub) -> None:
    p = sub.add_parser("train", help="train (or top up) a run's models on random alpha-subsets",
                       description="Train models, each on a random alpha-fraction of the training set, in resumable shards; "
                                   "record masks and margins on every train and test target.")
    add_train_args(p)
    p.add_argument("--out", type=Path, required=True, help="run directory (e.g. data/runs/digits); created if missing")
    p.add_argument("--shard", default="0/1", help="train only the i-th of n disjoint ranges of model indices, as i/n (default 0/1: all)")
    add_ray_args(p, "chunks of --batch-models models")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("merge", help="merge finished shards into masks.npy and margins.npy",
                       description="Assemble masks.npy/margins.npy from the shards that workers (--shard i/n) finished.")
    p.add_argument("--run", type=Path, required=True, help="run directory")
    add_keep_shards_arg(p)
    p.set_defaults(func=cmd_merge)
