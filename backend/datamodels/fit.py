"""Fitting datamodels: one LASSO per target from training-subset masks to model margins.

Ilyas et al. 2022: for each target, regress the margins of the models on the
0/1 masks of the training examples they saw, with an L1 penalty. A *training* target is fitted only
on the models that did not train on it (eq. 9). λ is chosen per target the paper's way: run the path on most
models, keep the λ with the lowest MSE on a validation split of models, refit on all models at it.

Inputs follow the run store: masks (M, N_train) bool and margins (M, N_train + N_test) float32,
margins columns being the targets (training examples first, then test examples).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from backend.progress import Progress
from backend.store.run_dir import atomic_path, transaction, write_npy_header
from backend.store.schema import BIAS, FIT, LAM, WEIGHTS
from backend.datamodels.lasso import CHUNK_BYTES, MaskRows, TargetBlock, lasso_path, lasso_solve
from backend.training.seeds import VALIDATION_STREAM

# Fewest models in each part of the split: a validation MSE needs a couple of models, a path a few more.
MIN_VALIDATION_MODELS = 2
MIN_FIT_MODELS = 10
# Target blocks are sized to keep their working memory (margins, row sets, solver state) near this.
BLOCK_BYTES = 1 << 30


class DatamodelError(ValueError):
    """Inputs a datamodel cannot be fitted on; the message names the fix."""


@dataclass
class DatamodelFit:
    """Datamodels of some targets.

    targets : ndarray (T,) margins columns fitted; weights : ndarray (T, n_train) float32, mapping a raw
    0/1 mask to a margin together with bias : ndarray (T,); lam : ndarray (T,) the chosen λ in
    scikit-learn `Lasso` units; info : settings, validation split, iterations, timings.
    """

    targets: np.ndarray
    weights: np.ndarray
    bias: np.ndarray
    lam: np.ndarray
    n_train: int
    n_test: int
    info: dict = field(default_factory=dict)


def validation_split(n_models: int, val_frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, validation) sorted model indices: a seeded random round(val_frac·M) models held out."""
    n_val = int(round(val_frac * n_models))
    order = np.random.default_rng(np.random.SeedSequence([seed, VALIDATION_STREAM])).permutation(n_models)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _min_models(val_frac: float) -> int:
    m = MIN_VALIDATION_MODELS + MIN_FIT_MODELS
    while round(val_frac * m) < MIN_VALIDATION_MODELS or m - round(val_frac * m) < MIN_FIT_MODELS:
        m += 1
    return m


