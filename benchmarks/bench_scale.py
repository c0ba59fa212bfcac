"""The precompute at CIFAR-10 shape on one machine: train-merge-top-up, the fit, then analyze and the pages.

Run: .venv/bin/python benchmarks/bench_scale.py [--out /tmp/bench_scale_run] [--scale 1.0] [--models 2000]
         [--fit-targets 256] [--device auto] [--with-analyze-and-pages]

A synthetic run of 50,000 training and 10,000 test targets (× --scale) gets --models models in shards of
200, as `train` writes them: random α = 0.5 masks and margins with a sparse linear signal (10 training
images per target). Then, each stage in a fresh process so its peak RSS is its own:
  merge     the shards into masks.npy/margins.npy; bytes written
  top-up    10 % more models' shards, merged again: bytes written against the run's bytes
  fit       one block of --fit-targets test targets through the fit's own solver (the 50-λ path on a
            validation split, then the refit), timed and extrapolated to every target, first without
            working sets and fixed-point products (the solver before them), then as `fit` runs it. What a fit
            computes once for all its blocks (the curvature bounds' power iterations over the rows, 100 passes
            over all the masks) is timed apart and counted once in the extrapolation; and a projection
            of the whole fit at 300,000 models on a GPU, from GEMM rates measured here and an assumed one
With --with-analyze-and-pages it then runs benchmarks/bench_analyze.py (analyze at CIFAR shape) and
benchmarks/bench_dashboard.py (every page's query), each on its own synthetic run of fitted-looking
datamodels: a CPU fit of all 60,000 targets would take hours here.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHARD_MODELS = 200
SIGNAL = 10  # training images with a true effect on each target's margin
GPU_TFLOPS = 400.0  # assumed: an H100/H200's dense TF32 tensor-core rate, in TFLOP/s (fp32 is ~60)


def sizes(scale: float) -> tuple[int, int]:
    return int(50_000 * scale), int(10_000 * scale)


def create(out: Path, scale: float, seed: int = 0) -> None:
    from backend.store.manifest import init_run

    n_train, n_test = sizes(scale)
    rng = np.random.default_rng(seed)
    labels = rng.integers(10, size=n_train + n_test).astype(np.int64)
    images = rng.integers(256, size=(n_train + n_test, 32, 32, 3), dtype=np.uint8)
    manifest = {"dataset": {"spec": "synthetic", "name": "synthetic", "n_train": n_train, "n_test": n_test,
                            "image_shape": [32, 32, 3], "class_names": [f"class {c}" for c in range(10)],
                            "n_classes": 10},
                "alpha": 0.5, "subset_size": n_train // 2, "seed": seed, "arch": "resnet9", "hparams": {}}
    init_run(out, manifest, labels, images)


def write_shards(out: Path, lo: int, hi: int, scale: float, first_seed: int = 1000) -> None:
    """Shards of models [lo, hi): masks of α = 0.5, margins = 1 + Σ of each target's 10 effects + noise.

    A shard starting at model s draws from seed first_seed + s: another first_seed gives other models.
    """
    from backend.store.shards import write_shard

    n_train, n_test = sizes(scale)
    effects = np.random.default_rng(1)
    support = effects.integers(n_train, size=(n_train + n_test, SIGNAL))
    weight = effects.normal(0, 0.3, size=(n_train + n_test, SIGNAL)).astype(np.float32)
    for start in range(lo, hi, SHARD_MODELS):
        end = min(start + SHARD_MODELS, hi)
        rng = np.random.default_rng(first_seed + start)
        masks = rng.random((end - start, n_train)) < 0.5
        margins = np.ones((end - start, n_train + n_test), dtype=np.float32)
        for j in range(SIGNAL):
            margins += masks[:, support[:, j]] * weight[:, j]
        margins += rng.normal(0, 0.5, margins.shape).astype(np.float32)
        predictions = np.zeros((end - start, n_train + n_test), dtype=np.int16)
        write_shard(out, start, masks, margins, predictions)


def merge(out: Path) -> dict:
    from backend.store.run_dir import Run
    from backend.training.merge_stage import merge_run

    run = Run(out)
    return merge_run(out, run.n_train, run.n_targets)


def gemm_tflops(device: str, size: int = 4096) -> float:
    import torch

    a = torch.randn(size, size, device=device)
    torch.mm(a, a)
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(3):
        torch.mm(a, a)
    if device == "cuda":
        torch.cuda.synchronize()
    return 3 * 2 * size ** 3 / (time.perf_counter() - started) / 1e12


def fit_block(out: Path, n_targets: int, device: str, working_sets: bool = True) -> dict:
    """One block of test targets through the fit's solver (backend.datamodels.fit), as `fit` runs it.

    working_sets=False: the solver before working sets and fixed-point products (every FISTA product over all
    features in float32 GEMMs, the whole block in one batch), for the before-and-after in one run.
    """
    from functools import partial

    import torch

    import backend.datamodels.fit as fit_module
    from backend.datamodels.fit import DEFAULT_MEMORY, _Fitter, _Steps, memory_model
    from backend.datamodels.lasso import MaskRows, lasso_path, lasso_solve

    if not working_sets:
        fit_module.lasso_path = partial(lasso_path, working_sets=False, group=n_targets)
        fit_module.lasso_solve = partial(lasso_solve, working_sets=False)
        MaskRows.fixed_point = property(lambda rows: False)  # this child process only
    from backend.store.run_dir import Run
    from backend.training.engine import resolve_device

    run = Run(out)
    dev = torch.device(resolve_device(device))
    n_models = len(run.masks)
    gram = memory_model(n_models, run.n_train, DEFAULT_MEMORY)[2]
    fitter = _Fitter(run.masks, run.margins, run.n_train, val_frac=0.1, n_lambdas=50, eps=1e-3, tol=1e-4, seed=0,
                     device=dev, max_iter=1000, patience=3, gram=gram, steps=_Steps(0, 0, None))
    columns = np.arange(run.n_train, run.n_train + n_targets)
    started, cpu = time.perf_counter(), time.process_time()
    for rows in (fitter.rows_fit, fitter.rows_all):  # the path's rows and the refit's: once per fit (cached)
        rows.top_eigenvalue()
    once, once_cpu = time.perf_counter() - started, time.process_time() - cpu
    started, cpu = time.perf_counter(), time.process_time()
    result = fitter.fit(columns, np.zeros(0))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    iterations = int(result["path_iterations"].sum() + result["refit_iterations"].sum())
    return {"targets": n_targets, "seconds": seconds, "cpu_seconds": cpu, "once_seconds": once,
            "once_cpu_seconds": once_cpu, "iterations": iterations, "models": n_models, "n_train": run.n_train,
            "gram": gram, "device": str(dev), "gemm_tflops": gemm_tflops(dev.type)}


def peak_rss_mib() -> float:
    """This process's peak RSS since it started its program: /proc's VmHWM where there is one.

    Not ru_maxrss: Linux carries it across exec, so a child started from this (large) process would report
    this process's peak as its own.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def in_child(stage: str, out: Path, *args) -> dict:
    """Run one stage in a fresh process; its result, seconds and peak RSS."""
    script = (f"import json, sys, time\nsys.path.insert(0, {str(ROOT)!r})\n"
              f"from pathlib import Path\nimport benchmarks.bench_scale as b\n"
              f"t = time.perf_counter()\nr = b.{stage}(Path({str(out)!r}), *{list(args)!r})\n"
              f"print(json.dumps({{'result': r, 'seconds': time.perf_counter() - t, "
              f"'rss_mib': b.peak_rss_mib()}}, default=str))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_scale_run"))
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of CIFAR-10's 50,000 + 10,000 targets")
    parser.add_argument("--models", type=int, default=2000)
    parser.add_argument("--fit-targets", type=int, default=256)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--with-analyze-and-pages", action="store_true")
    args = parser.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists: remove it or give another --out (the benchmark builds its run afresh)")
    n_train, n_test = sizes(args.scale)
    top_up = args.models // 10
    print(f"synthetic run: {n_train:,} train + {n_test:,} test targets, {args.models:,} models + a top-up of {top_up:,}")
    rows = []
    started = time.perf_counter()
    create(args.out, args.scale)
    write_shards(args.out, 0, args.models, args.scale)
    rows.append(("train (write shards)", time.perf_counter() - started, peak_rss_mib(), ""))
    first = in_child("merge", args.out)
    rows.append(("merge", first["seconds"], first["rss_mib"],
                 f"wrote {first['result']['bytes_written'] / 2**20:,.0f} MiB"))
    write_shards(args.out, args.models, args.models + top_up, args.scale)
    second = in_child("merge", args.out)
    share = second["result"]["bytes_written"] / second["result"]["run_bytes"]
    rows.append((f"top-up merge (+{top_up:,} models)", second["seconds"], second["rss_mib"],
                 f"wrote {second['result']['bytes_written'] / 2**20:,.0f} of {second['result']['run_bytes'] / 2**20:,.0f}"
                 f" MiB ({share:.1%})"))
    all_targets = n_train + n_test
    before = in_child("fit_block", args.out, args.fit_targets, args.device, False)["result"]
    fit = in_child("fit_block", args.out, args.fit_targets, args.device)
    f = fit["result"]
    per_target = f["seconds"] / f["targets"]
    before_per_target = before["seconds"] / before["targets"]
    hours = {name: (r["once_seconds"] + r["seconds"] / r["targets"] * all_targets) / 3600
             for name, r in (("before", before), ("after", f))}
    cpu_hours = {name: (r["once_cpu_seconds"] + r["cpu_seconds"] / r["targets"] * all_targets) / 3600
                 for name, r in (("before", before), ("after", f))}
    for name, r in (("before", before), ("after", f)):
        rows.append((f"fit, once per fit, {name}", r["once_seconds"], float("nan"),
                     f"{r['once_cpu_seconds']:.1f} CPU s: the curvature bounds' power iterations"))
    rows.append((f"fit, {f['targets']} test targets, before", before["seconds"], float("nan"),
                 f"{before_per_target:.3f} s/target → {hours['before']:,.1f} h for all {all_targets:,} "
                 f"({cpu_hours['before']:,.1f} CPU h)"))
    rows.append((f"fit, {f['targets']} test targets", fit["seconds"], fit["rss_mib"],
                 f"{per_target:.3f} s/target → {hours['after']:,.1f} h for all {all_targets:,} ({cpu_hours['after']:,.1f} "
                 f"CPU h); {before_per_target / per_target:.1f}x wall, {before['cpu_seconds'] / f['cpu_seconds']:.1f}x "
                 "CPU s a target of the solver before (no working sets, float32 products)"))
    print(f"\n{'stage':34s} {'seconds':>9s} {'peak RSS MiB':>13s}   (load average {os.getloadavg()[0]:.2f})")
    for name, seconds, rss, note in rows:
        print(f"{name:34s} {seconds:9.1f} {rss:13.0f}  {note}")
    # The fit's products are (models × n_train) against (n_train × targets): its time grows with the models.
    gpu = per_target * all_targets * (300_000 / f["models"]) * (f["gemm_tflops"] / GPU_TFLOPS)
    print(f"\nGEMM here: {f['gemm_tflops']:.2f} TFLOP/s ({f['device']}); {f['iterations']:,} solver iterations "
          f"in the block (Gram products: {f['gram']})")
    print(f"projection: the whole fit of {all_targets:,} targets at 300,000 models on one GPU of {GPU_TFLOPS:.0f} "
          f"TFLOP/s ≈ {gpu / 3600:,.2f} h, assuming the fit runs at this machine's fraction of its GEMM peak and "
          "its time grows linearly with the models (the path's iterations held fixed)")
    if args.with_analyze_and_pages:
        for bench in ("bench_analyze.py", "bench_dashboard.py"):
            print(f"\n== benchmarks/{bench}", flush=True)
            subprocess.run([sys.executable, str(ROOT / "benchmarks" / bench)], check=True)


if __name__ == "__main__":
    main()
