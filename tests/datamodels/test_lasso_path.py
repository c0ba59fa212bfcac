"""The batched LASSO solver against scikit-learn's Lasso on the same rows, λ by λ."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import backend.datamodels.lasso as lasso
from backend.datamodels.lasso import SCORE_RTOL, MaskRows, TargetBlock, lasso_path, lasso_solve
from tests.oracles import objective, random_problem, rows_of, sklearn_lasso, tie_rule_best

N_TRAIN = 24
COLUMNS = np.array([0, 5, 11, N_TRAIN, N_TRAIN + 2])  # three training targets (eq. 9), two test targets


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-6)])
def test_objective_matches_sklearn_at_every_lambda(problem, dtype, tol):
    masks, margins = problem
    block = TargetBlock(MaskRows(masks, np.arange(len(masks)), dtype=dtype), margins, COLUMNS, N_TRAIN)
    path = lasso_path(block, n_lambdas=8, eps=1e-2, tol=tol, keep_path=True)
    worst = 0.0
    for j, c in enumerate(COLUMNS):
        inc = rows_of(masks, c, N_TRAIN)
        x, y = masks[inc].astype(np.float64), margins[inc, c].astype(np.float64)
        for k, lam in enumerate(path.lambdas[j]):
            w, b = path.coefs[k][:, j], path.intercepts[k, j]
            sk = sklearn_lasso(x, y, lam)
            ours, ref = objective(x, y, w, b, lam), objective(x, y, sk.coef_, sk.intercept_, lam)
            worst = max(worst, abs(ours - ref) / ref)
            if c < N_TRAIN:
                assert w[c] == 0  # eq. 9: no model in its rows saw the target
    assert worst <= 1e-4
    assert (path.n_iter[:, 1:] > 0).all() and (path.n_iter[:, 0] == 0).all()


def test_lambda_max_is_the_smallest_lambda_with_zero_weights(problem):
    masks, margins = problem
    block = TargetBlock(MaskRows(masks, np.arange(len(masks)), dtype=torch.float64), margins, COLUMNS, N_TRAIN)
    lam_max = block.lambda_max()
    for j, c in enumerate(COLUMNS):
        inc = rows_of(masks, c, N_TRAIN)
        x, y = masks[inc].astype(np.float64), margins[inc, c].astype(np.float64)
        expected = np.abs((x - x.mean(0)).T @ (y - y.mean())).max() / len(y)
        assert lam_max[j].item() == pytest.approx(expected, rel=1e-10)
        assert not sklearn_lasso(x, y, 1.0001 * expected).coef_.any()
        assert sklearn_lasso(x, y, 0.99 * expected).coef_.any()
    at_max, _, _ = lasso_solve(block, lam_max, tol=1e-10)
    assert not at_max.any()
    below, _, stats = lasso_solve(block, 0.99 * lam_max, tol=1e-10)
    assert (below != 0).any(dim=0).all()
    _, _, c0 = block.quadratic()
    assert (stats.gap <= 1e-10 * 2 * c0).all() and (stats.n_iter < 1000).all()  # stopped by the gap


def predictions(masks, path):
    """Fitted margins (K, M, T) along a path: unique, unlike the weights (masks of one size make the
    centred design singular along the all-ones direction, so dense solutions can tie)."""
    return np.einsum("mf,kft->kmt", masks.astype(np.float64), path.coefs) + path.intercepts[:, None, :]


def test_blocks_and_streamed_chunks_give_the_one_block_answer(problem):
    masks, margins = problem
    rows = MaskRows(masks, np.arange(len(masks)), dtype=torch.float64)
    whole = lasso_path(TargetBlock(rows, margins, COLUMNS, N_TRAIN), n_lambdas=6, tol=1e-12, keep_path=True)
    # Blocks of two targets each, on rows re-read in chunks of 40 models instead of held resident.
    streamed = MaskRows(masks, np.arange(len(masks)), dtype=torch.float64, resident_bytes=0,
                        chunk_bytes=40 * N_TRAIN * 8)
    assert not streamed.resident and len(streamed.spans()) > 1
    for lo in range(0, len(COLUMNS), 2):
        part = lasso_path(TargetBlock(streamed, margins, COLUMNS[lo:lo + 2], N_TRAIN), n_lambdas=6,
                          tol=1e-12, keep_path=True)
        np.testing.assert_allclose(part.lambdas, whole.lambdas[lo:lo + 2], rtol=1e-12)
        np.testing.assert_allclose(predictions(masks, part), predictions(masks, whole)[:, :, lo:lo + 2], atol=1e-6)
        l1 = np.abs(part.coefs).sum(axis=1)
        np.testing.assert_allclose(l1, np.abs(whole.coefs[:, :, lo:lo + 2]).sum(axis=1), rtol=1e-6)


def test_validation_score_picks_the_argmin_and_patience_stops_paths(problem):
    masks, margins = problem
    fit, val = np.arange(0, 120), np.arange(120, 160)
    block = TargetBlock(MaskRows(masks, fit, dtype=torch.float64), margins, COLUMNS, N_TRAIN)
    val_block = TargetBlock(MaskRows(masks, val, dtype=torch.float64), margins, COLUMNS, N_TRAIN)
    full = lasso_path(block, n_lambdas=20, tol=1e-10, score=val_block.mse, keep_path=True)
    np.testing.assert_array_equal(full.best, [tie_rule_best(s, SCORE_RTOL) for s in full.scores])
    for j in range(len(COLUMNS)):
        np.testing.assert_allclose(full.weights[:, j].numpy(), full.coefs[full.best[j]][:, j], atol=1e-12)
    calls = []
    early = lasso_path(block, n_lambdas=20, tol=1e-10, score=val_block.mse, patience=2,
                       progress=lambda *call: calls.append(call))
    ran = early.n_iter >= 0
    # progress counts every target-step, the ones a stopped path skips included: 0 first, T · n_lambdas last.
    done = [d for d, _, _ in calls]
    assert done[0] == 0 and done == sorted(done) and done[-1] == len(COLUMNS) * 20 > ran.sum()
    assert {(t, u) for _, t, u in calls} == {(len(COLUMNS) * 20, "λ step")}
    for j in range(len(COLUMNS)):
        last = ran[j].nonzero()[0].max()
        assert last == min(early.best[j] + 2, 19)  # stops two steps after the last improvement
        assert early.best[j] == tie_rule_best(full.scores[j, :last + 1], SCORE_RTOL)


def test_near_ties_go_to_the_larger_lambda_and_do_not_reset_patience(problem):
    """Scores that differ by float summation order pick the same step: the larger λ; fails on a plain argmin."""
    masks, margins = problem
    block = TargetBlock(MaskRows(masks, np.arange(len(masks))), margins, COLUMNS[:1], N_TRAIN)
    steps = iter([1.0, 0.5, 0.5 * (1 - SCORE_RTOL / 10), 0.6, 0.7, 0.8, 0.9, 1.0])

    def score(w, b, idx):
        return torch.full((len(idx),), next(steps), dtype=torch.float64)
    path = lasso_path(block, n_lambdas=8, score=score, patience=3)
    assert path.best[0] == 1
    assert (path.n_iter[0] >= 0).sum() == 5  # steps 2, 3, 4 did not improve: stop after step 4


def test_working_sets_match_sklearn_at_every_lambda(monkeypatch):
    """Sparse paths on 90 features, so the strong rules leave most features out and KKT checks add some back."""
    n_train = 90
    masks, margins = random_problem(n_models=140, n_train=n_train, n_test=3, seed=2)
    columns = np.array([3, 40, n_train, n_train + 2])
    sizes = []

    def spy(*args, **kwargs):  # args[7]: the first working set
        sizes.append(len(args[7]))
        return solve(*args, **kwargs)
    solve = lasso.solve_working_set
    monkeypatch.setattr(lasso, "solve_working_set", spy)
    for group in (1, len(columns)):
        block = TargetBlock(MaskRows(masks, np.arange(len(masks))), margins, columns, n_train)
        path = lasso_path(block, n_lambdas=12, eps=1e-2, tol=1e-7, keep_path=True, group=group)
        worst = 0.0
        for j, c in enumerate(columns):
            inc = rows_of(masks, c, n_train)
            x, y = masks[inc].astype(np.float64), margins[inc, c].astype(np.float64)
            for k, lam in enumerate(path.lambdas[j]):
                sk = sklearn_lasso(x, y, lam)
                ref = objective(x, y, sk.coef_, sk.intercept_, lam)
                worst = max(worst, (objective(x, y, path.coefs[k][:, j], path.intercepts[k, j], lam) - ref) / ref)
        assert worst <= 1e-4
    assert min(sizes) < n_train // 4  # the working sets were used


def test_constant_target_gets_zero_weights(problem):
    masks, margins = problem
    margins = margins.copy()
    margins[:, N_TRAIN] = 3.5
    block = TargetBlock(MaskRows(masks, np.arange(len(masks))), margins, np.array([N_TRAIN]), N_TRAIN)
    path = lasso_path(block, n_lambdas=5)
    assert not path.weights.any() and path.intercept.item() == pytest.approx(3.5)
    assert np.isfinite(path.lambdas).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu(problem):
    masks, margins = problem
    paths = [lasso_path(TargetBlock(MaskRows(masks, np.arange(len(masks)), device=d, dtype=torch.float64),
                                    margins, COLUMNS, N_TRAIN), n_lambdas=6, tol=1e-12, keep_path=True)
             for d in ("cpu", "cuda")]
    np.testing.assert_allclose(predictions(masks, paths[0]), predictions(masks, paths[1]), atol=1e-6)


@pytest.mark.parametrize("targets", [1, 4, lasso.THIN_TARGETS - 1, lasso.THIN_TARGETS, 40])
def test_thin_products_equal_numpy(targets):
    """The transposed forms used below THIN_TARGETS give Z·W and Zᵀ·P, whatever the number of targets."""
    rng = np.random.default_rng(targets)
    z, w, p = rng.normal(size=(60, 30)), rng.normal(size=(30, targets)), rng.normal(size=(60, targets))
    out = torch.ones(30, targets, dtype=torch.float64)
    lasso._add_mm_t(out, torch.from_numpy(z), torch.from_numpy(p))
    np.testing.assert_allclose(lasso._mm(torch.from_numpy(z), torch.from_numpy(w)).numpy(), z @ w, rtol=1e-12)
    np.testing.assert_allclose(out.numpy(), 1 + z.T @ p, rtol=1e-12)


@pytest.mark.parametrize("limbs", [1, 2, lasso.EXACT_LIMBS])
@pytest.mark.parametrize("rows, k", [(70, 300), (3, 70_000)])  # sums combined in int32 below K = 2**16, else float
@pytest.mark.parametrize("transposed", [False, True])  # a as the transposed view of a row-major matrix
def test_fixed_mm_is_within_half_a_step_of_each_value(limbs, rows, k, transposed):
    """a @ v on 0/1 rows equals the float64 product up to the fixed-point rounding of v: at most half a step
    scale_t = max|v_t|/(127·256^(limbs−1)) per value, summed over a row's ones (plus float32's last bits)."""
    rng = np.random.default_rng(limbs)
    a = rng.random((rows, k)) < 0.5
    v = rng.normal(size=(k, 13)) * np.logspace(-6, 3, 13)  # columns of very different sizes
    v[:, 4] = 0.0
    v[7, 9] = -1e4  # one large value sets its column's step
    a8 = torch.from_numpy(a.view(np.int8))
    a8 = a8.T.contiguous().T if transposed else a8
    out = lasso.fixed_mm(a8, torch.from_numpy(v.astype(np.float32)), limbs).numpy()
    exact = a.astype(np.float64) @ v.astype(np.float32).astype(np.float64)
    step = np.abs(v.astype(np.float32)).max(0) / (127 * 256 ** (limbs - 1))
    bound = a.sum(1, keepdims=True) * step / 2 + 1e-6 * (a.astype(np.float64) @ np.abs(v))
    assert (np.abs(out - exact) <= bound).all()
    assert not out[:, 4].any()
    if limbs == 1:  # one digit is coarse: the bound is not vacuous
        assert np.abs(out - exact).max() > 1e-3 * bound.max()


def test_fixed_mm_reads_a_one_row_matrix_with_degenerate_strides():
    """torch._int_mm misreads a (1, K) int8 matrix with strides (1, 1), which contiguous() keeps as it is."""
    row = torch.from_numpy((np.random.default_rng(0).random((300, 1)) < 0.5).view(np.int8)).T
    assert row.stride() == (1, 1) and row.is_contiguous()
    v = torch.from_numpy(np.random.default_rng(1).normal(size=(300, 500)).astype(np.float32))
    np.testing.assert_allclose(lasso.fixed_mm(row, v, lasso.EXACT_LIMBS).numpy(),
                               row.double().numpy() @ v.double().numpy(), rtol=1e-5, atol=1e-4)


def test_fixed_point_products_equal_the_float64_ones(problem):
    """On resident float32 rows a CPU design multiplies by int8 GEMMs; H·w, its restriction to a working set,
    the KKT product over all features and a FISTA step from a nearby point all equal float64's float products."""
    masks, margins = problem
    designs = [TargetBlock(MaskRows(masks, np.arange(len(masks)), dtype=dt), margins, COLUMNS, N_TRAIN).quadratic()[0]
               for dt in (torch.float32, torch.float64)]
    fixed, exact = designs
    assert fixed.fixed_point and not exact.fixed_point
    rng = np.random.default_rng(3)
    w = rng.normal(size=(N_TRAIN, len(COLUMNS))) * (rng.random((N_TRAIN, len(COLUMNS))) < 0.5)
    idx = torch.arange(len(COLUMNS))
    w32, w64 = torch.from_numpy(w.astype(np.float32)), torch.from_numpy(w)
    ref = exact.apply(w64, idx).numpy()
    np.testing.assert_allclose(fixed.apply(w32, idx).numpy(), ref, rtol=1e-5, atol=1e-5)
    cols = torch.tensor([1, 4, 5, 9, 17])
    sub32, sub64 = fixed.on(cols), exact.on(cols)
    np.testing.assert_allclose(sub32.apply(w32[cols], idx).numpy(), sub64.apply(w64[cols], idx).numpy(), atol=1e-5)
    np.testing.assert_allclose(sub32.kkt(w32[cols], idx).numpy(), sub64.kkt(w64[cols], idx).numpy(), atol=1e-5)
    near = w64 + 1e-3 * torch.from_numpy(rng.normal(size=w.shape))
    step = fixed.step(near.float(), w32, torch.from_numpy(ref).float(), idx, lasso.STEP_LIMBS).numpy()
    np.testing.assert_allclose(step, exact.apply(near, idx).numpy(), atol=1e-5)


