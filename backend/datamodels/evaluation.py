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
import warnings
from typing import Callable

import numpy as np

from backend.progress import Progress, part
from backend.store.artifacts import write_array, write_json
from backend.store.atomic import transaction
from backend.store.errors import RunError
from backend.store.run_dir import Run
from backend.store.schema import BIAS, LAM, LDS, METRICS, WEIGHTS
from backend.store.targets import describe_targets
from backend.datamodels.queries import fitted_targets

BLOCK_BYTES = 256 << 20


def _columns(targets, n_targets: int) -> np.ndarray:
    return np.arange(n_targets) if targets is None else np.asarray(targets, dtype=np.int64).reshape(-1)


def _blocks(columns: np.ndarray, n_models: int, n_train: int):
    size = max(1, BLOCK_BYTES // (8 * (n_models + n_train)))
    for lo in range(0, len(columns), size):
        yield lo, columns[lo:lo + size]


def take_columns(a, columns: np.ndarray) -> np.ndarray:
    """a[:, columns] as an array; a slice where the columns are a contiguous run, as `eval`'s blocks of fitted
    targets mostly are (8× faster than fancy indexing on a memory map: it reads the rows' runs, not each value)."""
    if len(columns) and columns[-1] - columns[0] == len(columns) - 1 and (np.diff(columns) == 1).all():
        return np.asarray(a[:, int(columns[0]):int(columns[-1]) + 1])
    return np.asarray(a[:, columns])


def included(masks, columns: np.ndarray, n_train: int) -> np.ndarray:
    """Bool (M, T): the models each target is evaluated on (eq. 9: not those that trained on it)."""
    inc = np.ones((masks.shape[0], len(columns)), dtype=bool)
    train = columns < n_train
    inc[:, train] = ~take_columns(masks, columns[train]).astype(bool, copy=False)
    return inc


def masked_ranks(values: np.ndarray, inc: np.ndarray) -> np.ndarray:
    """Average ranks (1-based, ties share their mean rank: scipy's rankdata "average") down each column of
    values (M, T) among the entries where inc; NaN elsewhere.

    One column sort for the whole block (scipy's rankdata with nan_policy="omit" ranks column by column):
    excluded entries sort last as +inf, and each run of equal values gets the mean of its first and last
    position.
    """
    m = values.shape[0]
    v = np.where(inc, values, np.inf)
    order = np.argsort(v, axis=0, kind="stable")
    ordered = np.take_along_axis(v, order, axis=0)
    first = np.ones(v.shape, dtype=bool)
    first[1:] = ordered[1:] != ordered[:-1]
    last = np.ones(v.shape, dtype=bool)
    last[:-1] = first[1:]
    position = np.arange(m, dtype=np.float64)[:, None]
    start = np.maximum.accumulate(np.where(first, position, 0.0), axis=0)
    end = np.minimum.accumulate(np.where(last, position, m)[::-1], axis=0)[::-1]
    ranks = np.empty(v.shape)
    np.put_along_axis(ranks, order, (start + end) / 2 + 1, axis=0)
    return np.where(inc, ranks, np.nan)


def spearman_of_ranks(ra: np.ndarray, rb: np.ndarray, inc: np.ndarray) -> np.ndarray:
    """Pearson correlation per column of two masked_ranks results (M, T): Spearman's ρ; NaN if undefined."""
    n = inc.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ra = ra - np.nansum(ra, axis=0) / n
        rb = rb - np.nansum(rb, axis=0) / n
        cov = np.nansum(ra * rb, axis=0)
        den = np.sqrt(np.nansum(ra * ra, axis=0) * np.nansum(rb * rb, axis=0))
        rho = cov / den
    return np.where((n >= 2) & (den > 0), rho, np.nan)


def masked_spearman(a: np.ndarray, b: np.ndarray, inc: np.ndarray) -> np.ndarray:
    """Spearman correlation per column of a, b (M, T) over the rows where inc; NaN if undefined."""
    return spearman_of_ranks(masked_ranks(a, inc), masked_ranks(b, inc), inc)


def auc_of_ranks(ranks: np.ndarray, labels: np.ndarray, inc: np.ndarray) -> np.ndarray:
    """ROC AUC per column from masked_ranks of the scores (M, T) and bool labels (Mann–Whitney U), over the rows
    where inc; ties count ½ (masked_ranks gives them their mean rank); NaN where the included labels hold one class."""
    pos = labels & inc
    n_pos, n_neg = pos.sum(axis=0), (~labels & inc).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (np.where(pos, ranks, 0).sum(axis=0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


MASK_CHUNK_BYTES = 256 * 2**20
MARGIN_LIMBS = 3  # int8 limbs of the fixed-point margins in marginal_effects
FIXED_POINT_MAX = 127 * 256 ** (MARGIN_LIMBS - 1)  # the largest |q| whose top limb stays in int8
FEATURE_CHUNK = 8192  # features per float32 partial product; the partials are summed in float64


def _int8(masks):
    """A (memory-mapped) bool matrix as a torch int8 tensor, without a copy (the GEMMs only read it)."""
    import torch

    with warnings.catch_warnings():  # a read-only memory map: torch warns that writing to it would be undefined
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(np.asarray(masks).view(np.int8))


def _predict_rows(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x (R, F) float32 0/1 @ w (F, T) float32 as float64 (R, T): float32 GEMMs over FEATURE_CHUNK features
    (0/1 times a float32 weight is exact; a chunk's sum rounds once), their partial sums added in float64."""
    out = np.zeros((x.shape[0], w.shape[1]))
    for lo in range(0, x.shape[1], FEATURE_CHUNK):
        out += x[:, lo:lo + FEATURE_CHUNK] @ w[lo:lo + FEATURE_CHUNK]
    return out


def predict(weights, bias, masks, columns: np.ndarray) -> np.ndarray:
    """Predicted margins (M, T) float64 of the models `masks` for targets `columns`: x·w_t + b_t.

    The masks are read MASK_CHUNK_BYTES of float32 at a time (CIFAR shape: ~1,300 of 10,000 models).
    """
    return _predict(np.asarray(weights[columns], dtype=np.float32), np.asarray(bias[columns]), masks)


def _predict(w: np.ndarray, b: np.ndarray, masks) -> np.ndarray:
    """masks (M, F) bool, or float32 0/1 (resident_rows), @ w.T for w (T, F), plus b (T,): (M, T) float64.
    w.T is a view: BLAS reads it transposed as fast as a copy, which would cost a fifth of the GEMM."""
    w = np.asarray(w, dtype=np.float32).T
    step = max(1, MASK_CHUNK_BYTES // (4 * max(1, masks.shape[1])))
    out = np.empty((masks.shape[0], w.shape[1]))
    for r in range(0, masks.shape[0], step):
        rows = masks[r:r + step]
        out[r:r + step] = _predict_rows(rows if rows.dtype == np.float32 else _float32(rows), w)
    return out + np.asarray(b, dtype=np.float64)


def _float32(masks) -> np.ndarray:
    """Bool 0/1 rows as float32 (read as int8, numpy converts them ~3× faster than as bool)."""
    return np.asarray(masks).view(np.int8).astype(np.float32)


def resident_rows(masks):
    """masks (M, F) bool as float32 once, where that takes at most MASK_CHUNK_BYTES (CIFAR shape's 1,000 held-out
    models: 200 MB), else as they are: a call that predicts block after block on the same models then converts
    them once, not once a block (with the fresh pages' faults, 0.3 s a block there against a 0.13 s GEMM)."""
    if 4 * masks.shape[0] * masks.shape[1] > MASK_CHUNK_BYTES:
        return masks
    return _float32(masks)


def lds(weights, bias, masks, margins, n_train: int, targets=None) -> dict:
    """Per-target LDS and held-out MSE of datamodels on held-out models.

    masks : (M, n_train) bool and margins : (M, N_targets) of models NOT used to fit.
    Returns {"targets": (T,), "spearman": (T,), "mse": (T,), "n_models": (T,)} numpy arrays;
    spearman is NaN where fewer than 2 models count or a side is constant.
    """
    columns = _columns(targets, margins.shape[1])
    return lds_by_block(lambda cols: (weights[cols], bias[cols]), masks, margins, n_train, columns)


def lds_by_block(datamodels, masks, margins, n_train: int, columns: np.ndarray) -> dict:
    """lds() with datamodels(cols) -> (weights (T_b, n_train), bias (T_b,)) of a block of columns, for any
    linear predictor of margins from masks (backend.attribution.yardsticks scores every method this way)."""
    out = _lds_result(columns)
    rows = resident_rows(masks)
    for lo, cols in _blocks(columns, masks.shape[0], n_train):
        inc = included(masks, cols, n_train)
        pred = _predict(*datamodels(cols), rows)
        actual = take_columns(margins, cols).astype(np.float64)
        _lds_block(out, slice(lo, lo + len(cols)), pred, actual, inc)
    return out


def _lds_result(columns: np.ndarray) -> dict:
    """lds()'s result for targets `columns`, NaN (none counted) until _lds_block fills it."""
    return {"targets": columns, "spearman": np.full(len(columns), np.nan),
            "mse": np.full(len(columns), np.nan), "n_models": np.zeros(len(columns), dtype=np.int64)}


def _lds_block(out: dict, sl: slice, pred: np.ndarray, actual: np.ndarray, inc: np.ndarray,
               spearman: np.ndarray | None = None) -> None:
    """out[...][sl] of lds() from a block's predictions pred and margins actual (M, T) on its models inc.
    spearman: the same correlation already computed over all of inc (table5's), used where every prediction
    is finite; a NaN prediction (an unfitted target's) counts no model."""
    finite = np.isfinite(pred)
    out["spearman"][sl] = spearman if spearman is not None and finite.all() else \
        masked_spearman(pred, actual, inc & finite)
    n = inc.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["mse"][sl] = np.where(n > 0, (np.where(inc, pred - actual, 0) ** 2).sum(axis=0) / n, np.nan)
    out["n_models"][sl] = n


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


def model_sums(rows: np.ndarray, masks) -> np.ndarray:
    """rows (R, M) int8 @ masks (M, F) 0/1: (R, F) int32, exact (torch._int_mm: int8 GEMMs with int32
    accumulation, measured 4.3× a float32 GEMM here). The masks are read in place, MASK_CHUNK_BYTES at a time."""
    import torch

    n_models = masks.shape[0]
    step = max(1, MASK_CHUNK_BYTES // max(1, masks.shape[1]))
    acc = None
    for r in range(0, n_models, step):
        lhs = rows if step >= n_models else np.ascontiguousarray(rows[:, r:r + step])
        part = torch._int_mm(torch.from_numpy(lhs), _int8(masks[r:r + step]))
        acc = part if acc is None else acc.add_(part)
    return acc.numpy()


def _fixed_point(values: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """A 24-bit fixed-point copy of values (T, M) per row: scale (T,) and int8 limbs[k] (T, M) with
    values ≈ scale·Σ_k 256^k·limbs[k], each off by at most half a step scale = max|values|/FIXED_POINT_MAX."""
    scale = np.abs(values).max(axis=1) / FIXED_POINT_MAX
    scale[scale == 0] = 1.0
    q = np.rint(values / scale[:, None]).astype(np.int32)
    limbs = []  # each in [-128, 127]; the top one in [-127, 127]
    for _ in range(MARGIN_LIMBS - 1):
        limbs.append(((q + 128) & 255) - 128)
        q = (q - limbs[-1]) >> 8
    limbs.append(q)
    return scale, [limb.astype(np.int8) for limb in limbs]


def inverse_counts(n: np.ndarray, n_in: np.ndarray) -> np.ndarray:
    """1/n_in + 1/n_out = n/(n_in·n_out) in n_in's float dtype (shapes broadcast), 0 where a side holds no
    model: a difference of means of centred values is their sum over the models holding a feature times this."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        out = np.divide(n, n_in * (n - n_in), dtype=n_in.dtype)  # ±inf or NaN where a side is empty
    out[~np.isfinite(out)] = 0
    return out


class MarginalEffects:
    """The sums behind the differences of means of targets `columns` over their own fit models (eq. 9 for
    training targets), targets along rows, so no (T, F) array needs a transposed copy:
    n (T,) models counted; n_in (T, F) of them holding each feature; mean (T,) the margins' mean over them;
    centred (T, M) the margins minus it, 0 on models not counted, and total (T,) its float64 sum; correct (T, M)
    1[margin > 0] on counted models and correct_in (T, F) its sums over the models holding each feature.

    Every sum over models is an int8 GEMM with exact int32 accumulation (model_sums): the masks are 0/1, so
    are the counted models and their correct ones, and the centred margins enter as int8 limbs of a 24-bit
    fixed-point copy per target (_fixed_point). `limbs` of them (the top ones) are summed at first, add_limb
    sums the next; `residual` (T, M) is what the summed limbs leave out of `centred`.
    """

    def __init__(self, masks, margins, n_train: int, columns: np.ndarray, limbs: int = MARGIN_LIMBS):
        n_models, n_features = masks.shape
        t = len(columns)
        y = np.ascontiguousarray(take_columns(margins, columns).T, dtype=np.float64)
        inc = np.ascontiguousarray(included(masks, columns, n_train).T)
        self.n = inc.sum(axis=1)
        self.mean = np.where(inc, y, 0.0).sum(axis=1) / np.maximum(self.n, 1)
        self.centred = np.where(inc, y - self.mean[:, None], 0.0)
        self.total = self.centred.sum(axis=1)
        self.correct = (y > 0) & inc
        self.scale, self._limbs = _fixed_point(self.centred)
        self._masks = masks
        train = columns < n_train  # test targets count every model: their n_in is the masks' column sums
        k_train = int(train.sum())
        first = MARGIN_LIMBS - limbs
        rows = np.empty((k_train + 1 + (limbs + 1) * t, n_models), dtype=np.int8)
        rows[:k_train], rows[k_train] = inc[train], 1
        for k, part in enumerate([self.correct, *self._limbs[first:]]):
            rows[k_train + 1 + k * t:k_train + 1 + (k + 1) * t] = part
        acc = model_sums(rows, masks)
        self.n_in = np.empty((t, n_features), dtype=np.float32)  # counts below 2^24: exact
        self.n_in[train], self.n_in[~train] = acc[:k_train], acc[k_train]
        self.correct_in = acc[k_train + 1:k_train + 1 + t]
        self._sums = {first + k: acc[k_train + 1 + (k + 1) * t:k_train + 1 + (k + 2) * t] for k in range(limbs)}
        self._factors = {}

    def add_limb(self) -> None:
        """Sum the next lower limb of the centred margins too (one more GEMM row per target)."""
        k = min(self._sums) - 1
        self._sums[k] = model_sums(self._limbs[k], self._masks)

    @property
    def residual(self) -> np.ndarray:
        held = sum(256.0 ** k * self._limbs[k].astype(np.float64) for k in self._sums)
        return self.centred - self.scale[:, None] * held

    def factor(self, dtype=np.float64) -> np.ndarray:
        """(T, F) 1/n_in + 1/n_out = n/(n_in·n_out), 0 where a side holds no model (inverse_counts)."""
        if dtype not in self._factors:
            self._factors[dtype] = inverse_counts(self.n.astype(dtype)[:, None], self.n_in.astype(dtype, copy=False))
        return self._factors[dtype]

    def weights(self, outcome: str, dtype=np.float64) -> np.ndarray:
        """The difference-of-means weights (T, F) of the margins ("margin") or of correctness ("correct"):
        w_ti = mean(y_t | i in) − mean(y_t | i out) = sum_in·(1/n_in + 1/n_out) − total/n_out
        = (sum_in − n_in·total/n)·(1/n_in + 1/n_out), with sums of y − mean(y) (for the margins, of their summed
        limbs; total, their sum over all counted models, is 0 but for rounding), 0 where a side has no model
        (factor is 0 there). float32 for predictions (_predict multiplies in float32), float64 for the weights
        themselves."""
        n = np.maximum(self.n, 1)
        if outcome == "margin":
            sum_in = sum(np.multiply(s, (self.scale * 256.0 ** k).astype(dtype)[:, None], dtype=dtype)
                         for k, s in self._sums.items())
            sum_in -= self.n_in * (self.total / n).astype(dtype)[:, None]
        else:  # centred in float64: the weights are small differences of the accuracy on both sides
            n_correct = self.correct.sum(axis=1)
            y_mean = n_correct / n
            shift = y_mean + (n_correct - self.n * y_mean) / n
            sum_in = np.multiply(self.n_in, shift[:, None])
            sum_in = np.subtract(self.correct_in, sum_in, out=sum_in).astype(dtype, copy=False)
        sum_in *= self.factor(dtype)
        return sum_in

    def effects(self, outcome: str) -> tuple[np.ndarray, np.ndarray]:
        """weights(outcome) in float64 and the bias b_t = mean(y_t) − x̄_t·w_t (T,), so the prediction is right
        on average over the counted models."""
        w = self.weights(outcome)
        y_mean = self.mean if outcome == "margin" else self.correct.sum(axis=1) / np.maximum(self.n, 1)
        b = np.where(self.n > 0, y_mean - (self.n_in * w).sum(axis=1) / np.maximum(self.n, 1), 0.0)
        return w, b


def marginal_effects(masks, margins, n_train: int, columns: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Difference-of-means predictors of targets `columns` on both outcomes: {"margin": (w, b), "correct": (w, b)}.

    masks : (M, n_train) bool; margins : (M, N_targets). w (T, n_train) float64 with
    w_ti = mean(y_t | i in subset) − mean(y_t | i out) over target t's own models (eq. 9 for training
    targets), 0 where a side has no model; b (T,) = mean(y_t) − x̄_t·w_t, so the prediction is right on
    average over those models. y is the margin ("margin") or 1[margin > 0] ("correct").
    The margins' fixed-point rounding, at most half a step of max|y − mean(y)|/FIXED_POINT_MAX per model, moves
    a weight by at most one step (CIFAR-scale margins of ±20: 2e-6), as little as float32 accumulation would.
    """
    sums = MarginalEffects(masks, margins, n_train, columns)
    return {outcome: sums.effects(outcome) for outcome in ("margin", "correct")}


def _effect_blocks(columns: np.ndarray, n_models: int, n_heldout: int, n_features: int):
    """Blocks of targets for marginal_effects and its predictions: per target ~ 56·F + 40·M + 72·M_heldout bytes
    (the int32 sums, the float64 and float32 weights, the margins and limbs, three predictions and their ranks)."""
    size = max(1, BLOCK_BYTES // (56 * n_features + 40 * n_models + 72 * n_heldout))
    for lo in range(0, len(columns), size):
        yield lo, columns[lo:lo + size]


def difference_of_means(masks, margins, n_train: int, targets=None, *, correctness: bool = False
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Linear predictors from marginal effects: w_ti = mean(y_t | i in subset) − mean(y_t | i out).

    masks : (M, n_train) bool; margins : (M, N_targets); y is the margin, or with `correctness`
    1[margin > 0] (marginal_effects). Returns weights (T, n_train) and bias (T,) float64.
    """
    columns = _columns(targets, margins.shape[1])
    weights = np.zeros((len(columns), n_train))
    bias = np.zeros(len(columns))
    for lo, cols in _effect_blocks(columns, masks.shape[0], 0, n_train):
        w, b = marginal_effects(masks, margins, n_train, cols)["correct" if correctness else "margin"]
        weights[lo:lo + len(cols)], bias[lo:lo + len(cols)] = w, b
    return weights, bias


ESTIMATORS = ("empirical_influence", "difference_of_means", "datamodel")
SPREAD_FOR_TWO_LIMBS = 2.0 ** -8  # see Kernels


class Kernels:
    """Σ_i xh_hi·φ_i·x_mi between held-out models h (rows) and fit models m (columns): (M_h, M) float64.

    Why: a difference of means is linear in the margins once its counts are fixed. Over all fit models
    (test targets) w_i = s_i·φ_i − total·g_i with s = Σ_m x_m·(y_m − mean), φ = 1/n_in + 1/n_out and
    g = 1/n_out, both set by the masks' column sums, so the held-out predictions are
    kernel(φ)·(y − mean) − total·(x_h·g): one (M_h × M) product per target instead of (M × F) sums and an
    (M_h × F) prediction. For a training target φ varies with its own counts, but only by ~1/n relative around
    α = 0.5 (1/n_in + 1/n_out is flat where n_in = n/2): the int8 sums drop the margins' lowest limb and add
    back what it holds through kernel() times the target's mean φ, whose error is that rms spread times what
    the limb holds: below the 24-bit copy's own rounding while the spread stays under SPREAD_FOR_TWO_LIMBS.
    Each kernel costs M_h·M·F int8 operations: computed once per table5, on first use.
    """

    def __init__(self, fit_masks, heldout_masks):
        self.fit, self.held = fit_masks, np.asarray(heldout_masks, dtype=bool)
        self._plain = self._all = None

    def _products(self, lhs: np.ndarray) -> np.ndarray:
        """lhs (M_h, F) int8 @ fit masksᵀ: (M_h, M) int32, exact; the fit masks read in place in row chunks."""
        import torch

        step = max(1, MASK_CHUNK_BYTES // max(1, self.fit.shape[1]))
        left = torch.from_numpy(np.ascontiguousarray(lhs))
        return np.concatenate([torch._int_mm(left, _int8(self.fit[r:r + step]).t()).numpy()
                               for r in range(0, self.fit.shape[0], step)], axis=1)

    def plain(self) -> np.ndarray:
        """φ = 1: the number of features two models share (float64)."""
        return self.plain_float32().astype(np.float64)

    def plain_float32(self) -> np.ndarray:
        """plain() in float32: counts below 2^24, exact."""
        if self._plain is None:
            self._plain = self._products(self.held.view(np.int8)).astype(np.float32)
        return self._plain

    def weighted(self, phi: np.ndarray) -> np.ndarray:
        """φ (F,) float: mean(φ)·plain() plus the deviations φ − mean(φ) as a 24-bit fixed-point copy in int8
        limbs, as many as they need to stay within 2^-24 of mean(φ) (around α = 0.5, two)."""
        mean = float(phi.mean())
        dev = phi - mean
        out = mean * self.plain()
        top = float(np.abs(dev).max())
        if top == 0:
            return out
        scale, limbs = _fixed_point(dev[None, :])
        needed = int(np.clip(np.ceil((24 + np.log2(top / max(abs(mean), 1e-300))) / 8), 1, MARGIN_LIMBS))
        for k in range(MARGIN_LIMBS - needed, MARGIN_LIMBS):
            out += scale[0] * 256.0 ** k * self._products(self.held * limbs[k][0])
        return out

    def all_models(self) -> tuple[np.ndarray, np.ndarray]:
        """For test targets (every fit model counts): weighted(φ) with φ = 1/n_in + 1/n_out from the masks'
        column sums, and x_h·g (M_h,) with g = 1/n_out (both 0 where a side holds no model)."""
        if self._all is None:
            n = self.fit.shape[0]
            n_in = model_sums(np.ones((1, n), dtype=np.int8), self.fit)[0].astype(np.float64)
            phi = inverse_counts(np.float64(n), n_in)
            with np.errstate(divide="ignore"):
                g = np.where(phi > 0, 1 / (n - n_in), 0.0)
            self._all = self.weighted(phi), _predict(g[None, :], np.zeros(1), self.held)[:, 0]
        return self._all


def _test_predictions(kernels: Kernels, fit_margins, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Held-out predictions (M_h, T) of the empirical influence and the difference of means of test targets
    `columns` (every fit model counts), without their biases (ranks ignore them): Kernels' identity."""
    kernel, shared = kernels.all_models()
    y = take_columns(fit_margins, columns).astype(np.float64)
    out = []
    for values in ((y > 0).astype(np.float64), y):
        centred = values - values.mean(axis=0)
        out.append(kernel @ centred - np.outer(shared, centred.sum(axis=0)))
    return out[0], out[1]


def _train_effects(fit_masks, fit_margins, n_train: int, columns: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """Float32 weights (T, F) of the empirical influence and the difference of means of targets `columns`
    from their int8 sums (MarginalEffects), with two margin limbs where the spread of 1/n_in + 1/n_out allows
    Kernels' correction, else all three. Then also (else None) what the dropped limb holds, residual (M, T)
    float32, and each target's mean 1/n_in + 1/n_out (T,): the correction is kernel·residual·mean."""
    sums = MarginalEffects(fit_masks, fit_margins, n_train, columns, limbs=MARGIN_LIMBS - 1)
    factor = sums.factor(np.float32)
    valid = np.maximum((factor > 0).sum(axis=1), 1)
    mean = factor.sum(axis=1, dtype=np.float64) / valid
    with np.errstate(invalid="ignore", divide="ignore"):
        spread = np.sqrt((np.where(factor > 0, factor / mean[:, None].astype(np.float32) - 1, 0) ** 2
                          ).sum(axis=1, dtype=np.float64) / valid)
    residual = None
    if (spread <= SPREAD_FOR_TWO_LIMBS).all():
        residual = np.ascontiguousarray(sums.residual.T, dtype=np.float32)
    else:
        sums.add_limb()
    return sums.weights("correct", np.float32), sums.weights("margin", np.float32), residual, mean


def table5(weights, bias, fit_masks, fit_margins, heldout_masks, heldout_margins, n_train: int,
           targets=None) -> dict:
    """Per-target scores of the comparison in Table 5 of Ilyas et al. 2022.

    Three linear predictors, all scored on the same held-out models: empirical influence
    (difference of means of correctness = 1[margin > 0] over the fit models), difference of means
    of margins, and the LASSO datamodel (weights, bias). For each, "spearman" compares the
    prediction with what it predicts (correctness for empirical influence, margins otherwise),
    "spearman_margin" always with margins, and "auc" is the AUC of the prediction for correctness
    (NaN where the held-out models show one outcome only).
    Returns {"targets": (T,), estimator: {score: (T,)}, "lds": lds()'s result} numpy arrays: the datamodel's
    LDS and held-out MSE come with it, as its predictions are made here anyway (`eval` makes them once).
    """
    columns = _columns(targets, heldout_margins.shape[1])
    out = {"targets": columns, "lds": _lds_result(columns)}
    out.update({e: {k: np.full(len(columns), np.nan) for k in ("spearman", "spearman_margin", "auc")}
                for e in ESTIMATORS})
    kernels = Kernels(fit_masks, heldout_masks)
    rows = resident_rows(heldout_masks)
    for lo, cols in _effect_blocks(columns, fit_masks.shape[0], heldout_masks.shape[0], n_train):
        inc = included(heldout_masks, cols, n_train)
        actual = take_columns(heldout_margins, cols).astype(np.float64)
        correct = actual > 0
        preds = np.empty((3, *actual.shape))
        test = cols >= n_train
        w = [np.asarray(weights[cols], dtype=np.float32)]
        if not test.all():
            influence, means, residual, mean = _train_effects(fit_masks, fit_margins, n_train, cols[~test])
            w += [influence, means]
            del influence, means
        # The predictors' weights in one product, so the held-out masks are read and converted once.
        products = _predict(np.concatenate(w), np.zeros(sum(len(x) for x in w)), rows)
        del w
        preds[2] = products[:, :len(cols)] + np.asarray(bias[cols], dtype=np.float64)
        if not test.all():
            preds[0][:, ~test], preds[1][:, ~test] = np.split(products[:, len(cols):], 2, axis=1)
            if residual is not None:  # Kernels: what the dropped margin limb holds, at the target's mean factor
                preds[1][:, ~test] += (kernels.plain_float32() @ residual) * mean
        if test.any():
            preds[0][:, test], preds[1][:, test] = _test_predictions(kernels, fit_margins, cols[test])
        ranks_margin, ranks_correct = masked_ranks(actual, inc), masked_ranks(correct.astype(np.float64), inc)
        sl = slice(lo, lo + len(cols))
        for name, pred in zip(ESTIMATORS, preds):
            ranks = masked_ranks(pred, inc)
            out[name]["spearman_margin"][sl] = spearman_of_ranks(ranks, ranks_margin, inc)
            own = ranks_correct if name == "empirical_influence" else ranks_margin
            out[name]["spearman"][sl] = spearman_of_ranks(ranks, own, inc)
            out[name]["auc"][sl] = auc_of_ranks(ranks, correct, inc)
        _lds_block(out["lds"], sl, preds[2], actual, inc, out["datamodel"]["spearman"][sl])
    return out


def table5_report(weights, bias, fit_masks, fit_margins, heldout_masks, heldout_margins, n_train: int,
                  targets=None) -> dict:
    """JSON-able Table 5: each estimator's scores averaged (with quartiles) over test and training targets."""
    res = table5(weights, bias, fit_masks, fit_margins, heldout_masks, heldout_margins, n_train, targets)
    return table5_summary(res, fit_masks.shape[0], heldout_masks.shape[0], n_train)


def table5_summary(res: dict, n_fit: int, n_heldout: int, n_train: int) -> dict:
    """table5_report's dict from table5's per-target result (for a Table 5 already computed)."""
    report = {"n_fit_models": int(n_fit), "n_heldout_models": int(n_heldout)}
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

    Only fitted targets are scored (`fit --targets` may leave some unfitted: NaN λ); metrics.json's
    "unfitted" names the others, and their lds.npy entries are NaN.

    heldout must hold the same dataset and another seed, or its models are not held out. progress counts
    stages ("stage"): LDS and Table 5 (one pass: table5 gives the LDS too), then one per sample-complexity fit,
    each fit reporting within its stage.
    """
    from backend.training.engine import resolve_device

    check_heldout(run, heldout)
    total = 1 + (len(COMPLEXITY_FRACTIONS) if complexity else 0)
    if progress:
        progress(0, total, "stage")
    weights, bias = run.array(WEIGHTS), run.array(BIAS)
    fitted = np.flatnonzero(fitted_targets(run.array(LAM)))
    if not len(fitted):
        raise RunError(f"{run.dir} has no fitted datamodel (every λ in lam.npy is NaN): fit them with "
                       f"`{WEIGHTS.command(run.dir)}`")
    scores = table5(weights, bias, run.masks, run.margins, heldout.masks, heldout.margins, run.n_train, fitted)
    per_target = scores["lds"]
    # Relative to the run, so a copied or moved run still names its own held-out run (quality.heldout_dir).
    metrics = {"heldout_run": os.path.relpath(heldout.dir.resolve(), run.dir.resolve()), "n_fit_models": int(len(run.masks)),
               **summary_report(per_target, len(heldout.masks), run.n_train),
               "table5": table5_summary(scores, len(run.masks), len(heldout.masks), run.n_train)}
    if len(fitted) < run.n_targets:  # every number above is over the fitted targets only
        unfitted = np.setdiff1d(np.arange(run.n_targets), fitted)
        metrics["unfitted"] = {"n_train": int((unfitted < run.n_train).sum()), "n_test": int((unfitted >= run.n_train).sum()),
                               "targets": describe_targets(unfitted, run.n_train, run.n_test)}
    lds_all = np.full(run.n_targets, np.nan, dtype=np.float32)
    lds_all[fitted] = per_target["spearman"]
    if progress:
        progress(1, total, "stage")
    if complexity:
        def on_fraction(i: int) -> Progress | None:
            return part(progress, 1 + i, 1, total, "stage")
        metrics["sample_complexity"] = sample_complexity(
            run.masks, run.margins, heldout.masks, heldout.margins, run.n_train, fractions=COMPLEXITY_FRACTIONS,
            targets=np.intersect1d(default_complexity_targets(run.n_train, run.n_test), fitted),
            on_fraction=on_fraction, device=resolve_device(device))
    with transaction(run.dir, "eval"):  # metrics.json and lds.npy appear together
        write_array(run.dir, LDS, lds_all)
        write_json(run.dir, METRICS, metrics)
    if progress:
        progress(total, total, "stage")
    return metrics
