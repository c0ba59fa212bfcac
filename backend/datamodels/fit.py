"""Fitting datamodels: one LASSO per target from training-subset masks to model margins.

Ilyas et al. 2022: for each target, regress the margins of the models on the
0/1 masks of the training examples they saw, with an L1 penalty. A *training* target is fitted only
on the models that did not train on it (eq. 9). λ is chosen per target the paper's way: run the path on most
models, keep the λ with the lowest MSE on a validation split of models, refit on all models at it.

Inputs follow the run store: masks (M, N_train) bool and margins (M, N_train + N_test) float32,
margins columns being the targets (training examples first, then test examples).
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch

from backend.cluster.executor import LocalExecutor
from backend.progress import Progress, part
from backend.store.rows import read_columns, write_transposed
from backend.store.schema import BIAS, FIT, LAM, WEIGHTS, WEIGHTS_BY_TRAIN
from backend.datamodels.queries import fitted_targets
from backend.datamodels.lasso import (CHUNK_BYTES, RESIDENT_BYTES, SCORE_RTOL, MaskRows, TargetBlock, lasso_path,
                                      lasso_solve)
from backend.training.seeds import VALIDATION_STREAM

# Fewest models in each part of the split: a validation MSE needs a couple of models, a path a few more.
MIN_VALIDATION_MODELS = 2
MIN_FIT_MODELS = 10
# Memory budget of a fit (`fit --memory`), and what the interpreter, numpy and torch hold before it starts.
DEFAULT_MEMORY = 2 << 30
BASE_BYTES = 400 << 20
# Staged rows copied at a time into a partial fit's full-size weights (fit --targets): within the fit's budget.
MERGE_BYTES = 32 << 20


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
    """Validate at the boundary; return the target columns (finiteness is checked as each block is read)."""
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
    return columns


def memory_model(n_models: int, n_train: int, memory: int) -> tuple[int, int, bool]:
    """(fixed bytes, bytes per target in a block, whether test targets use the Gram matrix) of a fit.

    Peak RSS ≈ fixed + block_targets · per_target, whatever the number of targets: the outputs are
    written block by block (backend.store.blocks) and each block's margin columns are read through a
    mapping closed after the read (backend.store.rows.read_columns). fixed = the interpreter and torch
    (BASE_BYTES), the masks file's pages (M·F bytes), the fit, validation and all-model row sets (on a CPU
    the 0/1 rows and their int8 transpose for the fixed-point products, lasso.fixed_mm: 2 bytes per entry,
    2M·F entries; each set above RESIDENT_BYTES as float is re-read in CHUNK_BYTES chunks instead), a working
    set's rows of the transpose (at most F/2 of them: M·F/2 bytes; a streamed chunk's float columns instead)
    and, when 16·F² ≤ memory/4, the two F×F Gram matrices (float32, summed in float64). per_target = float32
    margins (read once, then split into fit/validation/all rows, plus the row sets of eq. 9: 5·M) and ~47
    F-length vectors: the solver state (path, FISTA, the written row) and the fixed-point products' digits,
    int32 sums and float copies, with the allocator's slack (measured: the peak RSS of fits of full
    Fashion-MNIST at 31 and 62 targets a block rose 11.3 MB a target).
    """
    def row_set(n: int) -> int:
        return 2 * n * n_train if 4 * n * n_train <= RESIDENT_BYTES else 5 * CHUNK_BYTES // 4

    n_val = n_models // 10
    gram = 16 * n_train * n_train <= memory // 4
    # A working set's rows of the int8 transpose, or of a streamed chunk its float columns (at most half the
    # features: lasso.WORKING_SET_MAX).
    gathered = n_models * n_train // 2 if 4 * n_models * n_train <= RESIDENT_BYTES else CHUNK_BYTES // 2
    fixed = (BASE_BYTES + n_models * n_train + row_set(n_models - n_val) + row_set(n_val) + row_set(n_models)
             + gathered + (16 * n_train * n_train if gram else 0))
    return fixed, 4 * (5 * n_models + 47 * n_train), gram


def block_targets_for(memory: int, n_models: int, n_train: int) -> int:
    """Targets per block that keep a fit's peak RSS within `memory` bytes (memory_model)."""
    fixed, per_target, _ = memory_model(n_models, n_train, memory)
    if memory < fixed + per_target:
        raise DatamodelError(f"--memory {format_bytes(memory)} is too little for {n_models:,} models × {n_train:,} "
                             f"training examples: the fit needs {format_bytes(fixed)} plus {format_bytes(per_target)} "
                             f"per target in a block; give at least --memory {format_bytes(fixed + 64 * per_target)}")
    return int((memory - fixed) // per_target)


def format_bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n}B"


