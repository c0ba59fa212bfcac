"""Flag types, shared flags and the progress bar that every verb uses."""
from __future__ import annotations

import argparse
import math
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tqdm import tqdm


# Upper bounds on sizes, far above any real run yet low enough that a typo fails here, with a message,
# instead of as an allocation error deep inside numpy or torch.
MAX_MODELS = 10_000_000  # the paper's largest run holds 3e5 models
MAX_HIDDEN = 65_536
MAX_WIDTH = 64.0
MAX_EPOCHS = 100_000
MAX_MEMORY = 1 << 50  # 1 PiB


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    return value


def non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative: give a count of 0 or more")
    return value


def positive_int(text: str) -> int:
    value = non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


_BYTE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 10 ** 3, "kib": 1 << 10, "m": 1 << 20, "mb": 10 ** 6, "mib": 1 << 20,
               "g": 1 << 30, "gb": 10 ** 9, "gib": 1 << 30, "t": 1 << 40, "tb": 10 ** 12, "tib": 1 << 40}


def byte_size(text: str) -> int:
    """A memory size flag type: a positive number with an optional unit (B, KiB, MiB, GiB, TiB, kB, MB, GB, TB)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-z]*)\s*", text.lower())
    if not match or match.group(2) not in _BYTE_UNITS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a memory size: give a number and a unit, e.g. 4GiB or 512MiB")
    value = float(match.group(1)) * _BYTE_UNITS[match.group(2)]
    if not value <= MAX_MEMORY:  # also inf, from 1e400
        raise argparse.ArgumentTypeError(f"{text} is more memory than any machine has: give at most 1PiB, e.g. 4GiB")
    if int(value) < 1:
        raise argparse.ArgumentTypeError(f"{text} is no memory: give a positive size, e.g. 4GiB")
    return int(value)


def bounded_int(low: int, high: int, what: str):
    """An integer flag type in [low, high]; `what` says what the value counts, for the message."""
    def parse(text: str) -> int:
        value = non_negative_int(text) if low >= 0 else _int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is outside {low}..{high:,}: give the {what}")
        return value
    return parse


def positive_float(high: float, what: str):
    """A finite float flag type in (0, high]; `what` names the value and an example, for the message."""
    def parse(text: str) -> float:
        value = _number(text)
        if not 0.0 < value <= high:
            raise argparse.ArgumentTypeError(f"{text} is outside (0, {high:g}]: give {what}")
        return value
    return parse


def non_negative_float(what: str):
    def parse(text: str) -> float:
        value = _number(text)
        if value < 0.0:
            raise argparse.ArgumentTypeError(f"{text} is negative: give {what} of 0 or more")
        return value
    return parse


def unit_fraction(what: str):
    """A float flag type in the open interval (0, 1); `what` says what the fraction is, with an example."""
    def parse(text: str) -> float:
        value = _number(text)
        if not 0.0 < value < 1.0:
            raise argparse.ArgumentTypeError(f"{text} is outside (0, 1): {what}")
        return value
    return parse


open_unit_float = unit_fraction("alpha is the fraction of the training set each model sees, e.g. 0.5")


def add_force_arg(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--force", action="store_true", help=f"replace {what} if it already exists")


def refuse_existing(path: Path, flag: str, force: bool) -> None:
    """An output that already exists is kept unless --force: a rerun never silently replaces a result."""
    if path.exists() and not force:
        raise ValueError(f"{flag} {path} already exists: pass --force to replace it, or choose another path")


def add_device_arg(p: argparse.ArgumentParser, help: str = "auto uses CUDA when present") -> None:
    """--device, the same choices on every verb; `help` says what the device runs where a verb needs it."""
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help=help)


def add_dataset_args(p: argparse.ArgumentParser) -> None:
    from backend.datasets import dataset_spec_help
    p.add_argument("--dataset", default="digits", help=f"which dataset: {dataset_spec_help()} (default: digits)")
    p.add_argument("--data-dir", type=Path, default=None, help="where cifar10 or fashion-mnist lives (default data/cifar10; "
                   "/usr/share/datasets/fashion-mnist, Debian's dataset-fashion-mnist)")
    p.add_argument("--download", action="store_true", help="download CIFAR-10 (checksum-verified) if it is not in --data-dir")


def add_train_args(p: argparse.ArgumentParser, models_default: int | None = None) -> None:
    add_dataset_args(p)
    p.add_argument("--alpha", type=open_unit_float, default=0.5, help="fraction of the training set each model trains on, in (0, 1) (default 0.5)")
    p.add_argument("--models", type=bounded_int(0, MAX_MODELS, "number of models the run should hold"), default=models_default, required=models_default is None,
                   help="total models the run should hold; an existing run is topped up to this many")
    p.add_argument("--seed", type=non_negative_int, default=0, help="run seed: model i's subset and randomness come from (seed, i) only (default 0)")
    add_device_arg(p, help="auto uses CUDA when present (default auto)")
    p.add_argument("--batch-models", type=positive_int, default=None,
                   help="models trained at once as one batched computation (default 500 for the MLP, 16 for ResNet-9 on GPU, 2 on CPU)")
    p.add_argument("--arch", choices=["mlp", "cnn", "resnet9", "airbench"], default=None,
                   help="architecture (default: mlp for 8x8 digits; for images up to 32x32 the small cnn on CPU, resnet9 on GPU; airbench: the fast airbench94-style recipe, images of at least 16x16)")
    p.add_argument("--epochs", type=bounded_int(1, MAX_EPOCHS, "number of epochs"), default=None, help="override the architecture's epochs")
    p.add_argument("--lr", type=positive_float(100.0, "a positive learning rate, e.g. 0.1"), default=None, help="override the peak learning rate")
    p.add_argument("--batch-size", type=positive_int, default=None, help="override the per-model minibatch size")
    p.add_argument("--width", type=positive_float(MAX_WIDTH, "a positive channel multiplier, e.g. 0.5"), default=None, help="CNN / ResNet-9 channel multiplier (default 1.0)")
    p.add_argument("--hidden", type=bounded_int(1, MAX_HIDDEN, "number of hidden units, e.g. 128"), default=None, help="MLP hidden units (default 128)")
    p.add_argument("--precision", choices=["fp32", "bf16", "auto"], default=None,
                   help="arithmetic of training's matmuls and convolutions: bf16 (fp32 master weights and loss) or fp32; "
                        "auto is bf16 on CUDA with bf16 or a CPU with AMX/AVX-512-bf16 (default: the run's own, auto for a "
                        "new run; the run's retrains use it too)")
    p.add_argument("--dtype", choices=["float32", "float16"], default=None,
                   help="store margins as float32 or float16 (half the bytes; default: the run's own, float32 for a new run)")
    add_keep_shards_arg(p)


def add_keep_shards_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keep-shards", action="store_true",
                   help="keep each shard after merging it (default: delete it once the merged rows are checked equal to it)")


def ray_address(text: str) -> str:
    """`auto` or HOST:PORT (a Ray head's GCS address, e.g. 10.0.0.5:6379), or ray://HOST:PORT."""
    import re
    if text == "auto" or re.fullmatch(r"(ray://)?[A-Za-z0-9.\-]+:[0-9]{1,5}", text):
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is not a Ray address: give auto (a local instance) or HOST:PORT of a "
                                     "head started with `ray start --head`")


