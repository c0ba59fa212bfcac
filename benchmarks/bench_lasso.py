"""Batched LASSO paths (backend.datamodels.lasso) against scikit-learn's lasso_path, side by side on one machine.

Same λ grid per target (its own λ_max down to λ_max·eps), same tolerance (sklearn's duality-gap
criterion), three ways: sklearn `lasso_path` on centred data, sklearn with a precomputed Gram
matrix (`precompute=G, Xy=...`), both on a sample of --targets targets, and ours, which batches
targets, on every target of the kind (--batch caps it). Prints fits/s (one fit = one target's whole
path) by wall clock and by process CPU time (the machine may be shared: CPU time is what a quiet
machine's wall clock would be for one thread), the speed ratios, and the largest relative
objective excess of ours over plain sklearn at every λ of the sampled targets.

    python benchmarks/bench_lasso.py                       # synthetic digits-sized problem
    python benchmarks/bench_lasso.py --run data/runs/NAME  # a real run's masks.npy / margins.npy
    python benchmarks/bench_lasso.py --fit                 # also time fit_datamodels on every target

Test targets share all models, so one Gram matrix serves them all; training targets (--kind train)
use only the models that left them out (eq. 9), so sklearn's Gram variant needs one Gram per
target, and its time is counted.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import lasso_path as sk_lasso_path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from backend.datamodels.fit import fit_datamodels  # noqa: E402
from backend.datamodels.lasso import MaskRows, TargetBlock, lasso_path  # noqa: E402
from backend.training.subsets import model_subset, subsets_to_masks  # noqa: E402


def synthetic(n_models: int, n_train: int, n_test: int, alpha: float, seed: int):
    """A run's own random subsets (backend.training.subsets); margins = sparse linear signal (30 examples per target) + noise."""
    masks = subsets_to_masks(np.stack([model_subset(seed, m, n_train, alpha) for m in range(n_models)]), n_train)
    rng = np.random.default_rng(seed)
    n_targets = n_train + n_test
    w = np.zeros((n_train, n_targets), dtype=np.float32)
    for t in range(n_targets):
        w[rng.choice(n_train, 30, replace=False), t] = rng.normal(0, 0.3, 30)
    w[np.arange(n_train), np.arange(n_train)] = 2.0
    margins = masks.astype(np.float32) @ w + rng.normal(0, 1, (n_models, n_targets)).astype(np.float32) + 2
    return masks, margins