def _read_block(margins, columns: np.ndarray) -> np.ndarray:
    """The block's margins (M, T) float32, read once (backend.store.rows.read_columns), checked finite."""
    y = read_columns(margins, columns)
    if not np.isfinite(y).all():
        i, j = np.argwhere(~np.isfinite(y))[0]
        raise DatamodelError(f"margins[{i}, {columns[j]}] is {y[i, j]}: margins must be finite; "
                             "retrain that model (it diverged) or drop it from the run")
    return y


# Per-target results of a block: the datamodel and the diagnostics fit.json summarises.
DIAGNOSTICS = {"path_iterations": np.int64, "path_steps_run": np.int64, "refit_iterations": np.int64,
               "best_step": np.int64, "val_mse": np.float64, "lam_ratio": np.float64, "unvalidated": np.bool_,
               "unconverged": np.int64}


class _Fitter:
    """The paper's per-target procedure on one set of masks and margins, a block of targets at a time."""

    def __init__(self, masks, margins, n_train: int, *, val_frac: float, n_lambdas: int, eps: float, tol: float,
                 seed: int, device, max_iter: int, patience: int | None, gram: bool, steps: _Steps):
        self.margins, self.n_train, self.gram, self.steps = margins, n_train, gram, steps
        self.solve_settings = dict(n_lambdas=n_lambdas, eps=eps, tol=tol, max_iter=max_iter, patience=patience)
        n_models = masks.shape[0]
        self.fit_rows, self.val_rows = validation_split(n_models, val_frac, seed)
        self.rows_fit = MaskRows(masks, self.fit_rows, device=device)
        self.rows_val = MaskRows(masks, self.val_rows, device=device)
        self.rows_all = MaskRows(masks, np.arange(n_models), device=device)

    def fit(self, columns: np.ndarray, ratios: np.ndarray) -> dict[str, np.ndarray]:
        """weights (T, F) float32, bias, lam (T,) float32 and the DIAGNOSTICS of targets `columns`.

        ratios : λ/λ_max of validated targets fitted before; an unvalidated target takes their median
        together with this block's. The block's margin columns are read once.
        """
        y = _read_block(self.margins, columns)
        parts = []
        # Training targets need per-target rows, test targets share a Gram matrix: one solve per kind.
        for kind in (columns < self.n_train, columns >= self.n_train):
            if kind.any():
                parts.append(self._solve(columns[kind], y[:, kind], ratios))
                ratios = np.concatenate([ratios, parts[-1]["lam_ratio"][np.isfinite(parts[-1]["lam_ratio"])]])
        return {key: np.concatenate([kind_out[key] for kind_out in parts]) for key in parts[0]}

    def _solve(self, cols: np.ndarray, y: np.ndarray, ratios: np.ndarray) -> dict[str, np.ndarray]:
        settings, max_iter = self.solve_settings, self.solve_settings["max_iter"]
        fit_block = TargetBlock(self.rows_fit, None, cols, self.n_train, y=y[self.fit_rows], gram=self.gram)
        val_block = TargetBlock(self.rows_val, None, cols, self.n_train, y=y[self.val_rows], gram=self.gram)
        path = lasso_path(fit_block, n_lambdas=settings["n_lambdas"], eps=settings["eps"], tol=settings["tol"],
                          max_iter=max_iter, score=val_block.mse, patience=settings["patience"],
                          progress=self.steps.part(len(cols) * settings["n_lambdas"]))
        ran = path.n_iter >= 0
        T = len(cols)
        chosen = path.lambdas[np.arange(T), path.best]
        lam_max = path.lambdas[:, 0]
        has_val = val_block.n_rows.cpu().numpy() > 0
        ok = has_val & (lam_max > 0)
        ratio = np.full(T, np.nan)
        ratio[ok] = chosen[ok] / lam_max[ok]
        if not has_val.all():
            known = np.concatenate([ratios, ratio[ok]])
            if not len(known):
                raise DatamodelError("no target has validation models that leave it out: "
                                     "raise val_frac or train more models")
            chosen = np.where(has_val, chosen, np.median(known) * lam_max)
        full_block = TargetBlock(self.rows_all, None, cols, self.n_train, y=y, gram=self.gram)
        w, b, stats = lasso_solve(full_block, torch.as_tensor(chosen), path.weights, tol=settings["tol"],
                                  max_iter=max_iter)
        refit_iters = stats.n_iter.cpu().numpy()
        self.steps.add(T * (settings["n_lambdas"] + 1))
        return {"weights": w.T.cpu().numpy(), "bias": b.cpu().numpy(), "lam": chosen.astype(np.float32),
                "path_iterations": np.where(ran, path.n_iter, 0).sum(axis=1), "path_steps_run": ran.sum(axis=1),
                "refit_iterations": refit_iters, "best_step": path.best,
                "val_mse": path.scores[np.arange(T), path.best], "lam_ratio": ratio, "unvalidated": ~has_val,
                "unconverged": (path.n_iter >= max_iter).sum(axis=1) + (refit_iters >= max_iter)}


