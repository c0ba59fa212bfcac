"""Flag types, shared flags and the progress bar that every verb uses."""
from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm


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


def add_device_arg(p: argparse.ArgumentParser, help: str = "auto uses CUDA when present") -> None:
    """--device, the same choices on every verb; `help` says what the device runs where a verb needs it."""
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help=help)


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
    add_device_arg(p, help="auto uses CUDA when present (default auto)")
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


class TqdmProgress:
    """The CLI's adapter of backend.progress: a tqdm bar named by the job's unit, opened once the total is known.

    A job with nothing to do (total 0) draws no bar. Use it as a context manager so the bar closes on errors.
    """

    def __init__(self, desc: str):
        self.desc, self.bar = desc, None

    def __call__(self, done: float, total: float, unit: str) -> None:
        if total <= 0:
            return
        if self.bar is None or self.bar.total != total or self.bar.unit != unit:
            self.close()
            self.bar = tqdm(total=total, desc=self.desc, unit=unit, dynamic_ncols=True, smoothing=0.1, mininterval=0.5,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} {unit}s "
                                       "[{elapsed}<{remaining}, {rate_fmt}]")
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> "TqdmProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