def test_fixed_point_rows_keep_no_float_copy_and_give_float64_s_block(problem):
    """Fixed-point rows hold the 0/1 rows and their int8 transpose only; a block's q, λ_max, validation MSE and
    the rows' curvature bound, all from int8 products, equal float64's."""
    masks, margins = problem
    rows32, rows64 = (MaskRows(masks, np.arange(len(masks)), dtype=dt) for dt in (torch.float32, torch.float64))
    assert rows32.fixed_point and all(z is None for _, _, z, _ in rows32)
    blocks = [TargetBlock(rows, margins, COLUMNS, N_TRAIN) for rows in (rows32, rows64)]
    np.testing.assert_allclose(blocks[0].quadratic()[1].numpy(), blocks[1].quadratic()[1].numpy(), atol=1e-6)
    np.testing.assert_allclose(blocks[0].lambda_max().numpy(), blocks[1].lambda_max().numpy(), rtol=1e-6)
    w = np.random.default_rng(4).normal(size=(N_TRAIN, len(COLUMNS))) * 0.1
    b = np.linspace(-1, 1, len(COLUMNS))
    idx = torch.arange(len(COLUMNS))
    mse32 = blocks[0].mse(torch.from_numpy(w).float(), torch.from_numpy(b).float(), idx).numpy()
    np.testing.assert_allclose(mse32, blocks[1].mse(torch.from_numpy(w), torch.from_numpy(b), idx).numpy(), rtol=1e-6)
    assert rows32.top_eigenvalue().item() == pytest.approx(rows64.top_eigenvalue().item(), rel=1e-5)