def prior_ratios(out, block: int) -> np.ndarray:
    """λ/λ_max of the validated targets of the blocks before `block` (all on disk: blocks are written in order)."""
    ratios = np.asarray(out.view("lam_ratio")[:out.rows(block).start])
    return ratios[np.isfinite(ratios)]


def _block_fitter(run_dir: str, settings: dict, device: str, steps: _Steps | None) -> _Fitter:
    """A worker's state for fitting blocks: the run opened by path, its masks resident on the device."""
    from backend.store.run_dir import Run
    from backend.training.engine import resolve_device

    run = Run(run_dir)
    return _Fitter(run.masks, run.margins, run.n_train, device=torch.device(resolve_device(device)),
                   steps=steps or _Steps(0, 0, None), **settings)


def _block_task(fitter: _Fitter, block: int, columns: np.ndarray, ratios: np.ndarray) -> dict[str, np.ndarray]:
    """One block of targets on an executor; `ratios` are the prior λ ratios it was handed (prior_ratios)."""
    return dict(fitter.fit(columns, ratios), ratios=ratios)


def _fit_blocks(executor, out, run_dir, todo: np.ndarray, missing: list[int], settings: dict, device: str,
                steps: _Steps, steps_per_target: int) -> None:
    """Fit the blocks `missing` of the BlockedOutput `out` on `executor` and write them in order.

    A target no validation model leaves out borrows the median λ ratio of the blocks before it. In this
    process each block is handed out once those are written; an executor that runs the blocks elsewhere
    starts them all with the ratios on disk, and a block that needed more is solved again once its
    predecessors are written. A block's solve depends on the thread count through float summation order:
    a fit on Ray (as many threads as a task has CPUs) equals one process's fit with that many threads.
    """
    def items():
        for block in missing:
            yield block, todo[out.rows(block)], prior_ratios(out, block)

    local = executor.in_process
    setup = partial(_block_fitter, settings=settings, device=device, steps=steps if local else None)
    key = repr((str(run_dir), sorted(settings.items()), device))
    sizes = [out.rows(block).stop - out.rows(block).start for block in missing]
    results = executor.map(_block_task, items() if local else list(items()), setup=setup, shared=str(run_dir), key=key,
                           ordered=True, name="fit_block", what="fit", sizes=sizes, unit="targets")
    for i, result in results:
        block, ratios = missing[i], result.pop("ratios")
        if result["unvalidated"].any() and not np.array_equal(ratios, prior_ratios(out, block)):
            ((_, result),) = executor.map(_block_task, [(block, todo[out.rows(block)], prior_ratios(out, block))],
                                          setup=setup, shared=str(run_dir), key=key, ordered=True,
                                          name="fit_block", what="fit")
            result.pop("ratios")
        out.write(block, **result)
        if not local:
            steps.add(sizes[i] * steps_per_target)