def _check_inputs(masks, margins, n_train: int, targets, val_frac: float) -> np.ndarray:
    """Validate at the boundary; return the target columns."""
    if not 0 < val_frac < 1:
        raise DatamodelError(f"val_frac is {val_frac}: give a fraction strictly between 0 and 1, e.g. 0.1")
    if getattr(masks, "ndim", 0) != 2 or masks.dtype != np.bool_:
        desc = f"{masks.dtype} array of shape {masks.shape}" if hasattr(masks, "shape") else type(masks).__name__
        raise DatamodelError(f"masks is a {desc}, expected a 2-D bool array (models, n_train): "
                             "store masks as bool, e.g. masks.astype(bool)")
    if getattr(margins, "ndim", 0) != 2 or margins.dtype.kind != "f":
        desc = (f"{margins.dtype} array of shape {margins.shape}" if hasattr(margins, "shape")
                else type(margins).__name__)
        raise DatamodelError(f"margins is a {desc}, expected a 2-D float array (models, n_train + n_test)")
    n_models = masks.shape[0]
    if margins.shape[0] != n_models:
        raise DatamodelError(f"masks has {n_models} models but margins has {margins.shape[0]}: "
                             "give one margins row per mask row (same run, same model order)")
    if masks.shape[1] != n_train:
        raise DatamodelError(f"masks has {masks.shape[1]} columns but n_train is {n_train}: "
                             "give one mask column per training example")
    if margins.shape[1] <= n_train:
        raise DatamodelError(f"margins has {margins.shape[1]} columns, expected n_train + n_test = "
                             f"{n_train} + at least 1: store the training targets' margins, then the test targets'")
    need = _min_models(val_frac)
    if n_models < need:
        raise DatamodelError(f"{n_models} models are too few to fit datamodels with val_frac={val_frac}: "
                             f"need at least {need} ({MIN_VALIDATION_MODELS}+ to validate, {MIN_FIT_MODELS}+ to fit); "
                             "train more models")
    n_targets = margins.shape[1]
    columns = np.arange(n_targets) if targets is None else np.asarray(targets, dtype=np.int64).reshape(-1)
    if columns.size == 0:
        raise DatamodelError("no targets given: pass targets=None for all, or some margins columns")
    if columns.min() < 0 or columns.max() >= n_targets:
        raise DatamodelError(f"target column {int(columns.max() if columns.max() >= n_targets else columns.min())} "
                             f"is outside 0..{n_targets - 1}: give margins columns of this run")
    if len(np.unique(columns)) != len(columns):
        raise DatamodelError("targets repeat a column: give each target once")
    train_cols = columns[columns < n_train]
    if train_cols.size:
        kept_out = np.zeros(len(train_cols), dtype=np.int64)
        rows = max(1, CHUNK_BYTES // max(n_train, 1))
        for lo in range(0, n_models, rows):
            kept_out += (~np.asarray(masks[lo:lo + rows][:, train_cols], dtype=bool)).sum(axis=0)
        if (kept_out == 0).any():
            t = int(train_cols[np.argmax(kept_out == 0)])
            raise DatamodelError(f"training target train:{t} is in every model's subset, so no model can measure it "
                                 "(eq. 9 fits it on the models that left it out): train more models or use alpha < 1")
    rows = max(1, CHUNK_BYTES // (4 * n_targets))
    for lo in range(0, n_models, rows):
        chunk = np.asarray(margins[lo:lo + rows][:, columns])
        if not np.isfinite(chunk).all():
            i, j = np.argwhere(~np.isfinite(chunk))[0]
            raise DatamodelError(f"margins[{lo + i}, {columns[j]}] is {chunk[i, j]}: margins must be finite; "
                                 "retrain that model (it diverged) or drop it from the run")
    return columns


def _block_size(n_models: int, n_features: int, itemsize: int) -> int:
    """Targets per block so that margins, row sets and ~12 F-length solver vectors fit BLOCK_BYTES."""
    per_target = itemsize * (2 * n_models + 12 * n_features) + 8 * n_features
    return max(1, BLOCK_BYTES // per_target)


def fit_datamodels(masks, margins, n_train: int, *, val_frac: float = 0.1, n_lambdas: int = 50,
                   eps: float = 1e-3, tol: float = 1e-4, seed: int = 0, device="cpu",
                   block_size: int | None = None, targets=None, patience: int | None = 3,
                   max_iter: int = 1000, progress: Progress | None = None) -> DatamodelFit:
    """Fit the datamodel of each target (all margins columns by default).

    masks : ndarray (M, n_train) bool; margins : ndarray (M, n_train + n_test) float; either may be
    an np.memmap: targets are processed in blocks, reading only their columns.
    Per target: λ path of `n_lambdas` values from λ_max to λ_max·eps on the models outside the
    validation split (val_frac, seed); the λ with the lowest validation MSE (over the validation
    models the target's eq. 9 rows include) is refitted on all models. A path stops `patience` steps
    after its last improvement (None: run it whole); fast_l1, the paper's solver, stops at the first
    rise. A training target that no validation model leaves out gets the median λ/λ_max of the
    validated targets fitted before it and beside it (listed in info["unvalidated_targets"]).
    tol is scikit-learn's: duality gap ≤ tol·‖y_c‖²/M_t. progress counts target-steps ("λ step": n_lambdas
    path steps and one refit per target; backend.progress).
    """
    start = time.perf_counter()
    columns = _check_inputs(masks, margins, n_train, targets, val_frac)
    n_models = masks.shape[0]
    device = torch.device(device)
    fit_rows, val_rows = validation_split(n_models, val_frac, seed)
    rows_fit = MaskRows(masks, fit_rows, device=device)
    rows_val = MaskRows(masks, val_rows, device=device)
    rows_all = MaskRows(masks, np.arange(n_models), device=device)
    itemsize = torch.empty((), dtype=rows_fit.dtype).element_size()
    size = block_size or _block_size(n_models, n_train, itemsize)
    # Blocks hold one kind: test targets share a Gram matrix, training targets need per-target rows.
    kinds = [columns[columns < n_train], columns[columns >= n_train]]
    blocks = [kind[lo:lo + size] for kind in kinds for lo in range(0, len(kind), size)]

    T = len(columns)
    total = T * (n_lambdas + 1)
    done = 0
    if progress:
        progress(0, total, "λ step")

    def step(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, total, "λ step")

    weights = np.zeros((T, n_train), dtype=np.float32)
    bias = np.zeros(T, dtype=np.float32)
    lam = np.zeros(T, dtype=np.float32)
    path_iters = np.zeros(T, dtype=np.int64)
    steps_run = np.zeros(T, dtype=np.int64)
    refit_iters = np.zeros(T, dtype=np.int64)
    unconverged = 0  # solves stopped by max_iter rather than the duality gap
    best_step = np.zeros(T, dtype=np.int64)
    val_mse = np.full(T, np.nan)
    unvalidated: list[int] = []
    ratios: list[float] = []
    position = {int(c): i for i, c in enumerate(columns)}
    for cols in blocks:
        pos = np.array([position[int(c)] for c in cols])
        fit_block = TargetBlock(rows_fit, margins, cols, n_train)
        val_block = TargetBlock(rows_val, margins, cols, n_train)
        path = lasso_path(fit_block, n_lambdas=n_lambdas, eps=eps, tol=tol, max_iter=max_iter,
                          score=val_block.mse, patience=patience, progress=step)
        ran = path.n_iter >= 0
        unconverged += int((path.n_iter >= max_iter).sum())
        path_iters[pos] = np.where(ran, path.n_iter, 0).sum(axis=1)
        steps_run[pos] = ran.sum(axis=1)
        best_step[pos] = path.best
        chosen = path.lambdas[np.arange(len(cols)), path.best]
        val_mse[pos] = path.scores[np.arange(len(cols)), path.best]
        lam_max = path.lambdas[:, 0]
        has_val = val_block.n_rows.cpu().numpy() > 0
        ok = has_val & (lam_max > 0)
        ratios.extend((chosen[ok] / lam_max[ok]).tolist())
        if not has_val.all():
            if not ratios:
                raise DatamodelError("no target has validation models that leave it out: "
                                     "raise val_frac or train more models")
            chosen = np.where(has_val, chosen, np.median(ratios) * lam_max)
            unvalidated.extend(int(c) for c in cols[~has_val])
        full_block = TargetBlock(rows_all, margins, cols, n_train)
        w, b, stats = lasso_solve(full_block, torch.as_tensor(chosen), path.weights, tol=tol, max_iter=max_iter)
        weights[pos] = w.T.cpu().numpy()
        bias[pos] = b.cpu().numpy()
        lam[pos] = chosen
        refit_iters[pos] = stats.n_iter.cpu().numpy()
        unconverged += int((refit_iters[pos] >= max_iter).sum())
        step(len(cols))

    info = {
        "n_models": n_models, "n_fit_models": len(fit_rows), "n_val_models": len(val_rows),
        "val_frac": val_frac, "seed": seed, "val_models": val_rows,
        "n_lambdas": n_lambdas, "eps": eps, "tol": tol, "max_iter": max_iter, "patience": patience,
        "solver": "batched FISTA, adaptive restart and steps, duality-gap stop (backend.datamodels.lasso)",
        "dtype": str(rows_fit.dtype).replace("torch.", ""), "device": str(device),
        "block_size": size, "n_blocks": len(blocks),
        "path_iterations": path_iters, "path_steps_run": steps_run, "refit_iterations": refit_iters,
        "best_step": best_step, "val_mse": val_mse, "unvalidated_targets": unvalidated,
        "unconverged_solves": unconverged,
        "wall_time_s": time.perf_counter() - start,
    }
    return DatamodelFit(columns, weights, bias, lam, n_train, margins.shape[1] - n_train, info)


def fit_summary(fit: DatamodelFit) -> dict:
    """The JSON-able record of a fit for fit.json: settings, split and iteration statistics."""
    info = fit.info
    summary = {k: v for k, v in info.items() if not isinstance(v, np.ndarray)}
    summary["val_models"] = np.asarray(info["val_models"]).tolist()
    summary["targets"] = "all" if len(fit.targets) == fit.n_train + fit.n_test else fit.targets.tolist()
    summary["n_targets"] = len(fit.targets)
    summary["n_train"], summary["n_test"] = fit.n_train, fit.n_test
    its, steps, refit = info["path_iterations"], info["path_steps_run"], info["refit_iterations"]
    summary["iterations"] = {
        "path_total": int(its.sum()), "path_per_step_mean": float(its.sum() / max(steps.sum(), 1)),
        "path_steps_run_mean": float(steps.mean()), "refit_total": int(refit.sum()),
        "refit_mean": float(refit.mean()), "refit_max": int(refit.max()),
    }
    summary["best_step_mean"] = float(info["best_step"].mean())
    summary["val_mse_mean"] = float(np.nanmean(info["val_mse"])) if np.isfinite(info["val_mse"]).any() else None
    return summary


def save_datamodels(run_dir, fit: DatamodelFit, *, rows_per_write: int = 1024) -> None:
    """Write weights.npy (N_train+N_test, N_train) float32, bias.npy, lam.npy and fit.json atomically.

    Targets the fit did not cover get zero weights and NaN bias and λ. weights.npy is written in blocks
    of rows with plain writes (a full disk is an OSError, never a SIGBUS through a memory map), so its
    size never has to fit in memory. The four files commit as one transaction: a kill leaves the old fit
    or the new one, never new weights beside old biases.
    """
    run_dir = Path(run_dir)
    n_targets = fit.n_train + fit.n_test
    order = np.argsort(fit.targets)
    cols = fit.targets[order]

    def write_weights(tmp: Path) -> None:
        with open(tmp, "wb") as out:
            write_npy_header(out, np.dtype(np.float32), (n_targets, fit.n_train))
            for lo in range(0, n_targets, rows_per_write):
                hi = min(lo + rows_per_write, n_targets)
                block = np.zeros((hi - lo, fit.n_train), dtype=np.float32)
                a, b = np.searchsorted(cols, [lo, hi])
                block[cols[a:b] - lo] = np.asarray(fit.weights[order[a:b]], dtype=np.float32)
                out.write(block.tobytes())

    def write_vector(values: np.ndarray) -> Callable[[Path], None]:
        full = np.full(n_targets, np.nan, dtype=np.float32)
        full[fit.targets] = values

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.save(f, full)
        return write

    def write_json(tmp: Path) -> None:
        with open(tmp, "w") as f:
            f.write(json.dumps(fit_summary(fit), indent=2))

    with transaction(run_dir, "fit"):
        with atomic_path(WEIGHTS.path(run_dir)) as tmp:
            write_weights(tmp)
        with atomic_path(BIAS.path(run_dir)) as tmp:
            write_vector(fit.bias)(tmp)
        with atomic_path(LAM.path(run_dir)) as tmp:
            write_vector(fit.lam)(tmp)
        with atomic_path(FIT.path(run_dir)) as tmp:
            write_json(tmp)


def fit_run(run, *, val_frac: float = 0.1, n_lambdas: int = 50, eps: float = 1e-3, seed: int = 0,
            device: str = "auto", progress: Progress | None = None) -> dict:
    """The `fit` stage: fit every target of the run, write weights.npy, bias.npy, lam.npy and fit.json.

    Returns the fit.json record (fit_summary). progress counts λ steps (backend.progress).
    """
    from backend.training.engine import resolve_device

    fit = fit_datamodels(run.masks, run.margins, run.n_train, val_frac=val_frac, n_lambdas=n_lambdas, eps=eps,
                         seed=seed, device=resolve_device(device), progress=progress)
    save_datamodels(run.dir, fit)
    return fit_summary(fit)