def test_fixed_point_steps_end_on_an_exact_duality_gap(problem, monkeypatch):
    """With one coarse digit a step, FISTA's own H·w drifts, so its stopping gap is not the true one: every
    answer is checked by an exact product and solved on until the exact gap is within tol."""
    monkeypatch.setattr(lasso, "STEP_LIMBS", 1)
    rounds = []

    def spy(*args, **kwargs):
        rounds.append(kwargs["limbs"])
        return fista(*args, **kwargs)
    fista = lasso.fista
    monkeypatch.setattr(lasso, "fista", spy)
    masks, margins = problem
    block = TargetBlock(MaskRows(masks, np.arange(len(masks))), margins, COLUMNS, N_TRAIN)
    design, q, c0 = block.quadratic()
    lam = 0.02 * block.lambda_max()
    w, _, stats = lasso_solve(block, lam, tol=1e-6, working_sets=False)
    assert rounds[0] == 1 and rounds[1:] and set(rounds[1:]) == {lasso.EXACT_LIMBS}  # reopened, then exact steps
    exact = TargetBlock(MaskRows(masks, np.arange(len(masks)), dtype=torch.float64), margins, COLUMNS, N_TRAIN)
    hw = exact.quadratic()[0].apply(w.double(), torch.arange(len(COLUMNS)))
    np.testing.assert_allclose(stats.hw.numpy(), hw.numpy(), atol=1e-5)
    gap = lasso._duality_gap(w.double(), hw, q.double(), c0.double(), lam.double())
    np.testing.assert_allclose(stats.gap.double().numpy(), gap.numpy(), atol=3e-7)  # float32 sums
    assert (gap <= 1e-6 * 2 * c0.double() + 3e-7).all() and (stats.n_iter < 1000).all()