class _Steps:
    """A fit's progress(done, total, "λ step") from `done` on: n_lambdas path steps and one refit per target."""

    def __init__(self, total: int, done: int, progress: Progress | None):
        self.total, self.done, self.progress = total, done, progress
        self.add(0)

    def add(self, n: int) -> None:
        self.done += n
        if self.progress:
            self.progress(self.done, self.total, "λ step")

    def part(self, size: int) -> Progress | None:
        """The progress of the next `size` steps (a block's path), which `add` counts once they are done."""
        return part(self.progress, self.done, size, self.total)


def _info(split: tuple[np.ndarray, np.ndarray], solve_settings: dict, n_models: int, val_frac: float, seed: int,
          device, size: int, n_blocks: int, results: dict, started: float) -> dict:
    """The fit's record: settings, split, the per-target diagnostics (arrays) and the wall time."""
    fit_rows, val_rows = split
    return {
        "n_models": n_models, "n_fit_models": len(fit_rows), "n_val_models": len(val_rows),
        "val_frac": val_frac, "seed": seed, "val_models": val_rows, **solve_settings,
        "solver": "batched FISTA on strong-rule working sets with KKT checks, adaptive restart and steps, "
                  "duality-gap stop (backend.datamodels.lasso)",
        "score_rtol": SCORE_RTOL,
        "dtype": "float32", "device": str(device),
        "block_size": size, "n_blocks": n_blocks,
        "path_iterations": results["path_iterations"], "path_steps_run": results["path_steps_run"],
        "refit_iterations": results["refit_iterations"], "best_step": results["best_step"],
        "val_mse": results["val_mse"], "unvalidated_targets": np.flatnonzero(results["unvalidated"]),
        "unconverged_solves": int(results["unconverged"].sum()),
        "wall_time_s": time.perf_counter() - started,
    }


