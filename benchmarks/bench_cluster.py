"""`train --ray` against one process, and the cost of one Ray task, so a user can size --batch-models.

Run: .venv/bin/python benchmarks/bench_cluster.py [--models 200] [--batch-models 20] [--workers 2]

Side by side in one run: the same models (same subsets, seeds, hyperparameters) trained in this process,
then as Ray tasks on a local instance of --workers CPUs (the instance's start is timed apart). The
per-task overhead is the time of empty tasks, and the extra wall time of 1-model tasks over the same
models trained in-process, divided by the task count.
"""
from __future__ import annotations

import argparse
import time

from backend.datasets import load_dataset
from backend.cluster import connect, disconnect
from backend.cluster.executor import RayExecutor
from backend.training.engine import TrainingData, resolve_device, use_all_cores
from backend.training.train_stage import resolve_hparams, train_chunk, train_chunks

ARCH = "mlp"


def local(ds, data, hparams, chunks) -> float:
    started = time.perf_counter()
    for s, e in chunks:
        train_chunk(data, ds.n_train, 0, s, e, 0.5, ARCH, hparams)
    return time.perf_counter() - started


def on_ray(ds, hparams, chunks) -> float:
    started = time.perf_counter()
    with RayExecutor("auto") as executor:
        for _ in train_chunks(executor, ds, chunks, seed=0, alpha=0.5, arch=ARCH, hparams=hparams, device="cpu",
                              precision="fp32"):
            pass
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=200)
    parser.add_argument("--batch-models", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--overhead-tasks", type=int, default=40)
    args = parser.parse_args()

    import ray

    ds = load_dataset("digits")
    hparams = resolve_hparams(ARCH, {})
    use_all_cores()
    data = TrainingData.from_dataset(ds, resolve_device("cpu"))
    chunks = [(a, min(a + args.batch_models, args.models)) for a in range(0, args.models, args.batch_models)]
    ones = [(a, a + 1) for a in range(args.overhead_tasks)]
    t_local = local(ds, data, hparams, chunks)
    t_local_ones = local(ds, data, hparams, ones)

    began = time.perf_counter()
    started = connect("auto", cpus=args.workers)  # RayExecutor reuses this instance
    t_start = time.perf_counter() - began
    try:
        noop = ray.remote(lambda: None).options(num_cpus=1)
        ray.get([noop.remote() for _ in range(4)])  # workers up
        t = time.perf_counter()
        ray.get([noop.remote() for _ in range(args.overhead_tasks)])
        t_noop = (time.perf_counter() - t) / args.overhead_tasks
        on_ray(ds, hparams, chunks[:1])  # every worker's first task pays the dataset's transfer
        t_ray = on_ray(ds, hparams, chunks)
        t_ray_ones = on_ray(ds, hparams, ones)
    finally:
        disconnect(started)

    print(f"{args.models} digits MLPs in tasks of {args.batch_models}; Ray: a local instance of {args.workers} CPUs "
          f"(started in {t_start:.1f} s, not counted)")
    print(f"{'':28s} {'seconds':>8s} {'models/s':>9s}")
    print(f"{'one process':28s} {t_local:8.2f} {args.models / t_local:9.2f}")
    print(f"{f'ray, {args.workers} workers':28s} {t_ray:8.2f} {args.models / t_ray:9.2f}")
    print(f"ratio ray / one process: {args.models / t_ray / (args.models / t_local):.2f}x models/s")
    print(f"per-task overhead: empty task {t_noop * 1e3:.1f} ms; 1-model tasks "
          f"{(t_ray_ones * args.workers - t_local_ones) / args.overhead_tasks:.3f} s per task more than in-process "
          f"(worker-seconds); size tasks so that one trains for much longer than that")


if __name__ == "__main__":
    main()
