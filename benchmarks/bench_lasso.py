"""Batched LASSO paths (backend.datamodels.lasso) against scikit-learn, celer and skglm, side by side on one machine.

Same λ grid per target (its own λ_max down to λ_max·eps) and the same tolerance for every solver, on a
sample of --targets targets of each kind: test targets (every model) and training targets (the models
that left them out, eq. 9). Solvers: ours, which batches every target of the kind (--batch caps it);
sklearn `lasso_path` on centred data; sklearn with a precomputed Gram matrix (`precompute=G, Xy=...`;
training targets need one Gram per target, and its time is counted); celer's `celer_path`; skglm's
`Lasso` warm-started along the grid. Tolerances: sklearn, celer and ours stop on the duality gap
≤ tol·‖y_c‖²/M; skglm stops on its working-set KKT violation ≤ tol. Prints, per solver, wall and
process CPU time per target (one thread unless --threads: the machine may be shared, CPU time is
what a quiet machine's wall clock would be), the CPU speed-up over sklearn, and the largest relative
objective excess over plain sklearn at every λ of the sampled targets.

    python benchmarks/bench_lasso.py --run data/runs/NAME  # a real run's masks.npy / margins.npy
    python benchmarks/bench_lasso.py                        # synthetic digits-sized problem
    python benchmarks/bench_lasso.py --models 2000 --n-train 50000 --n-test 200 --kind test  # CIFAR-wide
    python benchmarks/bench_lasso.py --fit                  # also time fit_datamodels on every target
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/torch load their thread pools
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import lasso_path as sk_lasso_path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from backend.datamodels.fit import fit_datamodels  # noqa: E402
from backend.datamodels.lasso import MaskRows, TargetBlock, lasso_path  # noqa: E402
from backend.training.subsets import model_subset, subsets_to_masks  # noqa: E402


def synthetic(n_models: int, n_train: int, n_test: int, alpha: float, seed: int):
    """A run's own random subsets (backend.training.subsets); margins = sparse linear signal (30 examples per target) + noise."""
    import scipy.sparse as sp

    masks = subsets_to_masks(np.stack([model_subset(seed, m, n_train, alpha) for m in range(n_models)]), n_train)
    rng = np.random.default_rng(seed)
    n_targets = n_train + n_test
    rows = np.concatenate([rng.choice(n_train, 30, replace=False) for _ in range(n_targets)] + [np.arange(n_train)])
    cols = np.concatenate([np.repeat(np.arange(n_targets), 30), np.arange(n_train)])
    vals = np.concatenate([rng.normal(0, 0.3, 30 * n_targets), np.full(n_train, 2.0)])
    w = sp.csc_matrix((vals, (rows, cols)), shape=(n_train, n_targets), dtype=np.float32)
    margins = np.asarray((w.T @ masks.T.astype(np.float32)).T, dtype=np.float32)
    margins += rng.normal(0, 1, (n_models, n_targets)).astype(np.float32) + 2
    return masks, margins


def objective(x, y, w, b, lam):
    r = y - b - x @ w
    return r @ r / (2 * len(y)) + lam * np.abs(w).sum()


def peers(x, y, lams, tol, shared_gram):
    """Each peer's path on one target's rows (centring counted in each): {name: (coefs (F, K), wall s, CPU s)}."""
    from celer import celer_path
    from skglm import Lasso as SkglmLasso

    def timed(solve):
        t0, c0 = time.perf_counter(), time.process_time()
        xc, yc = x - x.mean(0), y - y.mean()
        coefs = solve(xc, yc)
        return coefs, time.perf_counter() - t0, time.process_time() - c0

    def gram(xc, yc):
        g = shared_gram if shared_gram is not None else xc.T @ xc
        return sk_lasso_path(xc, yc, alphas=lams, tol=tol, precompute=g, Xy=xc.T @ yc)[1]

    def skglm(xc, yc):
        model, coefs = SkglmLasso(alpha=lams[0], tol=tol, fit_intercept=False, warm_start=True), []
        for lam in lams:
            model.alpha = lam
            coefs.append(model.fit(xc, yc).coef_.copy())
        return np.stack(coefs, axis=1)
    return {"sklearn lasso_path": timed(lambda xc, yc: sk_lasso_path(xc, yc, alphas=lams, tol=tol)[1]),
            "sklearn lasso_path, Gram": timed(gram),
            "celer celer_path": timed(lambda xc, yc: celer_path(xc, yc, "lasso", alphas=lams, tol=tol)[1]),
            "skglm Lasso, warm starts": timed(skglm)}


