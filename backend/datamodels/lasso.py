"""Batched LASSO regularisation paths for many regression targets at once (torch, CPU or CUDA).

Every target t solves scikit-learn's `Lasso` problem on its own rows R_t of a 0/1 design:

    min_{w, b}  1/(2 M_t) · Σ_{i ∈ R_t} (y_it − b − x_i·w)² + λ_t · ‖w‖₁,      M_t = |R_t|.

Datamodels (Ilyas et al. 2022, eq. 9) fit a *training* target only on the models that did not train
on it, so R_t differs per training target; test targets use every row.

Centring each target's rows on their own means removes the unpenalised intercept and leaves the
smooth part f_t(w) = ½ wᵀH_t w − q_tᵀw + c_t, with H_t = X_cᵀX_c / M_t, q_t = X_cᵀy_c / M_t and
c_t = ‖y_c‖² / (2 M_t). The solver needs nothing from the data but products H_t·w for a whole block
of targets, which come in two forms:

* `GramDesign`: the targets share their rows, so H = G/M is one F×F matrix and an iteration is one
  F×F×T GEMM.
* `MaskedDesign`: per-target rows. With Z the rows centred on their common mean and z̄_t the mean of
  Z over R_t, H_t w = Zᵀ(s_t ⊙ Z w)/M_t − z̄_t (z̄_tᵀ w): two M×F×T GEMMs, whatever the row sets.

Random-subset masks make H_t close to α(1−α)·I on the centred space, so accelerated proximal gradient
(FISTA with adaptive restart and step sizes fitted to the curvature met, see `fista`) needs few
iterations, most of all with warm starts along the path.

Working sets (`solve_working_set`, as celer, skglm and glmnet's strong rules do): at each λ_k a batch
of targets starts from the features the sequential strong rule keeps (|∇_j f(w_{k−1})| ≥ 2λ_k − λ_{k−1},
plus the nonzeros), solves the problem restricted to their union S by FISTA (products on G[S, S] or
Z[:, S]), then one product over all features checks KKT for the batch; violators join S and only the
targets that violated are solved again. A target stops on its duality gap over all features, the same
rule as before, so the answers are scikit-learn's. The batch shares one S (one GEMM shape), and GEMMs
need ≥ 64 targets to run near peak on CPU (T = 8: 3 GFLOP/s, T = 128: 75), so the union is wide: on
random-subset masks the union of 64 targets' sets covers 90 % of 10,000 features once each target keeps
~130. Measured, one thread, load 7–11: on a synthetic 1,800 × 10,000 problem, 64 test targets
(`gram=False`), 155 ms against 177 ms a target (1.14×); `benchmarks/bench_scale.py`'s fit block at CIFAR
shape (2,000 models × 50,000 features, 32 test targets, load 8.5) 4.2 s against 10.8 s a target (2.2× in
CPU seconds); on the digits run (1,297 features, 256 targets a batch, the path with validation and
patience) little: training targets 68 against 74 ms (1.09×), test targets 9.3 against 9.4, as the union
of the batch's sets exceeds half the features after the first steps (`benchmarks/bench_lasso.py --run` on
digits, whole 50-λ paths, one thread, load 3–9: test targets 20.5 ms of CPU a target against scikit-learn's
390, celer's 2,643 and skglm's 5,110; training targets 168 against 267, 1,653 and 1,873). The path takes ~4 products per λ step, so
the KKT product per step caps the gain near 3× however small S is. A set above half the features
(WORKING_SET_MAX) is solved on all of them, without the check. Per-target sets would cut the flops
~70× at 10,000 features, but torch's CPU sparse kernels (CSR × dense 2.2 GFLOP/s, sampled products
0.3) lose it again. Grouping a batch's targets by overlap of their sets, each group solved on its own
union (tried: groups of ~16 where a GEMM's column cost flattens), lost on digits and gained little elsewhere:
92 against 64 ms a digits training target, 153 against 159–167 on 10,000 features (one thread, load
14–16): the sets of a random mask design overlap little, and a GEMM on few targets costs nearly as much
as on many.

Per-target rows cost what their products cost: the whole 50-λ path of a digits training target takes ~400
of them, each two M×F GEMM columns (4 · 4,500 · 1,297 = 23 MFLOP), 9.2 GFLOP against ~90 GFLOP/s for one
core's float32 GEMM here. So on resident float32 rows on a CPU (`MaskRows.fixed_point`) the products run
in fixed point (`fixed_mm`): X is 0/1, so X·v is exact in integers once v is. v's columns become `limbs`
int8 digits of a fixed-point copy and one int8 GEMM with int32 sums (torch._int_mm) takes all digits at
once, at 200–215 G multiply-adds a second against float32's 43–47 (4,500 × 1,297 × 256, one thread);
Z = X − 1·meanᵀ goes through X (Z w = X w − meanᵀw, Zᵀp = Xᵀp − mean·1ᵀp). Every product whose result
is kept (a solve's first, the KKT check, the check that ends every solve) takes three digits, 24 bits,
a float32's mantissa. FISTA's steps multiply only the change of the iterate, hv + H·(cand − v), on
STEP_LIMBS = 2 digits: near the answer the change is small and so is its rounding. H·w carried along by
steps drifts by those roundings, so a solve ends on an exact product and its exact duality gap, and a
target whose gap it does not confirm is solved on with exact steps. One digit a step took more steps,
and late in a path most targets failed that check (107 against 97 ms a digits whole path). Measured in
turn, one thread, load about 1: the fit's training targets on digits (256, path with validation and
patience, refit) 55.7 → 31–34 ms of CPU a target, the whole 50-λ path (`bench_lasso.py --run`) 146.9 →
87–91 ms (scikit-learn's 220–240: 1.6× → 2.4–2.6×), objective excess ≤ 5.1e-5 at every λ; on the full
Fashion-MNIST run (2,000 models × 60,000 features, 64 targets, `gram=False`) training targets 0.73 →
0.46 s and test targets 0.72 → 0.44 s a target, every λ the same; bench_scale.py's block at 50,000
features 1.10 → 0.23 s a target. Fixed-point rows keep no float copy: the 0/1 rows and their int8
transpose (q, the validation MSE and the curvature bound are int8 products too). Ten times scikit-learn on the whole
path (22 ms) stays out of reach: the steps' two-digit products alone run at ~170 G a second, ≥ 55 ms.
The thin products (`_mm`, THIN_TARGETS) are what the tail of a batch needs on float rows: when few targets
of a λ step are left, BLAS's tall Zᵀ·P took as long for 4 targets as for 128; the transposed forms made the
fit's training targets 76 → 57 ms of CPU a target before fixed point (digits, 256 targets, one thread, load
20–25). `_int_mm` pads its digit columns to a multiple of 8 instead, where it runs fastest.

The validation choice has a tie rule (`improves`): a step beats the best so far only when its score is
lower by more than SCORE_RTOL (1e-3) relatively, so thread count, block size and `--ray` (float summation
order) and the solver tolerance do not flip the chosen λ on near-ties; the larger λ wins ties, and
patience counts steps by the same rule. On the digits run, fits at 1 and 2 threads, in one block and as
`--ray auto` tasks of 300 targets at one thread each chose all 1,797 λ alike; weights within 6.1e-5
(with fixed point: 1.1e-4; its int8 sums are exact, whatever the threads).

Memory: the mask rows stay on the device as float when M·F·itemsize ≤ `resident_bytes` (2 GiB), else
they are re-read from the (memory-mapped) masks in chunks of `chunk_bytes` (256 MiB) at every product;
fixed-point rows are the 0/1 rows and their int8 transpose instead (2·M·F bytes), and a working set's rows
of the transpose (M·S).
A block of T targets holds its margins and row sets (2·M·T floats), about twelve F×T tensors of
solver state, and, for a `GramDesign`, the F×F Gram matrix shared by all blocks on those rows (built
in float64: 8·F² bytes while it is summed); `TargetBlock(gram=False)` avoids it when F is large.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from backend.progress import Progress

RESIDENT_BYTES = 2 << 30
CHUNK_BYTES = 256 << 20
GROUP_TARGETS = 512
WORKING_SET_MAX = 0.5
# Validation scores within this relative distance of the best so far are ties, won by the larger λ.
SCORE_RTOL = 1e-3
# int8 digits of a factor's fixed-point copy in `fixed_mm`: three hold 24 bits, a float32's mantissa (every
# product whose result is kept); FISTA's steps multiply only the change of the iterate, small near the answer.
EXACT_LIMBS = 3
STEP_LIMBS = 2


class MaskRows:
    """Rows `rows` of a bool mask matrix, on `device`, resident or re-read in chunks.

    masks : ndarray of shape (n_models, n_features), bool (an np.memmap is fine)
    rows : int array of model indices to use
    """

    def __init__(self, masks, rows, *, device="cpu", dtype=torch.float32,
                 resident_bytes: int = RESIDENT_BYTES, chunk_bytes: int = CHUNK_BYTES):
        self.masks = masks
        self.rows = np.asarray(rows, dtype=np.int64)
        self.device = torch.device(device)
        self.dtype = dtype
        self.n = len(self.rows)
        self.n_features = masks.shape[1]
        itemsize = torch.empty((), dtype=dtype).element_size()
        self.resident = self.n * self.n_features * itemsize <= resident_bytes
        self.chunk_rows = self.n if self.resident else max(1, chunk_bytes // (self.n_features * itemsize))
        counts = np.zeros(self.n_features, dtype=np.int64)
        for lo, hi in self.spans():
            counts += self._read(lo, hi).sum(axis=0)
        self.mean = torch.as_tensor(counts / max(self.n, 1), dtype=dtype, device=self.device)
        self._chunks, self._int8 = None, None
        if self.fixed_point:  # the 0/1 rows and their int8 transpose only: no float copy (4·M·F bytes)
            x = torch.as_tensor(self._read(0, self.n))
            self._chunks = [(None, x)]
            x8 = x.view(torch.int8)
            self._int8 = (x8, _canonical(x8.T))
        elif self.resident:
            self._chunks = [self._convert(lo, hi) for lo, hi in self.spans()]
        self._gram: torch.Tensor | None = None
        self._top: torch.Tensor | None = None

    @property
    def fixed_point(self) -> bool:
        """Whether these rows are multiplied by int8 GEMMs (`fixed_mm`, float32's precision) and kept as
        0/1 rows and their int8 transpose only (2·M·F bytes, no float copy): resident float32 rows on a CPU."""
        return self.resident and self.device.type == "cpu" and self.dtype == torch.float32 and self.n > 0

    def int8(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The raw 0/1 rows as int8, (M, F), and their transposed copy, (F, M), of fixed-point rows."""
        return self._int8

    def spans(self) -> list[tuple[int, int]]:
        """(lo, hi) positions into `rows` of each chunk."""
        return [(lo, min(lo + self.chunk_rows, self.n)) for lo in range(0, self.n, max(self.chunk_rows, 1))]

    def _read(self, lo: int, hi: int) -> np.ndarray:
        return np.asarray(self.masks[self.rows[lo:hi]], dtype=bool)

    def _convert(self, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.as_tensor(self._read(lo, hi), device=self.device)
        return x.to(self.dtype) - self.mean, x

    def __iter__(self) -> Iterator[tuple[int, int, torch.Tensor | None, torch.Tensor]]:
        """(lo, hi, Z, X): Z the centred float rows (m, F), None on fixed-point rows, X the bool rows (m, F)."""
        for k, (lo, hi) in enumerate(self.spans()):
            z, x = self._chunks[k] if self._chunks is not None else self._convert(lo, hi)
            yield lo, hi, z, x

    def top_eigenvalue(self, steps: int = 50) -> torch.Tensor:
        """λ_max(ZᵀZ/n) by power iteration (from below, plus 5 %); computed once.

        For any target with rows R ⊆ these rows, λ_max(H_t) ≤ this · n/M_t: dropping rows and
        re-centring on their own mean only removes curvature. The solver starts from that bound and
        adapts its steps to the curvature it meets, so every block of targets starts alike.
        """
        if self._top is None:
            gen = torch.Generator(device="cpu").manual_seed(0)
            v = torch.randn(self.n_features, 1, generator=gen).to(self.device, self.dtype)
            rq = torch.zeros((), dtype=self.dtype, device=self.device)
            for _ in range(steps):
                v = v / v.norm().clamp(min=1e-30)
                if self.fixed_point:
                    x8, xt8 = self.int8()
                    hv = centred_product(x8, xt8, self.mean, self.mean, v, EXACT_LIMBS)
                else:
                    hv = torch.zeros_like(v)
                    for _, _, z, _ in self:
                        hv.addmm_(z.T, z @ v)
                hv /= max(self.n, 1)
                rq = (v * hv).sum()
                v = hv
            self._top = 1.05 * rq.clamp(min=1e-12)
        return self._top

    def gram(self) -> torch.Tensor:
        """Centred Gram matrix over all rows divided by their number, (F, F); computed once.

        XᵀX of 0/1 rows is integer-exact in float32 below 2**24 rows; the centring is done in float64.
        """
        if self._gram is None:
            xtx = torch.zeros(self.n_features, self.n_features, dtype=torch.float64, device=self.device)
            for _, _, _, x in self:
                xf = x.to(torch.float32)
                xtx += (xf.T @ xf).double()
            mean = self.mean.double()
            self._gram = ((xtx - self.n * torch.outer(mean, mean)) / self.n).to(self.dtype)
        return self._gram


def _include(x: torch.Tensor, excluded: torch.Tensor) -> torch.Tensor:
    """Bool (m, T): which of these rows each target is fitted on (eq. 9: not the models that saw it)."""
    has = excluded >= 0
    return ~(x.index_select(1, excluded.clamp(min=0)) & has)


class GramDesign:
    """H·W = G·W for targets sharing all rows: one F×F×T GEMM."""

    def __init__(self, rows: MaskRows, columns: torch.Tensor | None = None, cols: torch.Tensor | None = None):
        self.rows, self.cols = rows, cols
        self._columns = rows.gram() if columns is None else columns  # G[:, S], (F, S)
        self.gram = self._columns if cols is None else self._columns.index_select(0, cols)

    def on(self, cols: torch.Tensor) -> "GramDesign":
        """The operator restricted to the features `cols` (S,): G[S, S], one S×S×T GEMM per product."""
        return GramDesign(self.rows, self.rows.gram().index_select(1, cols), cols)

    fixed_point = False

    def apply(self, w: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return self.gram @ w

    def step(self, cand: torch.Tensor, v: torch.Tensor, hv: torch.Tensor, idx: torch.Tensor, limbs: int) -> torch.Tensor:
        """H·cand for a FISTA candidate from the point v (H·v = hv)."""
        return self.gram @ cand

    def kkt(self, w: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """H·w over all features (F, T) for w of this operator's features: G[:, S]·w_S on a restriction."""
        return self._columns @ w

    def lipschitz(self, idx: torch.Tensor) -> torch.Tensor:
        """Initial curvature bound per target, (T,)."""
        return self.rows.top_eigenvalue().expand(len(idx)).clone()


class MaskedDesign:
    """H_t·w_t = Zᵀ(s_t ⊙ Z w_t)/M_t − z̄_t (z̄_tᵀ w_t) for per-target rows: two M×F×T GEMMs."""

    def __init__(self, rows: MaskRows, excluded: torch.Tensor, n_rows: torch.Tensor, z_mean: torch.Tensor):
        self.rows, self.excluded, self.n_rows, self.z_mean = rows, excluded, n_rows, z_mean
        # Resident rows keep the row sets as float (multiplying by a float mask is ~10x faster than by bool).
        self._include = [_include(x, excluded).to(rows.dtype) for _, _, _, x in rows] if rows.resident else None
        self._gathered: tuple[torch.Tensor | None, list | None] = (None, None)
        self.cols: torch.Tensor | None = None  # the features this operator acts on (None: all)
        self._z: list | None = None  # resident rows' columns `cols`, gathered once
        self._z_mean_all = z_mean

    def on(self, cols: torch.Tensor) -> "MaskedDesign":
        """The operator restricted to the features `cols` (S,): Z[:, S]ᵀ(s_t ⊙ Z[:, S] w_S)/M_t − z̄_S (z̄_Sᵀ w_S),
        two M×S×T GEMMs per product. Resident rows gather their S columns once (M·S floats; fixed-point rows
        the S rows of their int8 transpose, M·S bytes)."""
        sub = copy.copy(self)
        sub.cols, sub.z_mean, sub._z_mean_all = cols, self.z_mean.index_select(0, cols), self.z_mean
        if self.fixed_point:
            sub._xt8 = self.rows.int8()[1].index_select(0, cols)  # X[:, S] is its transposed view
        else:
            sub._z = [z.index_select(1, cols) for _, _, z, _ in self.rows] if self.rows.resident else None
        return sub

    @property
    def fixed_point(self) -> bool:
        """Products by int8 GEMMs on the raw 0/1 rows (`fixed_mm`): resident float32 rows on a CPU."""
        return self.rows.fixed_point

    def _includes(self, idx: torch.Tensor) -> list | None:
        """Per-chunk float row sets of targets `idx`, gathered once per distinct `idx` object."""
        if self._include is None:
            return None
        if self._gathered[0] is not idx:
            self._gathered = (idx, [s.index_select(1, idx) for s in self._include])
        return self._gathered[1]

    def apply(self, w: torch.Tensor, idx: torch.Tensor, limbs: int = EXACT_LIMBS) -> torch.Tensor:
        return self._product(w, idx, every_feature=False, limbs=limbs)

    def step(self, cand: torch.Tensor, v: torch.Tensor, hv: torch.Tensor, idx: torch.Tensor, limbs: int) -> torch.Tensor:
        """H·cand for a FISTA candidate from the point v (H·v = hv). In fixed point, hv + H·(cand − v) with
        `limbs` digits: the change is small near the answer, so its rounding is too, and every answer is
        checked by an exact product (`solve_working_set`)."""
        if not self.fixed_point:
            return self.apply(cand, idx)
        return self.apply(cand - v, idx, limbs).add_(hv)

    def kkt(self, w: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """H·w over all features (F, T) for w of this operator's features: on a restriction to S,
        Zᵀ(s_t ⊙ Z[:, S] w_S), so the check costs one M×F×T GEMM and one M×S×T, not two M×F×T."""
        return self._product(w, idx, every_feature=True, limbs=EXACT_LIMBS)

    def _product(self, w: torch.Tensor, idx: torch.Tensor, every_feature: bool, limbs: int) -> torch.Tensor:
        includes = self._includes(idx)
        excluded = self.excluded[idx]
        every_feature = every_feature and self.cols is not None
        if self.fixed_point:
            out = self._fixed_product(w, includes[0], every_feature, limbs)
        else:
            out = w.new_zeros(self.rows.n_features if every_feature else w.shape[0], w.shape[1])
            for k, (_, _, z, x) in enumerate(self.rows):
                z_s = z
                if self.cols is not None:
                    z_s = self._z[k] if self._z is not None else z.index_select(1, self.cols)
                p = _mm(z_s, w)
                p.mul_(includes[k] if includes is not None else _include(x, excluded).to(p.dtype))
                _add_mm_t(out, z if every_feature else z_s, p)
        z_mean = self.z_mean.index_select(1, idx)
        z_mean_out = self._z_mean_all.index_select(1, idx) if every_feature else z_mean
        out.div_(self.n_rows[idx])
        out.sub_(z_mean_out * (z_mean * w).sum(0))
        return out

    def _fixed_product(self, w: torch.Tensor, include: torch.Tensor, every_feature: bool, limbs: int) -> torch.Tensor:
        x8, xt8 = self.rows.int8()
        mean = self.rows.mean
        x8_s, xt8_s, mean_s = x8, xt8, mean
        if self.cols is not None:
            x8_s, xt8_s, mean_s = self._xt8.T, self._xt8, mean.index_select(0, self.cols)
        return centred_product(x8_s, xt8 if every_feature else xt8_s, mean_s, mean if every_feature else mean_s, w,
                               limbs, include)

    def lipschitz(self, idx: torch.Tensor) -> torch.Tensor:
        """Initial curvature bound per target, (T,)."""
        return self.rows.top_eigenvalue() * self.rows.n / self.n_rows[idx].clamp(min=1)


class TargetBlock:
    """A block of targets on one set of rows: their margins, row sets and means.

    rows : MaskRows over the models to use
    margins : ndarray of shape (n_models, n_targets_total), float (memmap fine); read only at `columns`,
        or None when `y` is given
    columns : int array of shape (T,), the targets (margins columns)
    n_train : columns below it are training targets, fitted without the models that saw them (eq. 9)
    y : ndarray of shape (len(rows.rows), T), the margins of these rows at `columns`, when the caller has
        read them already (the fit reads a block's columns once for its fit, validation and refit rows)
    gram : targets sharing all rows use the F×F Gram matrix (one F×F×T GEMM per product); False uses
        the rows themselves (two M×F×T GEMMs), for F so large that the Gram matrix does not fit in memory
    """

    def __init__(self, rows: MaskRows, margins, columns, n_train: int, *, y: np.ndarray | None = None,
                 gram: bool = True):
        self.rows = rows
        self.columns = np.asarray(columns, dtype=np.int64)
        dev, dt = rows.device, rows.dtype
        excluded = np.where(self.columns < n_train, self.columns, -1)
        self.excluded = torch.as_tensor(excluded, device=dev)
        self.has_excluded = bool((excluded >= 0).any())
        self.gram = gram
        if y is None:
            y = margins[np.ix_(rows.rows, self.columns)]
        self.y = torch.as_tensor(np.asarray(y), device=dev, dtype=dt)
        T, F = len(self.columns), rows.n_features
        n = torch.zeros(T, dtype=torch.float64, device=dev)
        y_sum = torch.zeros(T, dtype=torch.float64, device=dev)
        x_sum = torch.zeros(F, T, dtype=torch.float32, device=dev)
        for lo, hi, _, x in rows:
            s = _include(x, self.excluded)
            n += s.sum(0)
            y_sum += (self.y[lo:hi].double() * s).sum(0)
            if self.has_excluded:
                x_sum.addmm_(x.T.to(torch.float32), s.to(torch.float32))  # integer counts: exact
        self.n_rows = n
        safe_n = n.clamp(min=1)
        self.y_mean = y_sum / safe_n
        # Raw mask means over each target's rows (the intercept needs them); shared when no exclusion.
        mean = rows.mean.double()[:, None]
        self.x_mean = (x_sum.double() / safe_n) if self.has_excluded else mean
        self._quadratic = None

    def __len__(self) -> int:
        return len(self.columns)

    def quadratic(self):
        """(design, q, c0): H's operator, q = X_cᵀy_c/M_t of shape (F, T), c0 = ‖y_c‖²/(2M_t) of shape (T,)."""
        if self._quadratic is None:
            rows, dt = self.rows, self.rows.dtype
            F, T = rows.n_features, len(self)
            q = torch.zeros(F, T, dtype=dt, device=rows.device)
            c0 = torch.zeros(T, dtype=torch.float64, device=rows.device)
            for lo, hi, z, x in rows:
                yc = (self.y[lo:hi].double() - self.y_mean) * _include(x, self.excluded)
                c0 += (yc * yc).sum(0)
                # Σ_R (y−ȳ) = 0, so centring x by any constant is exact: Zᵀyc = Xᵀyc
                if z is None:
                    q += fixed_mm(rows.int8()[1], yc.to(dt), EXACT_LIMBS)
                else:
                    q.addmm_(z.T, yc.to(dt))
            safe_n = self.n_rows.clamp(min=1)
            q /= safe_n.to(dt)
            c0 /= 2 * safe_n
            if self.has_excluded:
                z_mean = (self.x_mean - rows.mean.double()[:, None]).to(dt)
                design = MaskedDesign(rows, self.excluded, self.n_rows.to(dt), z_mean)
            elif self.gram:
                design = GramDesign(rows)
            else:  # every row included and z̄_t = 0: H·w = Zᵀ(Z w)/M without the F×F matrix
                design = MaskedDesign(rows, self.excluded, self.n_rows.to(dt), torch.zeros(F, T, dtype=dt, device=rows.device))
            self._quadratic = (design, q, c0.to(dt))
        return self._quadratic

    def lambda_max(self) -> torch.Tensor:
        """Smallest λ with w = 0 for each target, (T,): max_j |X_cᵀy_c|_j / M_t."""
        return self.quadratic()[1].abs().amax(0)

    def intercept(self, w: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """b_t = ȳ_t − x̄_tᵀw_t for raw 0/1 masks, (T_a,) for w of shape (F, T_a)."""
        x_mean = self.x_mean.index_select(1, idx) if self.has_excluded else self.x_mean
        return (self.y_mean[idx] - (x_mean * w.double()).sum(0)).to(w.dtype)

    def mse(self, w: torch.Tensor, b: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Mean squared error of x·w_t + b_t over each target's own rows, (T_a,); NaN with no rows."""
        rows = self.rows
        excluded = self.excluded[idx]
        sse = torch.zeros(len(idx), dtype=torch.float64, device=w.device)
        if not rows.fixed_point:
            offset = (rows.mean[:, None] * w).sum(0) + b  # float rows are centred: raw x = z + mean
        for lo, hi, z, x in rows:
            pred = fixed_mm(rows.int8()[0], w, EXACT_LIMBS).add_(b) if z is None else z @ w + offset
            r = self.y[lo:hi].index_select(1, idx).double() - pred.double()
            sse += (r * r * _include(x, excluded)).sum(0)
        n = self.n_rows[idx]
        return torch.where(n > 0, sse / n.clamp(min=1), torch.nan)


# Below this many targets, CPU BLAS runs Z·W and Zᵀ·P (Z of shape (M, F), tall) on a slow path: 4 to 8 targets
# cost as much as 128 (M = 4,500, F = 1,297, one thread: Zᵀ·P 41 ms at T = 4, 18 ms at T = 128). The same
# products as (Wᵀ·Zᵀ)ᵀ and (Pᵀ·Z)ᵀ take 3.5 and 3.7 ms there; above it they lose (47 against 34 ms at T = 256).
THIN_TARGETS = 32


def _mm(z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """z (M, F) @ w (F, T), as (wᵀ zᵀ)ᵀ for thin w (THIN_TARGETS); the result may be a transposed view."""
    return torch.mm(w.T, z.T).T if w.shape[1] < THIN_TARGETS and w.device.type == "cpu" else z @ w


def _add_mm_t(out: torch.Tensor, z: torch.Tensor, p: torch.Tensor) -> None:
    """out (F, T) += zᵀ (F, M) @ p (M, T), as (pᵀ z)ᵀ for thin p (THIN_TARGETS)."""
    if p.shape[1] < THIN_TARGETS and p.device.type == "cpu":
        out.add_(torch.mm(p.T.contiguous(), z).T)
    else:
        out.addmm_(z.T, p)


def _canonical(a: torch.Tensor) -> torch.Tensor:
    """a with row-major strides (K, 1), copied if needed: torch._int_mm on CPU misreads a (1, K) matrix whose
    strides are (1, 1), which `contiguous()` leaves as it is (measured: garbage sums)."""
    return a if a.stride() == (a.shape[1], 1) else torch.empty(a.shape, dtype=a.dtype, device=a.device).copy_(a)


def fixed_mm(a: torch.Tensor, v: torch.Tensor, limbs: int) -> torch.Tensor:
    """a (R, K) int8 @ v (K, T) float: (R, T) float32 by one int8 GEMM (torch._int_mm, exact int32 sums; 4×
    a float32 GEMM here) over a fixed-point copy of v with `limbs` int8 digits a column: v ≈ scale·Σ_k 256^k·d_k
    with scale = max|v_t|/(127·256^(limbs−1)), each value off by at most scale/2 (3 limbs: 2⁻²⁴·max|v_t|, a
    float32's rounding). The digit columns are padded to a multiple of 8, where the GEMM runs fastest; the
    digits are split off in float32, exact on integers below 2²⁴, in place where it can (fresh large tensors
    cost page faults here). `a` may be the transposed view of a row-major (K, R) matrix: the product is then
    taken as (dᵀ aᵀ)ᵀ, so a working set's rows of Xᵀ serve both products and X's columns are never gathered
    (that gather cost 100 ms at 1,980 × 18,000 of 50,000 columns, a product 14 to 18)."""
    K, T = v.shape
    transposed = a.stride() != (K, 1) and a.T.stride() == (a.shape[0], 1)
    scale = torch.maximum(v.amax(0), v.amin(0).neg_()).div_(127 * 256 ** (limbs - 1))
    scale = torch.where(scale > 0, scale, torch.ones_like(scale)).to(torch.float32)
    n = limbs * T
    b = torch.empty(K, n + (-n % 8), dtype=torch.int8, device=v.device)
    b[:, n:] = 0
    q = (v / scale).round_()
    for k in range(limbs - 1):  # the lowest digit d in [-128, 127], then q = (q - d) / 256
        high = q.add(128).div_(256).floor_()
        b[:, k * T:(k + 1) * T] = q.add_(high, alpha=-256)
        q = high
    b[:, (limbs - 1) * T:n] = q
    # |sums of a digit| ≤ 128·K
    sums = torch._int_mm(b.T.contiguous(), a.T).T if transposed else torch._int_mm(_canonical(a), b)
    digit = [sums[:, k * T:(k + 1) * T] for k in range(limbs)]
    if limbs > 1 and K < 1 << 16:  # the top two digits' sums in int32 (≤ 2¹⁵·K + 2⁷·K < 2³¹), then Horner
        out = digit[-2].add_(digit[-1], alpha=256).to(torch.float32)
        for k in range(limbs - 3, -1, -1):
            out.mul_(256).add_(digit[k])
        return out.mul_(scale)
    out = digit[-1].to(torch.float32)
    for k in range(limbs - 2, -1, -1):
        out.mul_(256).add_(digit[k])
    return out.mul_(scale)


def centred_product(x8, xt8_out, mean, mean_out, w, limbs: int, include=None) -> torch.Tensor:
    """Z_outᵀ(s ⊙ Z w), (F_out, T), from raw 0/1 rows by int8 GEMMs, Z = X − 1·meanᵀ: Z w = X w − meanᵀw and
    Z_outᵀp = X_outᵀp − mean_out·(1ᵀp), each X product exact on `limbs` digits of its float factor (`fixed_mm`).

    x8 : (M, F) int8 rows X; xt8_out : (F_out, M) int8, X_outᵀ; mean (F,), mean_out (F_out,); w (F, T);
    include : (M, T) float row sets s, or None for every row.
    """
    p = fixed_mm(x8, w, limbs).sub_(mean @ w)
    if include is not None:
        p.mul_(include)
    return fixed_mm(xt8_out, p, limbs).sub_(torch.outer(mean_out, p.sum(0)))


def _put(dst: torch.Tensor, columns: torch.Tensor, src: torch.Tensor, src_columns: torch.Tensor | None = None) -> None:
    """dst[:, columns] = src[:, src_columns or columns], in place; index_select/index_copy_ run ~25x faster
    on CPU than advanced indexing for the few columns a solver step touches."""
    dst.index_copy_(1, columns, src.index_select(1, columns if src_columns is None else src_columns))


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Column-wise dot products of (F, T) tensors, (T,)."""
    return torch.linalg.vecdot(a, b, dim=0)


def _duality_gap(w, hw, q, c0, lam):
    """sklearn's Lasso duality gap (divided by M_t), from H·w alone; dual point = rescaled residual."""
    qw = _dot(q, w)
    f = 0.5 * _dot(hw, w) - qw + c0
    grad_inf = (hw - q).abs_().amax(0)
    s = torch.where(grad_inf > lam, lam / grad_inf.clamp(min=1e-30), torch.ones_like(lam))
    return f * (1 + s * s) + lam * torch.linalg.vector_norm(w, 1, dim=0) - s * (2 * c0 - qw)


@dataclass
class SolveStats:
    n_iter: torch.Tensor  # (T,) prox steps taken, rejected ones included
    gap: torch.Tensor  # (T,) duality gap (objective units) at the returned point
    lipschitz: torch.Tensor  # (T,) curvature bound used for the last step
    hw: torch.Tensor  # (F, T) H·w at the returned w, to warm-start the next solve


def fista(design, q, c0, lam, w0, lipschitz, idx, *, tol: float, max_iter: int, hw0=None, limbs: int = STEP_LIMBS):
    """Solve every target of `idx` at its own λ by FISTA with adaptive restart and adaptive steps.

    q : (F, T) and c0 : (T,) for the targets `idx`; lam, lipschitz : (T,); w0 : (F, T) warm start,
    hw0 = H·w0 if known; max_iter an int or (T,). The step 1/L tracks the curvature actually met: f is quadratic, so a step
    from v to w is valid exactly when (w−v)ᵀH(w−v) ≤ L‖w−v‖², which costs nothing to check since
    H·w is computed anyway. After a valid step L drops towards the curvature just met (at most
    halving), after an invalid one the step is redone from v with L above it; on random-subset masks
    this takes ~45 % fewer products than a fixed L = λ_max(H), whose top direction the sparse
    iterates rarely meet.
    Stops a target when its duality gap ≤ tol·‖y_c‖²/M_t (scikit-learn's criterion) or at max_iter.
    Returns (w of shape (F, T), SolveStats).
    """
    T = w0.shape[1]
    dev, dt = w0.device, w0.dtype
    w_out, hw_out = w0.clone(), torch.empty_like(w0)
    n_iter = torch.zeros(T, dtype=torch.long, device=dev)
    gap_out = torch.zeros(T, dtype=dt, device=dev)
    lip_out = lipschitz.clone()
    # State of the targets still in the batch: the accepted iterate w and the one before, the point v
    # of the pending step and its result cand. Finished targets are dropped once they are a quarter
    # of the batch (each drop copies the state, so not at every finish).
    live = torch.arange(T, device=dev)
    finished = torch.zeros(T, dtype=torch.bool, device=dev)
    w, lip, q_l, c0_l, lam_l, tgt, thresh = w0.clone(), lipschitz.clone(), q, c0, lam, idx, tol * 2 * c0
    hw = design.apply(w, tgt) if hw0 is None else hw0.clone()
    w_prev, hw_prev, v, hv = w.clone(), hw.clone(), w, hw
    cand = hcand = None
    momentum = torch.ones(T, dtype=dt, device=dev)
    steps = torch.zeros(T, dtype=torch.long, device=dev)
    accept = torch.ones(T, dtype=torch.bool, device=dev)
    lip_floor = 1e-6 * float(lipschitz.max()) if T else 0.0
    limit = torch.as_tensor(max_iter, device=dev).expand(T)
    while True:
        if cand is not None:
            d = cand - v
            curv = (_dot(d, hcand) - _dot(d, hv)) / _dot(d, d).clamp(min=torch.finfo(dt).tiny)
            accept = curv <= lip * (1 + 1e-4)
            # Restart momentum where it points uphill (O'Donoghue & Candès 2015): (v−cand)·(cand−w) > 0.
            uphill = _dot(d, cand) < _dot(d, w)
            rejected = (~accept).nonzero().squeeze(1)
            old_w_prev, old_hw_prev = w_prev, hw_prev
            w_prev, hw_prev, w, hw = w, hw, cand, hcand
            if len(rejected):  # these keep their iterates and retry from the same v
                _put(w, rejected, w_prev)
                _put(hw, rejected, hw_prev)
                _put(w_prev, rejected, old_w_prev)
                _put(hw_prev, rejected, old_hw_prev)
            momentum = torch.where(accept & uphill, torch.ones_like(momentum), momentum)
            lip = torch.where(accept, torch.maximum(0.5 * lip, 1.2 * curv), torch.maximum(lip, 1.3 * curv))
            lip = lip.clamp(min=lip_floor)  # steps along H's null space (the all-ones direction) meet no curvature
        gap = _duality_gap(w, hw, q_l, c0_l, lam_l)
        done = ~finished & ((accept & (gap <= thresh)) | (steps >= limit))
        if done.any():
            d_idx = live[done]
            d_pos = done.nonzero().squeeze(1)
            _put(w_out, d_idx, w, d_pos)
            _put(hw_out, d_idx, hw, d_pos)
            gap_out[d_idx] = gap[done]
            lip_out[d_idx], n_iter[d_idx] = lip[done], steps[done]
            finished |= done
            if finished.all():
                break
            if finished.sum() * 4 >= len(live):
                keep = ~finished
                live, finished = live[keep], finished[keep]
                kept = keep.nonzero().squeeze(1)
                w, hw, w_prev, hw_prev, v, hv, q_l = (a.index_select(1, kept) for a in (w, hw, w_prev, hw_prev, v, hv, q_l))
                lip, momentum, steps, accept, lam_l, c0_l, tgt, thresh, limit = (
                    a[keep] for a in (lip, momentum, steps, accept, lam_l, c0_l, tgt, thresh, limit))
        nxt = (1 + torch.sqrt(1 + 4 * momentum * momentum)) / 2
        beta = (momentum - 1) / nxt
        momentum = torch.where(accept, nxt, momentum)
        old_v, old_hv = v, hv
        v, hv = (w - w_prev).mul_(beta).add_(w), (hw - hw_prev).mul_(beta).add_(hw)
        rejected = (~accept).nonzero().squeeze(1)
        if len(rejected):
            _put(v, rejected, old_v)
            _put(hv, rejected, old_hv)
        # Proximal step: soft-threshold u = v − ∇f(v)/L at λ/L (u minus its clamp into [−λ/L, λ/L]).
        u = torch.addcdiv(v, hv - q_l, lip, value=-1)
        shrink = lam_l / lip
        cand = u.sub_(u.clamp(-shrink, shrink))
        hcand = design.step(cand, v, hv, tgt, limbs)
        steps += 1
    return w_out, SolveStats(n_iter, gap_out, lip_out, hw_out)


def solve_working_set(design, q, c0, lam, w0, lipschitz, idx, cols, *, tol: float, max_iter: int, hw0=None):
    """Solve every target of `idx` at its own λ on a working set of features grown until KKT holds on all.

    q, w0 : (F, T); c0, lam, lipschitz : (T,); cols : (S,) the first working set, one for the whole batch
    (the union of the targets' sets: one GEMM shape). A round solves the problem restricted to the set
    (features outside it held at 0) by `fista`, then one product over all features gives every target's
    gradient Hw − q: a target is done when its duality gap over all features is within tol (scikit-learn's
    criterion; features outside the set with |gradient| ≤ λ add nothing to it); the others' violators
    (|gradient_j| > λ_t outside the set) join the set and those targets are solved again from where they were.
    hw0 : H·w0 (F, T) if known, used when w0 is 0 outside the set (then H_SS·w0_S is its restriction).
    Returns (w (F, T), SolveStats whose hw is H·w over all features).
    """
    F, T = q.shape
    w_cur, hw_out = w0.clone(), torch.empty_like(w0)
    n_iter = torch.zeros(T, dtype=torch.long, device=q.device)
    gap_out = torch.zeros(T, dtype=q.dtype, device=q.device)
    lip_out = lipschitz.clone()
    todo = torch.arange(T, device=q.device)
    # A set above WORKING_SET_MAX·F saves less than the KKT check costs: solve on all features instead.
    everything = torch.arange(F, device=q.device)
    cols = everything if len(cols) > WORKING_SET_MAX * F else cols
    if hw0 is not None and len(cols) < F:
        hw0 = None if w0.index_fill(0, cols, 0).any() else hw0.index_select(0, cols)
    limbs = STEP_LIMBS
    while True:
        q_t, lam_t, c0_t = q.index_select(1, todo), lam[todo], c0[todo]
        whole = len(cols) == F
        sub = design if whole else design.on(cols)
        w_s, stats = fista(sub, q_t.index_select(0, cols), c0_t, lam_t,
                           w_cur.index_select(1, todo).index_select(0, cols), lip_out[todo], idx[todo], tol=tol,
                           max_iter=max_iter - n_iter[todo], hw0=hw0, limbs=limbs)
        n_iter[todo] += stats.n_iter
        lip_out[todo] = stats.lipschitz
        w_t = w_s if whole else torch.zeros_like(q_t).index_copy_(0, cols, w_s)
        # The KKT check, the gradient on all features, by an exact product; also on all features when FISTA's
        # fixed-point steps carried H·w along.
        checked = not whole or design.fixed_point
        hw_t = sub.kkt(w_s, idx[todo]) if checked else stats.hw
        gap = _duality_gap(w_t, hw_t, q_t, c0_t, lam_t) if checked else stats.gap
        violated = ((hw_t - q_t).abs_() > lam_t).index_fill_(0, cols, False)
        grows = violated.any(0)
        # Again where the gap is open: with new features, or where FISTA stopped on a gap that the exact product
        # does not confirm (it moved this round, so it moves again from the exact H·w).
        again = (gap > tol * 2 * c0_t) & (grows | (stats.n_iter > 0)) & (n_iter[todo] < max_iter)
        w_cur.index_copy_(1, todo, w_t)
        hw_out.index_copy_(1, todo, hw_t)
        gap_out[todo] = gap
        if not again.any():
            break
        if (again & ~grows).any():  # FISTA's fixed-point steps left too much rounding: go exact
            limbs = EXACT_LIMBS
        todo, keep = todo[again], again.nonzero().squeeze(1)
        cols = torch.cat([cols, violated.index_select(1, keep).any(1).nonzero().squeeze(1)]).sort().values
        cols = everything if len(cols) > WORKING_SET_MAX * F else cols
        hw0 = hw_t.index_select(1, keep).index_select(0, cols)  # w is 0 on the new features: H_SS·w_S is exact
    return w_cur, SolveStats(n_iter, gap_out, lip_out, hw_out)


@dataclass
class LassoPath:
    """A regularisation path per target and, with validation, the best point on it.

    lambdas : ndarray (T, K); n_iter : ndarray (T, K), -1 where the step was not run (early stop);
    scores : ndarray (T, K) validation MSE, NaN where not computed; best : ndarray (T,) step index;
    weights : Tensor (F, T) and intercept : Tensor (T,) at `best`;
    coefs : ndarray (K, F, T) and intercepts : ndarray (K, T) when kept (NaN past an early stop).
    """

    lambdas: np.ndarray
    n_iter: np.ndarray
    scores: np.ndarray
    best: np.ndarray
    weights: torch.Tensor
    intercept: torch.Tensor
    coefs: np.ndarray | None = None
    intercepts: np.ndarray | None = None


def improves(score: torch.Tensor, best: torch.Tensor) -> torch.Tensor:
    """Whether each score (T,) beats the best before it (T,), for a path running from large λ to small.

    The tie rule: a score must fall below best·(1 − SCORE_RTOL), so scores that differ by float
    summation order (thread count, block size, engine) or solver tolerance choose the same step, the
    larger λ (sparser) winning ties; early stopping counts steps by the same rule. NaN never improves.
    """
    return torch.where(torch.isinf(best), score < best, score < best * (1 - SCORE_RTOL))


def lambda_grid(lam_max: torch.Tensor, n_lambdas: int, eps: float) -> torch.Tensor:
    """(T, K) log-spaced from each λ_max down to λ_max·eps, like scikit-learn's `lasso_path`."""
    if n_lambdas == 1:
        return lam_max[:, None].clone()
    steps = torch.arange(n_lambdas, dtype=torch.float64, device=lam_max.device) / (n_lambdas - 1)
    return (lam_max.double()[:, None] * eps ** steps[None, :]).to(lam_max.dtype)


def strong_set(grad: torch.Tensor, w: torch.Tensor, lam: torch.Tensor, lam_before: torch.Tensor) -> torch.Tensor:
    """Sorted features (S,) of the first working set at λ for a batch, from its solution w (F, T) at
    lam_before (T,) and the gradient Hw − q there (F, T): the nonzeros and the sequential strong rule's
    survivors |grad_j| ≥ 2λ − λ_before (Tibshirani et al. 2012), united over the batch; at least one."""
    keep = ((grad.abs() >= 2 * lam - lam_before) | (w != 0)).any(1)
    if not keep.any():
        keep[grad.abs().amax(1).argmax()] = True
    return keep.nonzero().squeeze(1)


def lasso_path(block: TargetBlock, *, n_lambdas: int = 50, eps: float = 1e-3, tol: float = 1e-4,
               max_iter: int = 1000, score: Callable | None = None, patience: int | None = None,
               keep_path: bool = False, progress: Progress | None = None,
               group: int = GROUP_TARGETS, working_sets: bool = True) -> LassoPath:
    """The LASSO path of every target of `block`, `group` targets batched at a time, warm-started along λ.

    score(w (F, T_a), b (T_a,), idx (T_a,)) -> (T_a,) validation error, lower is better; the path
    keeps the best point per target under the tie rule of `improves`. With `patience`, a target's path
    stops once its score has not improved (by that rule) for that many steps, as the datamodels solver
    does (fast_l1 stops at the first rise). progress counts target-steps ("λ step", T · n_lambdas in all,
    skipped ones included; backend.progress). working_sets=False solves every step on all features (the
    solver before working sets, kept for benchmarks/bench_scale.py's before-and-after), through
    `solve_working_set` on every feature, so fixed-point steps still end on an exact product.
    """
    design, q, c0 = block.quadratic()
    F, T = q.shape
    dev, dt = q.device, q.dtype
    lams = lambda_grid(block.lambda_max(), n_lambdas, eps)
    lams_np = lams.double().cpu().numpy()
    n_iter = np.full((T, n_lambdas), -1, dtype=np.int64)
    scores = np.full((T, n_lambdas), np.nan)
    best = np.zeros(T, dtype=np.int64)
    best_w = torch.zeros(F, T, dtype=dt, device=dev)
    coefs = np.full((n_lambdas, F, T), np.nan, dtype=np.float64) if keep_path else None
    intercepts = np.full((n_lambdas, T), np.nan, dtype=np.float64) if keep_path else None
    best_score = torch.full((T,), math.inf, dtype=torch.float64, device=dev)
    stale = torch.zeros(T, dtype=torch.long, device=dev)
    steps_done, steps_total = 0, T * n_lambdas
    if progress:
        progress(steps_done, steps_total, "λ step")
    for lo in range(0, T, group):
        # State of the group's targets whose path is still running, compacted when some stop: the solution
        # w at the last λ, H·w (so a step starts without a product) and both one step back.
        active = torch.arange(lo, min(lo + group, T), device=dev)
        w = torch.zeros(F, len(active), dtype=dt, device=dev)
        hw, w_before, hw_before = torch.zeros_like(w), torch.zeros_like(w), torch.zeros_like(w)
        lip, q_a, c0_a = design.lipschitz(active), q.index_select(1, active), c0[active]
        for k in range(n_lambdas):
            if not len(active):
                break
            act_np = active.cpu().numpy()
            # At λ_max the answer is w = 0 (KKT), so step 0 needs no iterations.
            if k == 0:
                n_iter[act_np, 0] = 0
            else:
                # Between kinks the path is linear in λ: extrapolating the last two solutions to λ_k starts
                # each solve close to its answer (~35 % fewer products), and H·w extrapolates alike, free.
                ahead = torch.zeros(len(active), dtype=dt, device=dev)
                if k >= 2:
                    num, den = lams[active, k] - lams[active, k - 1], lams[active, k - 1] - lams[active, k - 2]
                    ahead = torch.where(den != 0, num / torch.where(den != 0, den, 1), 0)
                w0, hw0 = w + ahead * (w - w_before), hw + ahead * (hw - hw_before)
                w_before, hw_before = w, hw
                cols = (strong_set(hw - q_a, w, lams[active, k], lams[active, k - 1]) if working_sets
                        else torch.arange(F, device=dev))
                w, stats = solve_working_set(design, q_a, c0_a, lams[active, k], w0, lip, active, cols, tol=tol,
                                             max_iter=max_iter, hw0=hw0)
                lip, hw = stats.lipschitz, stats.hw
                n_iter[act_np, k] = stats.n_iter.cpu().numpy()
            b = block.intercept(w, active)
            if keep_path:
                coefs[k][:, act_np] = w.double().cpu().numpy()
                intercepts[k, act_np] = b.double().cpu().numpy()
            if score is None:
                best[act_np] = k
            else:
                s = score(w, b, active).double()
                scores[act_np, k] = s.cpu().numpy()
                better = improves(s, best_score[active])
                improved = active[better]
                best_score[improved] = s[better]
                _put(best_w, improved, w, better.nonzero().squeeze(1))
                best[improved.cpu().numpy()] = k
                stale[active] = torch.where(better, 0, stale[active] + 1)
            steps_done += len(active)
            if k == n_lambdas - 1:
                stop = torch.ones(len(active), dtype=torch.bool, device=dev)
            elif patience is not None and score is not None:
                stop = stale[active] >= patience
                steps_done += int(stop.sum()) * (n_lambdas - 1 - k)
            else:
                stop = torch.zeros(len(active), dtype=torch.bool, device=dev)
            if progress:
                progress(steps_done, steps_total, "λ step")
            if stop.any():
                if score is None:
                    _put(best_w, active[stop], w, stop.nonzero().squeeze(1))
                keep = ~stop
                active, lip, c0_a = active[keep], lip[keep], c0_a[keep]
                kept = keep.nonzero().squeeze(1)
                w, hw, w_before, hw_before, q_a = (a.index_select(1, kept) for a in (w, hw, w_before, hw_before, q_a))
    idx_all = torch.arange(T, device=dev)
    return LassoPath(lams_np, n_iter, scores, best, best_w, block.intercept(best_w, idx_all), coefs, intercepts)


def lasso_solve(block: TargetBlock, lam: torch.Tensor, w0: torch.Tensor | None = None, *,
                tol: float = 1e-4, max_iter: int = 1000, working_sets: bool = True):
    """Solve every target of `block` at its own λ (T,), warm-started from w0 (F, T), on working sets
    (`solve_working_set`) that start from w0's support and the features violating KKT at w0
    (working_sets=False: on all features, as `lasso_path`'s flag).

    Returns (weights (F, T), intercept (T,), SolveStats).
    """
    design, q, c0 = block.quadratic()
    F, T = q.shape
    idx = torch.arange(T, device=q.device)
    w0 = torch.zeros(F, T, dtype=q.dtype, device=q.device) if w0 is None else w0.to(q.device, q.dtype)
    lam = lam.to(q.device, q.dtype)
    hw0 = design.apply(w0, idx)
    cols = strong_set(hw0 - q, w0, lam, lam) if working_sets else torch.arange(F, device=q.device)
    w, stats = solve_working_set(design, q, c0, lam, w0, design.lipschitz(idx), idx, cols, tol=tol, max_iter=max_iter,
                                 hw0=hw0)
    return w, block.intercept(w, idx), stats
