"""How well datamodels predict held-out models: LDS, sample complexity and the paper's Table 5.

The linear datamodeling score (LDS; Ilyas et al. 2022, named by Park et al. 2023) of a target is the
Spearman correlation, over models not used to fit, between the datamodel's predicted margin
x·w + b and the margin actually measured. For a training target only the models that left it out
count, as in fitting (eq. 9). All functions take the run store's layout: weights (N_targets, n_train)
and bias (N_targets,) indexed by margins column, masks (M, n_train) bool, margins (M, N_targets).
They return numpy arrays per target, and `*_report` functions plain JSON-able dicts for metrics.json.
"""
from __future__ import annotations

import os
from typing import Callable

import numpy as np

from backend.progress import Progress, fraction
from backend.store import run_dir
from backend.store.run_dir import Run, RunError
from backend.store.schema import BIAS, LDS, METRICS, WEIGHTS

BLOCK_BYTES = 256 << 20


def _columns(targets, n_targets: int) -> np.ndarray:
    return np.arange(n_targets) if targets is None else np.asarray(targets, dtype=np.int64).reshape(-1)


def _blocks(columns: np.ndarray, n_models: int, n_train: int):
    size = max(1, BLOCK_BYTES // (8 * (n_models + n_train)))
    for lo in range(0, len(columns), size):
        yield lo, columns[lo:lo + size]


def included(masks, columns: np.ndarray, n_train: int) -> np.ndarray:
    """Bool (M, T): the models each target is evaluated on (eq. 9: not those that trained on it)."""
    inc = np.ones((masks.shape[0], len(columns)), dtype=bool)
    train = columns < n_train
    inc[:, train] = ~np.asarray(masks[:, columns[train]], dtype=bool)
    return inc


def _masked_ranks(values: np.ndarray, inc: np.ndarray) -> np.ndarray:
    """Average ranks down each column among the included entries; NaN elsewhere."""
    from scipy.stats import rankdata  # here, not at the top: the Overview page imports predict, and scipy costs it a second

    return rankdata(np.where(inc, values, np.nan), axis=0, nan_policy="omit")


def masked_spearman(a: np.ndarray, b: np.ndarray, inc: np.ndarray) -> np.ndarray:
    """Spearman correlation per column of a, b (M, T) over the rows where inc; NaN if undefined."""
    ra, rb = _masked_ranks(a, inc), _masked_ranks(b, inc)
    n = inc.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ra = ra - np.nansum(ra, axis=0) / n
        rb = rb - np.nansum(rb, axis=0) / n
        cov = np.nansum(ra * rb, axis=0)
        den = np.sqrt(np.nansum(ra * ra, axis=0) * np.nansum(rb * rb, axis=0))
        rho = cov / den
    return np.where((n >= 2) & (den > 0), rho, np.nan)


def masked_auc(scores: np.ndarray, labels: np.ndarray, inc: np.ndarray) -> np.ndarray:
    """ROC AUC per column of scores predicting bool labels over the rows where inc (ties count ½).

    NaN where the included labels hold a single class.
    """
    ranks = _masked_ranks(scores, inc)
    pos = labels & inc
    n_pos, n_neg = pos.sum(axis=0), (~labels & inc).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (np.where(pos, ranks, 0).sum(axis=0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def predict(weights, bias, masks, columns: np.ndarray) -> np.ndarray:
    """Predicted margins (M, T) of the models `masks` for targets `columns`: x·w_t + b_t."""
    w = np.asarray(weights[columns], dtype=np.float64)
    return np.asarray(masks, dtype=np.float64) @ w.T + np.asarray(bias[columns], dtype=np.float64)


def lds(weights, bias, masks, margins, n_train: int, targets=None) -> dict:
    """Per-target LDS and held-out MSE of datamodels on held-out models.

    masks : (M, n_train) bool and margins : (M, N_targets) of models NOT used to fit.
    Returns {"targets": (T,), "spearman": (T,), "mse": (T,), "n_models": (T,)} numpy arrays;
    spearman is NaN where fewer than 2 models count or a side is constant.
    """
    columns = _columns(targets, margins.shape[1])
    return lds_by_block(lambda cols: (weights[cols], bias[cols]), masks, margins, n_train, columns)


MASK_CHUNK_BYTES = 256 * 2**20


def lds_by_block(datamodels, masks, margins, n_train: int, columns: np.ndarray) -> dict:
    """lds() with datamodels(cols) -> (weights (T_b, n_train), bias (T_b,)) of a block of columns, for any
    linear predictor of margins from masks (backend.attribution.yardsticks scores every method this way)."""
    out = {"targets": columns, "spearman": np.full(len(columns), np.nan),
           "mse": np.full(len(columns), np.nan), "n_models": np.zeros(len(columns), dtype=np.int64)}
    # The masks as float64, read once where they fit in MASK_CHUNK_BYTES (digits: 52 MB), else in chunks of
    # rows per block (~670 models at CIFAR shape, instead of 4 GB for 10,000 held-out models).
    step = max(1, MASK_CHUNK_BYTES // (8 * max(1, masks.shape[1])))
    held = np.asarray(masks, dtype=np.float64) if masks.shape[0] <= step else None
    for lo, cols in _blocks(columns, masks.shape[0], n_train):
        inc = included(masks, cols, n_train)
        w, b = datamodels(cols)
        w = np.asarray(w, dtype=np.float64).T
        pred = (held @ w if held is not None else
                np.concatenate([np.asarray(masks[r:r + step], dtype=np.float64) @ w
                                for r in range(0, masks.shape[0], step)])) + np.asarray(b, dtype=np.float64)
        actual = np.asarray(margins[:, cols], dtype=np.float64)
        n = inc.sum(axis=0)
        sl = slice(lo, lo + len(cols))
        out["spearman"][sl] = masked_spearman(pred, actual, inc)
        with np.errstate(invalid="ignore", divide="ignore"):
            out["mse"][sl] = np.where(n > 0, (np.where(inc, pred - actual, 0) ** 2).sum(axis=0) / n, np.nan)
        out["n_models"][sl] = n
    return out


def summarize(values: np.ndarray, columns: np.ndarray, n_train: int) -> dict:
    """Mean and quartiles of per-target values, separately over test and training targets (NaN skipped)."""
    out = {}
    for name, sel in (("test", columns >= n_train), ("train", columns < n_train)):
        v = np.asarray(values, dtype=np.float64)[sel]
        ok = v[np.isfinite(v)]
        stats = {"n_targets": int(sel.sum()), "n_undefined": int(sel.sum() - ok.size)}
        if ok.size:
            q25, q50, q75 = np.percentile(ok, [25, 50, 75])
            stats.update(mean=float(ok.mean()), q25=float(q25), median=float(q50), q75=float(q75))
        out[name] = stats
    return out


def summary_report(res: dict, n_heldout: int, n_train: int) -> dict:
    """metrics.json's LDS and MSE summaries from `lds`'s per-target result (for an LDS already computed)."""
    return {"n_heldout_models": int(n_heldout),
            "lds": summarize(res["spearman"], res["targets"], n_train),
            "mse": summarize(res["mse"], res["targets"], n_train)}


def difference_of_means(masks, margins, n_train: int, targets=None, *, correctness: bool = False
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Linear predictors from marginal effects: w_ti = mean(y_t | i in subset) − mean(y_t | i out).

    masks : (M, n_train) bool; margins : (M, N_targets); y is the margin, or with `correctness`
    1[margin > 0]. Means run over each target's own models (eq. 9 for training targets); an effect
    with no model on one side is 0. The bias b_t = mean(y_t) − x̄_t·w_t makes the prediction right on
    average over those models. Returns weights (T, n_train) and bias (T,).
    """
    columns = _columns(targets, margins.shape[1])
    n_models = masks.shape[0]
    weights = np.zeros((len(columns), n_train))
    bias = np.zeros(len(columns))
    rows = max(1, BLOCK_BYTES // (8 * n_train))  # model chunks keep the float copy of masks bounded
    for lo, cols in _blocks(columns, min(n_models, rows), n_train):
        n = y_sum = n_in = sum_in = 0
        for r in range(0, n_models, rows):
            x_bool = np.asarray(masks[r:r + rows], dtype=bool)
            inc = included(x_bool, cols, n_train).astype(np.float64)
            y = np.asarray(margins[r:r + rows, cols], dtype=np.float64)
            y = ((y > 0) if correctness else y) * inc
            x = x_bool.astype(np.float64)
            n, y_sum = n + inc.sum(axis=0), y_sum + y.sum(axis=0)
            n_in, sum_in = n_in + x.T @ inc, sum_in + x.T @ y  # (n_train, T)
        n_out, sum_out = n - n_in, y_sum - sum_in
        with np.errstate(invalid="ignore", divide="ignore"):
            w = np.where((n_in > 0) & (n_out > 0), sum_in / n_in - sum_out / n_out, 0.0)
            b = np.where(n > 0, y_sum / n - (n_in / n * w).sum(axis=0), 0.0)
        weights[lo:lo + len(cols)] = w.T
        bias[lo:lo + len(cols)] = b
    return weights, bias


ESTIMATORS = ("empirical_influence", "difference_of_means", "datamodel")


def table5(weights, bias, fit_masks, fit_margins, heldout_masks, heldout_margins, n_train: int,
           targets=None) -> dict:
    """Per-target scores of the comparison in Table 5 of Ilyas et al. 2022.

    Three linear predictors, all scored on the same held-out models: empirical influence
    (difference of means of correctness = 1[margin > 0] over the fit models), difference of means
    of margins, and the LASSO datamodel (weights, bias). For each, "spearman" compares the
    prediction with what it predicts (correctness for empirical influence, margins otherwise),
    "spearman_margin" always with margins, and "auc" is the AUC of the prediction for correctness
    (NaN where the held-out models show one outcome only).
    Returns {"targets": (T,), estimator: {score: (T,)}} numpy arrays.
    """
    columns = _columns(targets, heldout_margins.shape[1])
    out = {"targets": columns}
    out.update({e: {k: np.full(len(columns), np.nan) for k in ("spearman", "spearman_margin", "auc")}
                for e in ESTIMATORS})
    x = np.asarray(heldout_masks, dtype=np.float64)
    for lo, cols in _blocks(columns, heldout_masks.shape[0], n_train):
        inc = included(heldout_masks, cols, n_train)
        actual = np.asarray(heldout_margins[:, cols], dtype=np.float64)
        correct = actual > 0
        w_c, b_c = difference_of_means(fit_masks, fit_margins, n_train, cols, correctness=True)
        w_m, b_m = difference_of_means(fit_masks, fit_margins, n_train, cols)
        preds = {"empirical_influence": (x @ w_c.T + b_c, correct.astype(np.float64)),
                 "difference_of_means": (x @ w_m.T + b_m, actual),
                 "datamodel": (predict(weights, bias, heldout_masks, cols), actual)}
        sl = slice(lo, lo + len(cols))
        for name, (pred, own) in preds.items():
            out[name]["spearman"][sl] = masked_spearman(pred, own, inc)
            out[name]["spearman_margin"][sl] = masked_spearman(pred, actual, inc)
            out[name]["auc"][sl] = masked_auc(pred, correct, inc)
    return out


def table5_report(weights, bias, fit_masks, fit_margins, heldout_masks, heldout_margins, n_train: int,
                  targets=None) -> dict:
    """JSON-able Table 5: each estimator's scores averaged (with quartiles) over test and training targets."""
    res = table5(weights, bias, fit_masks, fit_margins, heldout_masks, heldout_margins, n_train, targets)
    report = {"n_fit_models": int(fit_masks.shape[0]), "n_heldout_models": int(heldout_masks.shape[0])}
    for name in ESTIMATORS:
        report[name] = {k: summarize(v, res["targets"], n_train) for k, v in res[name].items()}
    return report


def default_complexity_targets(n_train: int, n_test: int, n_train_targets: int = 100) -> np.ndarray:
    """Every test target plus up to `n_train_targets` evenly spaced training targets."""
    train = np.unique(np.linspace(0, n_train - 1, min(n_train, n_train_targets)).round().astype(np.int64))
    return np.concatenate([train, np.arange(n_train, n_train + n_test)])


def sample_complexity(masks, margins, heldout_masks, heldout_margins, n_train: int, *,
                      fractions=(0.125, 0.25, 0.5, 1.0), targets=None,
                      on_fraction: Callable[[int], Progress | None] | None = None, **fit_kwargs) -> dict:
    """LDS on held-out models of datamodels fitted on growing fractions of the fit models.

    Each fraction f fits (the paper's whole procedure, `fit_datamodels(**fit_kwargs)`) on the first
    round(f·M) models: the models' subsets are i.i.d., so a prefix is a random sample, and prefixes
    nest and stay memory-mapped. targets defaults to `default_complexity_targets` (every test
    target, 100 training targets) for speed. A fraction with too few models is reported as skipped.
    on_fraction(i) gives the progress callback of the i-th fraction's fit.
    """
    from backend.datamodels.fit import DatamodelError, fit_datamodels  # torch: only the refits need it

    n_targets = margins.shape[1]
    columns = default_complexity_targets(n_train, n_targets - n_train) if targets is None \
        else _columns(targets, n_targets)
    points = []
    for i, f in enumerate(fractions):
        k = int(round(f * masks.shape[0]))
        point = {"fraction": float(f), "n_models": k}
        try:
            fit = fit_datamodels(masks[:k], margins[:k], n_train, targets=columns,
                                 progress=on_fraction(i) if on_fraction else None, **fit_kwargs)
        except DatamodelError as err:
            point["skipped"] = str(err)
            points.append(point)
            continue
        where = {int(c): i for i, c in enumerate(fit.targets)}

        def datamodels(cols, fit=fit, where=where):
            rows = [where[int(c)] for c in cols]
            return fit.weights[rows], fit.bias[rows]
        res = lds_by_block(datamodels, heldout_masks, heldout_margins, n_train, columns)
        point.update(summary_report(res, heldout_masks.shape[0], n_train))
        points.append(point)
    n_tr = int((columns < n_train).sum())
    return {"targets": f"{len(columns) - n_tr} test and {n_tr} training targets", "points": points}


def check_heldout(run: Run, heldout: Run) -> None:
    """RunError unless heldout holds the run's dataset under another seed (else its models are not held out)."""
    if heldout.manifest["dataset"].get("fingerprint") != run.manifest["dataset"].get("fingerprint"):
        raise RunError(f"{heldout.dir} holds another dataset than {run.dir}: evaluate on a run of the same dataset")
    if heldout.manifest.get("seed") == run.manifest.get("seed"):
        raise RunError(f"{heldout.dir} has the same seed as {run.dir}, so its models are not held out: "
                       "train it with another --seed")


COMPLEXITY_FRACTIONS = (0.125, 0.25, 0.5, 1.0)


def evaluate_run(run: Run, heldout: Run, *, complexity: bool = True, device: str = "auto",
                 progress: Progress | None = None) -> dict:
    """The `eval` stage: score the run's datamodels on another run's models; write metrics.json and lds.npy.

    heldout must hold the same dataset and another seed, or its models are not held out. progress counts
    stages ("stage"): LDS, Table 5, then one per sample-complexity fit, each fit reporting within its stage.
    """
    from backend.training.engine import resolve_device

    check_heldout(run, heldout)
    total = 2 + (len(COMPLEXITY_FRACTIONS) if complexity else 0)
    if progress:
        progress(0, total, "stage")
    weights, bias = run.array(WEIGHTS), run.array(BIAS)
    per_target = lds(weights, bias, heldout.masks, heldout.margins, run.n_train)
    if progress:
        progress(1, total, "stage")
    # Relative to the run, so a copied or moved run still names its own held-out run (quality.heldout_dir).
    metrics = {"heldout_run": os.path.relpath(heldout.dir.resolve(), run.dir.resolve()), "n_fit_models": int(len(run.masks)),
               **summary_report(per_target, len(heldout.masks), run.n_train),
               "table5": table5_report(weights, bias, run.masks, run.margins, heldout.masks, heldout.margins,
                                       run.n_train)}
    if progress:
        progress(2, total, "stage")
    if complexity:
        def on_fraction(i: int) -> Progress | None:
            within = fraction(progress, 2 + i, 1, total, "stage")
            return None if within is None else (lambda done, steps, _unit: within(done / steps if steps else 1.0))
        metrics["sample_complexity"] = sample_complexity(
            run.masks, run.margins, heldout.masks, heldout.margins, run.n_train, fractions=COMPLEXITY_FRACTIONS,
            on_fraction=on_fraction, device=resolve_device(device))
    with run_dir.transaction(run.dir, "eval"):  # metrics.json and lds.npy appear together
        run_dir.write_array(run.dir, LDS, per_target["spearman"].astype(np.float32))
        run_dir.write_json(run.dir, METRICS, metrics)
    if progress:
        progress(total, total, "stage")
    return metrics