def compare(masks, margins, kind: str, args) -> None:
    """One kind of targets: ours on the batch, every peer on the sample, one table."""
    n_models, n_train = masks.shape
    n_test = margins.shape[1] - n_train
    pool = np.arange(n_train) if kind == "train" else np.arange(n_train, n_train + n_test)

    def spread(n: int) -> np.ndarray:
        return pool[np.linspace(0, len(pool) - 1, min(n, len(pool))).round().astype(int)]
    columns = spread(args.targets)
    batch = np.union1d(pool if args.batch is None else spread(args.batch), columns)
    print(f"\n{kind} targets: {len(batch)} for ours (one batch), {len(columns)} for the others; "
          f"load {os.getloadavg()[0]:.1f}")
    rows = MaskRows(masks, np.arange(n_models))
    settings = dict(n_lambdas=args.n_lambdas, eps=args.eps, tol=args.tol)
    t0, c0 = time.perf_counter(), time.process_time()
    big = lasso_path(TargetBlock(rows, margins, batch, n_train), **settings)
    results = {"ours (batched, torch)": (None, (time.perf_counter() - t0) / len(batch),
                                         (time.process_time() - c0) / len(batch))}
    # The sampled targets again, alone and keeping every λ's solution, for the objective check.
    path = lasso_path(TargetBlock(rows, margins, columns, n_train), keep_path=True, **settings)
    x_all = np.asarray(masks, dtype=np.float64)
    y_all = np.asarray(margins[:, columns], dtype=np.float64)
    shared = None
    if kind == "test":
        xc = x_all - x_all.mean(0)
        shared = xc.T @ xc  # shared by every test target: built once, not counted
    worst = {name: -np.inf for name in ("ours (batched, torch)", "sklearn lasso_path, Gram", "celer celer_path",
                                        "skglm Lasso, warm starts")}
    for j, c in enumerate(columns):
        inc = ~x_all[:, c].astype(bool) if c < n_train else np.ones(n_models, dtype=bool)
        x, y = x_all[inc], y_all[inc, j]
        lams = path.lambdas[j]
        runs = peers(x, y, lams, args.tol, shared)
        for name, (_, wall, cpu) in runs.items():
            w0, c0_ = results.get(name, (None, 0.0, 0.0))[1:]
            results[name] = (None, w0 + wall / len(columns), c0_ + cpu / len(columns))
        xc, yc = x - x.mean(0), y - y.mean()
        ref = runs["sklearn lasso_path"][0]
        for k, lam in enumerate(lams):
            base = objective(xc, yc, ref[:, k], 0.0, lam)
            mine = objective(x, y, path.coefs[k][:, j], path.intercepts[k, j], lam)
            worst["ours (batched, torch)"] = max(worst["ours (batched, torch)"], (mine - base) / base)
            for name in list(worst)[1:]:
                worst[name] = max(worst[name], (objective(xc, yc, runs[name][0][:, k], 0.0, lam) - base) / base)
    sk_cpu = results["sklearn lasso_path"][2]
    print(f"{'solver':28s} {'ms/target wall':>15s} {'ms/target CPU':>14s} {'CPU vs sklearn':>15s} "
          f"{'worst objective excess':>23s}")
    for name, (_, wall, cpu) in results.items():
        excess = f"{worst[name]:.1e}" if name in worst else "(reference)"
        print(f"{name:28s} {1e3 * wall:15.1f} {1e3 * cpu:14.1f} {sk_cpu / cpu:14.1f}x {excess:>23s}")
    print(f"ours: {big.n_iter[big.n_iter > 0].sum() / len(batch):.0f} products per target; load {os.getloadavg()[0]:.1f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, help="run directory with masks.npy and margins.npy")
    p.add_argument("--models", type=int, default=5000)
    p.add_argument("--n-train", type=int, default=1297)
    p.add_argument("--n-test", type=int, default=500)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--targets", type=int, default=16, help="targets of each kind sampled for the peers and the objective check")
    p.add_argument("--batch", type=int, default=None, help="targets in our batch (default: all of the kind)")
    p.add_argument("--kind", choices=("test", "train", "both"), default="both")
    p.add_argument("--n-lambdas", type=int, default=50)
    p.add_argument("--eps", type=float, default=1e-3)
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads for ours (the peers run one thread)")
    p.add_argument("--fit", action="store_true", help="also time fit_datamodels on every target")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=ConvergenceWarning)  # sklearn's max_iter on small λ: excess shows it

    if args.run:
        masks = np.load(args.run / "masks.npy", mmap_mode="r", allow_pickle=False)
        margins = np.load(args.run / "margins.npy", mmap_mode="r", allow_pickle=False)
        source = str(args.run)
    else:
        masks, margins = synthetic(args.models, args.n_train, args.n_test, args.alpha, args.seed)
        source = "synthetic"
    print(f"{source}: {masks.shape[0]} models, {masks.shape[1]} features; {args.n_lambdas} λ down to "
          f"{args.eps}·λ_max, tol {args.tol}; torch threads {torch.get_num_threads()}, "
          f"cpus {len(os.sched_getaffinity(0))}, load {os.getloadavg()[0]:.1f}")
    for kind in ("test", "train") if args.kind == "both" else (args.kind,):
        compare(masks, margins, kind, args)

    if args.fit:
        n_models, n_train = masks.shape
        t0, c0 = time.perf_counter(), time.process_time()
        fit = fit_datamodels(masks, margins, n_train)
        info = fit.info
        print(f"\nfit_datamodels, all {len(fit.targets)} targets (path on {info['n_fit_models']} models, validation "
              f"on {info['n_val_models']}, refit on {n_models}): {time.perf_counter() - t0:.1f} s wall, "
              f"{time.process_time() - c0:.1f} s CPU; "
              f"{info['path_iterations'].mean():.0f} path + {info['refit_iterations'].mean():.0f} refit products "
              f"per target, {info['path_steps_run'].mean():.1f} of {info['n_lambdas']} λ steps run; "
              f"load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