def fit_datamodels(masks, margins, n_train: int, *, val_frac: float = 0.1, n_lambdas: int = 50,
                   eps: float = 1e-3, tol: float = 1e-4, seed: int = 0, device="cpu",
                   block_size: int | None = None, targets=None, patience: int | None = 3,
                   max_iter: int = 1000, memory: int = DEFAULT_MEMORY, progress: Progress | None = None) -> DatamodelFit:
    """Fit the datamodel of each target (all margins columns by default), in memory.

    masks : ndarray (M, n_train) bool; margins : ndarray (M, n_train + n_test) float32 or float16; either
    may be an np.memmap: targets are processed in blocks (block_size, else as many as `memory` bytes allow,
    memory_model), reading only their columns, once per block.
    Per target: λ path of `n_lambdas` values from λ_max to λ_max·eps on the models outside the
    validation split (val_frac, seed); the λ with the lowest validation MSE (over the validation
    models the target's eq. 9 rows include; scores within SCORE_RTOL of the best are ties, won by the
    larger λ: lasso.improves) is refitted on all models. A path stops `patience` steps
    after its last improvement (None: run it whole); fast_l1, the paper's solver, stops at the first
    rise. A training target that no validation model leaves out gets the median λ/λ_max of the
    validated targets fitted before it and beside it (listed in info["unvalidated_targets"]).
    tol is scikit-learn's: duality gap ≤ tol·‖y_c‖²/M_t. progress counts target-steps ("λ step": n_lambdas
    path steps and one refit per target; backend.progress). `fit_run` is the same fit streamed to a run.
    """
    started = time.perf_counter()
    columns = _check_inputs(masks, margins, n_train, targets, val_frac)
    n_models = masks.shape[0]
    device = torch.device(device)
    size = block_size or block_targets_for(memory, n_models, n_train)
    fitter = _Fitter(masks, margins, n_train, val_frac=val_frac, n_lambdas=n_lambdas, eps=eps, tol=tol, seed=seed,
                     device=device, max_iter=max_iter, patience=patience,
                     gram=memory_model(n_models, n_train, memory)[2],
                     steps=_Steps(len(columns) * (n_lambdas + 1), 0, progress))
    # Blocks hold one kind: test targets share a Gram matrix, training targets need per-target rows.
    kinds = [np.flatnonzero(columns < n_train), np.flatnonzero(columns >= n_train)]
    blocks = [kind[lo:lo + size] for kind in kinds for lo in range(0, len(kind), size)]
    results: dict[str, np.ndarray] = {}
    ratios = np.zeros(0)
    for pos in blocks:
        block = fitter.fit(columns[pos], ratios)
        for key, value in block.items():
            if key not in results:
                results[key] = np.zeros((len(columns), *value.shape[1:]), dtype=value.dtype)
            results[key][pos] = value
        ratios = np.concatenate([ratios, block["lam_ratio"][np.isfinite(block["lam_ratio"])]])
    results["unvalidated"] = results["unvalidated"].astype(bool)
    info = _info((fitter.fit_rows, fitter.val_rows), fitter.solve_settings, n_models, val_frac, seed, device, size,
                 len(blocks), results, started)
    info["unvalidated_targets"] = [int(c) for c in columns[info["unvalidated_targets"]]]
    return DatamodelFit(columns, results["weights"], results["bias"], results["lam"], n_train,
                        margins.shape[1] - n_train, info)


def fit_summary(info: dict, targets, n_train: int, n_test: int) -> dict:
    """The JSON-able record of a fit for fit.json: settings, split and iteration statistics.

    info : a fit's record (DatamodelFit.info); targets : the fitted margins columns (T,).
    """
    summary = {k: v for k, v in info.items() if not isinstance(v, np.ndarray)}
    summary["val_models"] = np.asarray(info["val_models"]).tolist()
    summary["unvalidated_targets"] = [int(c) for c in info["unvalidated_targets"]]
    summary["targets"] = "all" if len(targets) == n_train + n_test else np.asarray(targets).tolist()
    summary["n_targets"] = len(targets)
    summary["n_train"], summary["n_test"] = n_train, n_test
    its, steps, refit = info["path_iterations"], info["path_steps_run"], info["refit_iterations"]
    summary["iterations"] = {
        "path_total": int(its.sum()), "path_per_step_mean": float(its.sum() / max(steps.sum(), 1)),
        "path_steps_run_mean": float(steps.mean()), "refit_total": int(refit.sum()),
        "refit_mean": float(refit.mean()), "refit_max": int(refit.max()),
    }
    summary["best_step_mean"] = float(info["best_step"].mean())
    val_mse = np.asarray(info["val_mse"])
    summary["val_mse_mean"] = float(np.nanmean(val_mse)) if np.isfinite(val_mse).any() else None
    return summary


def _kept_targets(run, identity: dict) -> np.ndarray:
    """bool (n_targets,): the targets the run's committed fit holds, if it was fitted with `identity`
    (fit.json's "config"); none otherwise, so a fit with other settings or of other models starts afresh.
    An unfitted target's λ (and bias) is NaN."""
    from backend.store.artifacts import read_json

    kept = np.zeros(run.n_targets, dtype=bool)
    fit = read_json(run.dir, FIT, missing_ok=True)
    if fit is None or fit.get("config") != json.loads(json.dumps(identity)) or not all(
            run.has(a) for a in (WEIGHTS, BIAS, LAM)):
        return kept
    return fitted_targets(run.array(LAM))


