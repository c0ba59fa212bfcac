"""The Fashion-MNIST CPU recipe's cost side: seconds per α = ½ model and test accuracy on the real 60,000 / 10,000.

Run: .venv/bin/python benchmarks/bench_fashion_recipe.py [--models 8] [--configs mlp-32-10-bf16,cnn-1-5-bf16]

Each config (arch-hidden|width-epochs-precision) trains `--models` α = ½ models with the real `train` stage
(`train_run`, into a temporary run) on the full dataset, side by side in one process, and prints per model the
wall and CPU seconds (time.process_time, every thread of this process), the mean test accuracy of those models
and the load average before and after. The load matters: other processes on the machine share its cores, so the
wall seconds are an upper bound and the CPU seconds (which a loaded core inflates less) the better comparison.
The held-out LDS side of the recipe comes from the real stages instead (README, "Fashion-MNIST: the CPU recipe and the resumable full-size run").
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

DEFAULT_CONFIGS = ("mlp-32-10-bf16", "mlp-32-10-fp32", "mlp-128-10-bf16", "mlp-128-30-bf16", "cnn-0.5-5-bf16",
                   "cnn-1-5-bf16")


def parse_config(text: str) -> tuple[str, dict, str]:
    """`mlp-32-10-bf16` -> ("mlp", {"hidden": 32, "epochs": 10}, "bf16"); `cnn-0.5-5-bf16` sets width."""
    arch, size, epochs, precision = text.split("-")
    key, value = ("hidden", int(size)) if arch == "mlp" else ("width", float(size))
    return arch, {key: value, "epochs": int(epochs)}, precision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=8, help="models per config (default 8)")
    parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS), help="comma-separated arch-size-epochs-precision")
    args = parser.parse_args()

    from backend.datasets import load_dataset
    from backend.training.train_stage import train_run

    ds = load_dataset("fashion-mnist")
    print(f"fashion-mnist {ds.n_train:,} / {ds.n_test:,}, α = ½, {args.models} models per config, "
          f"{len(os.sched_getaffinity(0))} cores")
    print(f"{'config':<18} {'wall s/model':>12} {'CPU s/model':>12} {'test acc':>9}   load before -> after")
    for text in args.configs.split(","):
        arch, hparams, precision = parse_config(text)
        load_before = os.getloadavg()[0]
        with tempfile.TemporaryDirectory() as tmp:
            wall, cpu = time.perf_counter(), time.process_time()
            summary = train_run(ds, "fashion-mnist", Path(tmp) / "run", alpha=0.5, n_models=args.models, seed=0,
                                arch=arch, hparams=hparams, device="cpu", precision=precision)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(f"{text:<18} {wall / args.models:12.1f} {cpu / args.models:12.1f} "
              f"{summary['mean_test_accuracy']:9.4f}   {load_before:.1f} -> {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
