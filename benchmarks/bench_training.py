"""Batched training engine vs a sequential one-model-at-a-time loop, and vs matmul peak.

Run: .venv/bin/python benchmarks/bench_training.py [--models 500] [--sequential 20]

Both sides train the same models (same subsets, seeds, hyperparameters) on the same machine in
one process. It prints models/s for each and their ratio, then the training GFLOP/s the batched
engine achieves (matmul FLOPs of forward and backward, counted exactly for the MLP) against a
large square torch.mm measured in the same run.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from backend.datasets import load_dataset
from backend.training.train_stage import resolve_hparams
from backend.training.subsets import model_seed, model_subset
from backend.training.engine import TrainingData, resolve_device, train_models, use_all_cores


def mlp_train_flops(hp: dict, n: int, d: int, c: int) -> float:
    """Matmul FLOPs to train one MLP: forward 2B(DH+HC), backward 2B(DH+2HC) (no input gradient), per step."""
    h, b = hp["hidden"], min(hp["batch_size"], n)
    steps = (n // b) * hp["epochs"]
    return steps * 2 * b * (2 * d * h + 3 * h * c)


def matmul_gflops(device: torch.device, size: int = 2048, repeat: int = 10) -> float:
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=500, help="models for the batched engine")
    parser.add_argument("--sequential", type=int, default=20, help="models for the sequential loop")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--alpha", type=float, default=0.5)
    args = parser.parse_args()

    device = resolve_device(args.device)
    threads = use_all_cores() if device.type == "cpu" else None
    ds = load_dataset("digits")
    data = TrainingData.from_dataset(ds, device)
    hp = resolve_hparams("mlp", {})
    subsets = np.stack([model_subset(0, i, ds.n_train, args.alpha) for i in range(args.models)])
    seeds = [model_seed(0, i) for i in range(args.models)]

    t = time.perf_counter()
    for i in range(args.sequential):
        train_models(data, subsets[i:i + 1], seeds[i:i + 1], "mlp", hp)
    seq = args.sequential / (time.perf_counter() - t)

    t = time.perf_counter()
    train_models(data, subsets, seeds, "mlp", hp)
    batched_s = time.perf_counter() - t
    batched = args.models / batched_s

    flops = mlp_train_flops(hp, subsets.shape[1], int(np.prod(ds.image_shape)), ds.n_classes) * args.models
    achieved = flops / batched_s / 1e9
    peak = matmul_gflops(device)
    print(f"device {device} threads {threads}")
    print(f"sequential loop : {seq:8.2f} models/s ({args.sequential} models)")
    print(f"batched engine  : {batched:8.2f} models/s ({args.models} models)")
    print(f"speed-up        : {batched / seq:8.1f}x")
    print(f"training        : {achieved:8.1f} GFLOP/s (matmul FLOPs only, end to end incl. margins)")
    print(f"torch.mm 2048^2 : {peak:8.1f} GFLOP/s")
    print(f"fraction of peak: {achieved / peak:8.1%}")


if __name__ == "__main__":
    main()