def _merge_into_run(run, out, todo: np.ndarray, kept: np.ndarray, dtype: str) -> dict:
    """Full-size weights, bias and λ (in the staging folder): the kept targets' rows of the run's committed
    files, byte for byte, with the rows of `todo` from the staged blocks; unfitted rows stay 0 / NaN."""
    from backend.store.rows import read_rows, write_rows
    from backend.store.atomic import save_npy

    n_targets, n_train = run.n_targets, run.n_train
    merged = {key: out.folder / f"merged-{key}.npy" for key in ("weights", "bias", "lam")}
    if kept.any():
        shutil.copyfile(WEIGHTS.path(run.dir), merged["weights"])
        vectors = {key: np.array(run.array(a)) for key, a in (("bias", BIAS), ("lam", LAM))}
    else:
        np.lib.format.open_memmap(merged["weights"], mode="w+", dtype=np.dtype(dtype), shape=(n_targets, n_train)).flush()
        vectors = {key: np.full(n_targets, np.nan, dtype=np.float32) for key in ("bias", "lam")}
    staged = out.view("weights")
    step = max(1, MERGE_BYTES // (4 * n_train))
    for lo in range(0, len(todo), step):
        write_rows(merged["weights"], todo[lo:lo + step], read_rows(staged, np.arange(lo, min(lo + step, len(todo)))))
    for key, vector in vectors.items():
        vector[todo] = out.view(key)
        save_npy(merged[key], vector)
    return merged


def fit_run(run, *, val_frac: float = 0.1, n_lambdas: int = 50, eps: float = 1e-3, seed: int = 0,
            device: str = "auto", progress: Progress | None = None, dtype: str = "float32",
            memory: int = DEFAULT_MEMORY, block_targets: int | None = None, tol: float = 1e-4,
            max_iter: int = 1000, patience: int | None = 3, executor=None, targets=None) -> dict:
    """The `fit` stage: fit the run's targets, write weights.npy, bias.npy, lam.npy and fit.json.

    targets : margins columns to fit (default all; `fit --targets`, backend.store.targets.select_targets).
    Targets the run's fit already holds with these settings (fit.json's "config") are kept byte for byte
    and not refitted; the others of `targets` are fitted; every other target stays unfitted: weights 0,
    bias and λ NaN, and fit.json's "targets" lists the fitted ones. Another configuration starts afresh.
    Streams and resumes: the outputs and per-target diagnostics are staged as memory-mapped files
    (backend.store.blocks) filled one block of `block_targets` targets at a time (default: as many as
    `memory` bytes allow, memory_model), so a killed fit reruns only the blocks it had not finished;
    the staging is keyed by everything the blocks depend on (settings, split, dtype, the run's models,
    the targets to fit). The four files then commit in one transaction: a kill leaves the old fit or the
    new one, never new weights beside old biases. dtype : "float32" or "float16", the weights' storage type
    (the solver works in float32 either way). Returns the fit.json record (fit_summary) with
    "fitted_now" and "kept_targets"; progress counts λ steps.
    executor : runs the blocks (backend.cluster.executor; default this process, LocalExecutor); this process
    writes them in order.
    """
    from backend.store.blocks import BlockedOutput
    from backend.store.artifacts import read_json, write_json
    from backend.store.atomic import adopt, transaction
    from backend.store.schema import MARGINS, MASKS
    from backend.training.engine import resolve_device

    started = time.perf_counter()
    if dtype not in WEIGHTS.dtype:
        raise DatamodelError(f"dtype {dtype!r} is not a weights type: give one of {', '.join(WEIGHTS.dtype)}")
    masks, margins, n_train = run.masks, run.margins, run.n_train
    n_models, n_targets = masks.shape[0], margins.shape[1]
    selected = _check_inputs(masks, margins, n_train, targets, val_frac)
    selected = np.sort(selected)
    device = torch.device(resolve_device(device))
    gram = memory_model(n_models, n_train, memory)[2]
    sources = {a.name: run.stamp(a) for a in (MASKS, MARGINS)}
    settings = dict(val_frac=val_frac, n_lambdas=n_lambdas, eps=eps, tol=tol, seed=seed, max_iter=max_iter,
                    patience=patience, gram=gram)
    identity = {**settings, "n_models": n_models, "n_train": n_train, "n_targets": n_targets, "dtype": dtype,
                "device": str(device), "sources": sources}
    kept = _kept_targets(run, identity)
    todo = selected[~kept[selected]]
    if not len(todo):
        summary = read_json(run.dir, FIT)
        return {**summary, "fitted_now": 0, "kept_targets": int(kept.sum()), "resumed_blocks": 0,
                "wall_time_s": time.perf_counter() - started}
    size = min(block_targets or block_targets_for(memory, n_models, n_train), len(todo))
    config = {**identity, "todo": hashlib.sha256(todo.tobytes()).hexdigest(),
              "kept": run.stamp(WEIGHTS) if kept.any() else None}
    arrays = {"weights": (dtype, (len(todo), n_train)), "bias": ("float32", (len(todo),)),
              "lam": ("float32", (len(todo),)), **{key: (t, (len(todo),)) for key, t in DIAGNOSTICS.items()}}
    out = BlockedOutput(run.dir, "fit", config, arrays, size)
    missing = out.missing()
    finished = len(todo) - sum(out.rows(b).stop - out.rows(b).start for b in missing)
    steps = _Steps(len(todo) * (n_lambdas + 1), finished * (n_lambdas + 1), progress)
    _fit_blocks(executor or LocalExecutor(), out, run.dir, todo, missing, settings, str(device), steps, n_lambdas + 1)
    results = {key: np.asarray(out.view(key)) for key in DIAGNOSTICS}
    solve = {key: settings[key] for key in ("n_lambdas", "eps", "tol", "max_iter", "patience")}
    info = _info(validation_split(n_models, val_frac, seed), solve, n_models, val_frac, seed, device, size,
                 out.n_blocks, results, started)
    summary = fit_summary(info, todo, n_train, run.n_test)
    fitted = kept.copy()
    fitted[todo] = True
    previous = read_json(run.dir, FIT) if kept.any() else {}
    summary.update(weights_dtype=dtype, resumed_blocks=out.n_blocks - len(missing), config=identity,
                   targets="all" if fitted.all() else np.flatnonzero(fitted).tolist(), n_targets=int(fitted.sum()),
                   fitted_now=len(todo), kept_targets=int(kept.sum()),
                   unvalidated_targets=sorted(previous.get("unvalidated_targets", []) +
                                              todo[summary["unvalidated_targets"]].tolist()))
    whole = len(todo) == n_targets  # every target in column order: the staged files are the run's files
    merged = None if whole else _merge_into_run(run, out, todo, kept, dtype)
    by_train = out.folder / WEIGHTS_BY_TRAIN.name
    write_transposed(out.view("weights") if whole else np.load(merged["weights"], mmap_mode="r"), n_train,
                     n_targets, by_train, max(1, memory // (16 * n_train)))
    with transaction(run.dir, "fit"):
        if whole:
            out.commit({"weights": (WEIGHTS, {}), "bias": (BIAS, {}), "lam": (LAM, {})})
        else:
            for key, artifact in (("weights", WEIGHTS), ("bias", BIAS), ("lam", LAM)):
                adopt(artifact.path(run.dir), merged[key])
        adopt(WEIGHTS_BY_TRAIN.path(run.dir), by_train)
        write_json(run.dir, FIT, summary)
    out.discard()
    return summary