def objective(x, y, w, b, lam):
    r = y - b - x @ w
    return r @ r / (2 * len(y)) + lam * np.abs(w).sum()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, help="run directory with masks.npy and margins.npy")
    p.add_argument("--models", type=int, default=5000)
    p.add_argument("--n-train", type=int, default=1297)
    p.add_argument("--n-test", type=int, default=500)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--targets", type=int, default=32, help="targets sampled for sklearn and the objective check")
    p.add_argument("--batch", type=int, default=None, help="targets in our batch (default: all of the kind)")
    p.add_argument("--kind", choices=("test", "train"), default="test")
    p.add_argument("--n-lambdas", type=int, default=50)
    p.add_argument("--eps", type=float, default=1e-3)
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fit", action="store_true", help="also time fit_datamodels on every target")
    args = p.parse_args()

    if args.run:
        masks = np.load(args.run / "masks.npy", mmap_mode="r", allow_pickle=False)
        margins = np.load(args.run / "margins.npy", mmap_mode="r", allow_pickle=False)
        source = str(args.run)
    else:
        masks, margins = synthetic(args.models, args.n_train, args.n_test, args.alpha, args.seed)
        source = "synthetic"
    n_models, n_train = masks.shape
    n_test = margins.shape[1] - n_train
    pool = np.arange(n_train) if args.kind == "train" else np.arange(n_train, n_train + n_test)

    def spread(n: int) -> np.ndarray:
        return pool[np.linspace(0, len(pool) - 1, min(n, len(pool))).round().astype(int)]
    columns = spread(args.targets)
    batch = np.union1d(pool if args.batch is None else spread(args.batch), columns)
    print(f"{source}: {n_models} models, {n_train} features; {len(batch)} {args.kind} targets for ours, "
          f"{len(columns)} for sklearn; {args.n_lambdas} λ down to {args.eps}·λ_max, tol {args.tol}; "
          f"torch threads {torch.get_num_threads()}, cpus {len(os.sched_getaffinity(0))}, "
          f"load {os.getloadavg()[0]:.1f}")

    rows = MaskRows(masks, np.arange(n_models))
    t0, c0 = time.perf_counter(), time.process_time()
    big = lasso_path(TargetBlock(rows, margins, batch, n_train), n_lambdas=args.n_lambdas, eps=args.eps, tol=args.tol)
    ours, ours_cpu = time.perf_counter() - t0, time.process_time() - c0
    # The sampled targets again, alone and keeping every λ's solution, for the objective check.
    path = lasso_path(TargetBlock(rows, margins, columns, n_train), n_lambdas=args.n_lambdas, eps=args.eps,
                      tol=args.tol, keep_path=True)

    x_all = np.asarray(masks, dtype=np.float64)
    y_all = np.asarray(margins[:, columns], dtype=np.float64)
    shared_gram = None
    plain = gram = plain_cpu = gram_cpu = 0.0
    worst, worst_gram = -np.inf, -np.inf
    for j, c in enumerate(columns):
        inc = ~x_all[:, c].astype(bool) if c < n_train else np.ones(n_models, dtype=bool)
        x, y = x_all[inc], y_all[inc, j]
        lams = path.lambdas[j]
        t0, c0 = time.perf_counter(), time.process_time()
        xc, yc = x - x.mean(0), y - y.mean()  # centring is part of each sklearn fit
        _, coefs, _ = sk_lasso_path(xc, yc, alphas=lams, tol=args.tol)
        plain, plain_cpu = plain + time.perf_counter() - t0, plain_cpu + time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        xc, yc = x - x.mean(0), y - y.mean()
        if c < n_train or shared_gram is None:
            g = xc.T @ xc
            shared_gram = g if c >= n_train else None
        else:
            g = shared_gram
        _, coefs_g, _ = sk_lasso_path(xc, yc, alphas=lams, tol=args.tol, precompute=g, Xy=xc.T @ yc)
        gram, gram_cpu = gram + time.perf_counter() - t0, gram_cpu + time.process_time() - c0
        for k, lam in enumerate(lams):
            ref = objective(xc, yc, coefs[:, k], 0.0, lam)
            w, b = path.coefs[k][:, j], path.intercepts[k, j]
            worst = max(worst, (objective(x, y, w, b, lam) - ref) / ref)
            worst_gram = max(worst_gram, (objective(xc, yc, coefs_g[:, k], 0.0, lam) - ref) / ref)

    n, nb = len(columns), len(batch)
    print(f"ours (batched, torch):     {nb / ours:8.2f} fits/s wall, {nb / ours_cpu:8.2f} per CPU-s  "
          f"({ours:.1f} s wall, {ours_cpu:.1f} s CPU; {big.n_iter.sum() / nb:.0f} products per target)")
    print(f"sklearn lasso_path:        {n / plain:8.2f} fits/s wall, {n / plain_cpu:8.2f} per CPU-s  "
          f"({plain:.1f} s wall, {plain_cpu:.1f} s CPU)")
    print(f"sklearn lasso_path, Gram:  {n / gram:8.2f} fits/s wall, {n / gram_cpu:8.2f} per CPU-s  "
          f"({gram:.1f} s wall, {gram_cpu:.1f} s CPU)")
    print(f"speed-up, wall: {nb / ours / (n / plain):.1f}x vs plain, {nb / ours / (n / gram):.1f}x vs Gram; "
          f"per CPU-s: {nb / ours_cpu / (n / plain_cpu):.1f}x vs plain, {nb / ours_cpu / (n / gram_cpu):.1f}x vs Gram")
    print(f"largest relative objective excess over plain sklearn: ours {worst:.2e}, sklearn Gram {worst_gram:.2e}")

    if args.fit:
        t0, c0 = time.perf_counter(), time.process_time()
        fit = fit_datamodels(masks, margins, n_train)
        info = fit.info
        print(f"fit_datamodels, all {len(fit.targets)} targets (path on {info['n_fit_models']} models, validation "
              f"on {info['n_val_models']}, refit on {n_models}): {time.perf_counter() - t0:.1f} s wall, "
              f"{time.process_time() - c0:.1f} s CPU; "
              f"{info['path_iterations'].mean():.0f} path + {info['refit_iterations'].mean():.0f} refit products "
              f"per target, {info['path_steps_run'].mean():.1f} of {info['n_lambdas']} λ steps run; "
              f"load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
