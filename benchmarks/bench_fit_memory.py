"""The fit's peak RSS does not grow with the number of targets: two fits that differ only in it.

Run: .venv/bin/python benchmarks/bench_fit_memory.py [--out /tmp/bench_fit_memory] [--models 300] [--n-train 1000]
                                                     [--n-test 2000 8000] [--block-targets 500] [--targets all|test]

It builds (once per size; kept in --out) synthetic runs of random α = 0.5 masks whose margins are a sparse
linear function of them plus noise, with the same models and training set and only the number of test
targets different, then fits each in a fresh process (`fit_run`, a short path: 3 λ values, at most 50
iterations a solve; the memory, not the answer, is measured) and prints the process's peak RSS (ru_maxrss),
its RSS before the fit, the weights' size and memory_model's prediction. Held in RAM, the weights alone
would add n_targets × n_train × 4 bytes to the larger fit.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backend.store.atomic import save_json, save_npy


def build(out: Path, n_models: int, n_train: int, n_test: int, seed: int = 0) -> None:
    if (out / "manifest.json").exists():
        return
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    masks = rng.random((n_models, n_train)) < 0.5
    n_targets = n_train + n_test
    margins = np.lib.format.open_memmap(out / "margins.npy.tmp", mode="w+", dtype=np.float32, shape=(n_models, n_targets))
    x = masks.astype(np.float32)
    for lo in range(0, n_targets, 2000):
        hi = min(lo + 2000, n_targets)
        w = np.where(rng.random((n_train, hi - lo)) < 0.01, rng.normal(0, 0.1, (n_train, hi - lo)), 0).astype(np.float32)
        margins[:, lo:hi] = x @ w + rng.normal(0, 0.1, (n_models, hi - lo)).astype(np.float32)
    margins.flush()
    del margins
    (out / "margins.npy.tmp").rename(out / "margins.npy")
    save_npy(out / "masks.npy", masks)
    save_npy(out / "labels.npy", rng.integers(0, 10, n_targets))
    save_json(out / "manifest.json", {
        "dataset": {"spec": "synthetic", "name": "synthetic-fit-memory", "n_train": n_train, "n_test": n_test,
                    "image_shape": [8, 8, 1], "class_names": [str(c) for c in range(10)], "n_classes": 10},
        "alpha": 0.5, "seed": seed, "arch": "mlp", "hparams": {}, "n_models": n_models, "format_version": 1})


def measure(run_dir: Path, block_targets: int, targets: str) -> None:
    """The measured part, in its own process: one JSON line with the fit's peak RSS."""
    import torch

    from backend.datamodels.fit import DEFAULT_MEMORY, fit_run, memory_model
    from backend.store.run_dir import Run
    from backend.store.targets import select_targets

    torch.set_num_threads(2)
    run = Run(run_dir)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10
    summary = fit_run(run, n_lambdas=3, max_iter=50, device="cpu", block_targets=block_targets,
                      targets=select_targets(targets, run.n_train, run.n_test))
    fixed, per_target, _ = memory_model(len(run.masks), run.n_train, DEFAULT_MEMORY)
    print(json.dumps({"n_targets": summary["n_targets"], "rss_before_fit": before,
                      "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10,
                      "predicted": fixed + block_targets * per_target, "weights_bytes": summary["n_targets"] * run.n_train * 4,
                      "seconds": round(summary["wall_time_s"], 1)}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("/tmp/bench_fit_memory"))
    p.add_argument("--models", type=int, default=300)
    p.add_argument("--n-train", type=int, default=1000)
    p.add_argument("--n-test", type=int, nargs=2, default=[2000, 14000])
    p.add_argument("--block-targets", type=int, default=500)
    p.add_argument("--targets", default="all", help="fit --targets: all, or test (the rest unfitted: the merge into "
                   "full-size files is measured too)")
    p.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measure:
        measure(args.measure, args.block_targets, args.targets)
        return
    results = []
    for n_test in args.n_test:
        run = args.out / f"m{args.models}-f{args.n_train}-t{n_test}"
        build(run, args.models, args.n_train, n_test)
        done = subprocess.run([sys.executable, __file__, "--measure", str(run), "--block-targets", str(args.block_targets),
                               "--targets", args.targets],
                              check=True, capture_output=True, text=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    mib = 1 << 20
    print(f"{'targets':>8} {'RSS before fit':>15} {'peak RSS':>10} {'predicted':>10} {'weights':>9} {'fit s':>6}")
    for r in results:
        print(f"{r['n_targets']:>8,} {r['rss_before_fit'] / mib:>11.0f} MiB {r['peak_rss'] / mib:>6.0f} MiB "
              f"{r['predicted'] / mib:>6.0f} MiB {r['weights_bytes'] / mib:>5.0f} MiB {r['seconds']:>6}")
    small, large = results
    print(f"targets ×{large['n_targets'] / small['n_targets']:.1f}: peak RSS ×{large['peak_rss'] / small['peak_rss']:.3f} "
          f"(held in RAM, the weights would add {(large['weights_bytes'] - small['weights_bytes']) / mib:.0f} MiB)")


if __name__ == "__main__":
    main()