def add_ray_args(p: argparse.ArgumentParser, tasks: str) -> None:
    p.add_argument("--ray", type=ray_address, default=None, metavar="auto|ADDRESS",
                   help=f"run {tasks} as Ray tasks: auto starts a local instance, ADDRESS joins a cluster (needs the cluster extra)")
    p.add_argument("--cpus-per-task", type=positive_float(1024.0, "the CPUs each Ray task asks for, e.g. 1"), default=1.0,
                   help="CPUs each Ray task asks for (default 1)")
    p.add_argument("--gpus-per-task", type=non_negative_float("the GPUs each Ray task asks for, e.g. 1 or 0.5"), default=0.0,
                   help="GPUs each Ray task asks for (default 0; use 1 on GPU nodes)")
    p.add_argument("--max-retries", type=bounded_int(0, 100, "number of retries of a Ray task whose worker died"), default=3,
                   help="times Ray reruns a task whose worker died (default 3)")


def ray_options(args: argparse.Namespace) -> dict | None:
    """The Ray keyword arguments of a verb's flags, or None without --ray (where the task flags are refused)."""
    if args.ray is None:
        if (args.cpus_per_task, args.gpus_per_task, args.max_retries) != (1.0, 0.0, 3):
            raise ValueError("--cpus-per-task, --gpus-per-task and --max-retries apply to Ray tasks: add --ray auto|ADDRESS")
        return None
    return {"address": args.ray, "cpus_per_task": args.cpus_per_task, "gpus_per_task": args.gpus_per_task,
            "max_retries": args.max_retries}


@contextmanager
def executor_for(ray: dict | None, bar: "TqdmProgress") -> Iterator:
    """The executor a stage runs its chunks on: Ray tasks with `ray`'s options (ray_options), their rate line
    shown beside the bar, the cluster left at the end; None without --ray (the stage's own process)."""
    if ray is None:
        yield None
        return
    from backend.cluster.executor import RayExecutor
    with RayExecutor(**ray, status=bar.note) as executor:
        yield executor


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
                                       "[{elapsed}<{remaining}, {rate_fmt}{postfix}]")
        self.bar.update(done - self.bar.n)

    def note(self, text: str) -> None:
        """A short status after the counts (e.g. workers alive), shown until the next note."""
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> "TqdmProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
