"""`python -m precompute VERB ...`: the stages train -> fit -> eval -> analyze, each rerunnable alone.

Every verb is thin: it validates flags, calls one backend function, shows progress and prints a
summary. Bad input ends with one line on stderr and exit code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

EXIT_BAD_INPUT = 2


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative: give a count of 0 or more")
    return value


def positive_int(text: str) -> int:
    value = non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def open_unit_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"{text} is outside (0, 1): alpha is the fraction of the training set each model sees, e.g. 0.5")
    return value


def add_dataset_args(p: argparse.ArgumentParser) -> None:
    from backend.datasets import dataset_spec_help
    p.add_argument("--dataset", default="digits", help=f"which dataset: {dataset_spec_help()} (default: digits)")
    p.add_argument("--data-dir", type=Path, default=None, help="where cifar10 lives (default data/cifar10)")
    p.add_argument("--download", action="store_true", help="download CIFAR-10 (checksum-verified) if it is not in --data-dir")


def add_train_args(p: argparse.ArgumentParser, models_default: int | None = None) -> None:
    add_dataset_args(p)
    p.add_argument("--alpha", type=open_unit_float, default=0.5, help="fraction of the training set each model trains on, in (0, 1) (default 0.5)")
    p.add_argument("--models", type=non_negative_int, default=models_default, required=models_default is None,
                   help="total models the run should hold; an existing run is topped up to this many")
    p.add_argument("--seed", type=non_negative_int, default=0, help="run seed: model i's subset and randomness come from (seed, i) only (default 0)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto uses CUDA when present (default auto)")
    p.add_argument("--batch-models", type=positive_int, default=None,
                   help="models trained at once as one batched computation (default 500 for the MLP, 16 for ResNet-9 on GPU, 2 on CPU)")
    p.add_argument("--arch", choices=["mlp", "resnet9"], default=None, help="architecture (default: mlp for 8x8 digits, resnet9 for CIFAR-sized images)")
    p.add_argument("--epochs", type=positive_int, default=None, help="override the architecture's epochs")
    p.add_argument("--lr", type=float, default=None, help="override the peak learning rate")
    p.add_argument("--batch-size", type=positive_int, default=None, help="override the per-model minibatch size")
    p.add_argument("--width", type=float, default=None, help="ResNet-9 channel multiplier (default 1.0)")
    p.add_argument("--hidden", type=positive_int, default=None, help="MLP hidden units (default 128)")


def hparam_overrides(args: argparse.Namespace) -> dict:
    names = {"epochs": "epochs", "lr": "lr", "batch_size": "batch_size", "width": "width", "hidden": "hidden"}
    return {key: getattr(args, attr) for attr, key in names.items() if getattr(args, attr) is not None}


class ProgressBar:
    """A tqdm bar fed with absolute progress values (e.g. fractional models done)."""

    def __init__(self, desc: str, unit: str):
        self.bar = tqdm(total=0, desc=desc, unit=unit, dynamic_ncols=True, smoothing=0.1, mininterval=0.5,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} {unit}s [{elapsed}<{remaining}, {rate_fmt}]")

    def start(self, total: float) -> None:
        self.bar.reset(total=total)

    def __call__(self, value: float) -> None:
        self.bar.update(value - self.bar.n)

    def close(self) -> None:
        self.bar.close()


def cmd_train(args: argparse.Namespace) -> dict:
    from backend.datasets import load_dataset
    from backend.run_training import parse_shard, train_run

    shard = parse_shard(args.shard)
    ds = load_dataset(args.dataset, args.data_dir, args.download)
    bar = ProgressBar("training", "model")
    try:
        return train_run(ds, args.dataset, args.out, alpha=args.alpha, n_models=args.models, seed=args.seed,
                         arch=args.arch, hparams=hparam_overrides(args), device=args.device,
                         batch_models=args.batch_models, shard=shard, progress=bar, on_start=bar.start)
    finally:
        bar.close()


def cmd_merge(args: argparse.Namespace) -> dict:
    from backend import run_store
    manifest = run_store.read_manifest(args.run)
    n_train, n_test = manifest["dataset"]["n_train"], manifest["dataset"]["n_test"]
    n = run_store.merge_shards(args.run, n_train, n_train + n_test)
    return {"run": str(args.run), "n_models": n}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m precompute",
        description="Build datamodel runs: train many models on random subsets, fit datamodels, evaluate and analyse them.",
    )
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = sub.add_parser("train", help="train (or top up) a run's models on random alpha-subsets",
                       description="Train models, each on a random alpha-fraction of the training set, in resumable shards; "
                                   "record masks and margins on every train and test target.")
    add_train_args(p)
    p.add_argument("--out", type=Path, required=True, help="run directory (e.g. data/runs/digits); created if missing")
    p.add_argument("--shard", default="0/1", help="train only the i-th of n disjoint ranges of model indices, as i/n (default 0/1: all)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("merge", help="merge finished shards into masks.npy and margins.npy",
                       description="Assemble masks.npy/margins.npy from the shards that workers (--shard i/n) finished.")
    p.add_argument("--run", type=Path, required=True, help="run directory")
    p.set_defaults(func=cmd_merge)
    return parser


def main(argv: list[str] | None = None) -> int:
    import json

    args = build_parser().parse_args(argv)
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        print("interrupted: finished shards are kept; rerun the same command to resume", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if result is not None:
        print(json.dumps(result, indent=2))
    return 0
