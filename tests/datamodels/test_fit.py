"""fit_datamodels against a brute-force scikit-learn run of the same procedure, and its edges."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from backend.datamodels.fit import DatamodelError, fit_datamodels, fit_summary, validation_split
from backend.datamodels.lasso import SCORE_RTOL
from tests.oracles import objective, random_problem, rows_of, sklearn_lasso, tie_rule_best

N_TRAIN, N_TEST = 16, 3
SETTINGS = dict(val_frac=0.2, n_lambdas=12, eps=1e-2, tol=1e-7, seed=3)


@pytest.fixture(scope="module")
def small():
    return random_problem(n_models=150, n_train=N_TRAIN, n_test=N_TEST, seed=1)


@pytest.fixture(scope="module")
def full_path_fit(small):
    masks, margins = small
    return fit_datamodels(masks, margins, N_TRAIN, patience=None, **SETTINGS)


def test_selection_and_refit_match_brute_force_sklearn(small, full_path_fit):
    masks, margins = small
    fit = full_path_fit
    fit_rows, val_rows = validation_split(len(masks), SETTINGS["val_frac"], SETTINGS["seed"])
    np.testing.assert_array_equal(fit.info["val_models"], val_rows)
    for j, c in enumerate(fit.targets):
        inc = rows_of(masks, c, N_TRAIN)
        f, v = fit_rows[inc[fit_rows]], val_rows[inc[val_rows]]
        x, y = masks[f].astype(np.float64), margins[f, c].astype(np.float64)
        lam_max = np.abs((x - x.mean(0)).T @ (y - y.mean())).max() / len(y)
        grid = lam_max * SETTINGS["eps"] ** (np.arange(12) / 11)
        val_mse = []
        for lam in grid:
            sk = sklearn_lasso(x, y, lam)
            pred = masks[v] @ sk.coef_ + sk.intercept_
            val_mse.append(np.mean((margins[v, c] - pred) ** 2))
        best = tie_rule_best(val_mse, SCORE_RTOL)
        assert fit.info["best_step"][j] == best, (c, val_mse)
        assert fit.lam[j] == pytest.approx(grid[best], rel=1e-5)
        # Refit on every model whose rows include the target, at the chosen λ.
        xa, ya = masks[inc].astype(np.float64), margins[inc, c].astype(np.float64)
        sk = sklearn_lasso(xa, ya, fit.lam[j])
        w, b = fit.weights[j].astype(np.float64), float(fit.bias[j])
        ref = objective(xa, ya, sk.coef_, sk.intercept_, fit.lam[j])
        assert objective(xa, ya, w, b, fit.lam[j]) <= ref * (1 + 1e-4)
        np.testing.assert_allclose(xa @ w + b, xa @ sk.coef_ + sk.intercept_, atol=2e-3)
        if c < N_TRAIN:
            assert w[c] == 0


def test_default_patience_keeps_the_full_path_choice(small, full_path_fit):
    masks, margins = small
    early = fit_datamodels(masks, margins, N_TRAIN, **SETTINGS)
    np.testing.assert_array_equal(early.info["best_step"], full_path_fit.info["best_step"])
    assert early.info["path_steps_run"].sum() < full_path_fit.info["path_steps_run"].sum()
    np.testing.assert_allclose(early.weights, full_path_fit.weights, atol=1e-4)


def test_blocks_memmaps_and_target_subsets_agree(small, full_path_fit, tmp_path):
    masks, margins = small
    np.save(tmp_path / "masks.npy", masks)
    np.save(tmp_path / "margins.npy", margins)
    mm_masks = np.load(tmp_path / "masks.npy", mmap_mode="r")
    mm_margins = np.load(tmp_path / "margins.npy", mmap_mode="r")
    targets = np.array([N_TRAIN + 1, 3, 0, N_TRAIN])
    part = fit_datamodels(mm_masks, mm_margins, N_TRAIN, patience=None, block_size=2, targets=targets, **SETTINGS)
    np.testing.assert_array_equal(part.targets, targets)
    assert part.info["n_blocks"] == 2
    np.testing.assert_allclose(part.lam, full_path_fit.lam[targets], rtol=1e-5)
    x = masks.astype(np.float64)
    np.testing.assert_allclose(x @ part.weights.T + part.bias,
                               x @ full_path_fit.weights[targets].T + full_path_fit.bias[targets], atol=1e-4)


@pytest.mark.parametrize("threads, block_size", [(1, 2), (2, 5), (2, None)])
def test_threads_and_blocks_choose_the_same_lambda_and_weights(small, threads, block_size):
    """One answer whatever the engine: thread count and block size change float summation order only."""
    masks, margins = small
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        ref = fit_datamodels(masks, margins, N_TRAIN, **{**SETTINGS, "tol": 1e-4})
        torch.set_num_threads(threads)
        other = fit_datamodels(masks, margins, N_TRAIN, block_size=block_size, **{**SETTINGS, "tol": 1e-4})
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(other.info["best_step"], ref.info["best_step"])
    np.testing.assert_allclose(other.lam, ref.lam, rtol=1e-6)  # λ_max to float32 rounding
    np.testing.assert_array_equal(other.info["path_steps_run"], ref.info["path_steps_run"])
    np.testing.assert_allclose(other.weights, ref.weights, atol=1e-2)


def test_progress_counts_every_target_step(small):
    masks, margins = small
    calls = []
    fit_datamodels(masks, margins, N_TRAIN, progress=lambda *call: calls.append(call), **SETTINGS)
    done = [d for d, _, _ in calls]
    total = (N_TRAIN + N_TEST) * (SETTINGS["n_lambdas"] + 1)
    assert done[0] == 0 and done == sorted(done) and done[-1] == total
    assert {(t, u) for _, t, u in calls} == {(total, "λ step")}


def test_target_without_validation_models_borrows_the_median_ratio(small):
    masks, margins = small
    masks = masks.copy()
    _, val_rows = validation_split(len(masks), SETTINGS["val_frac"], SETTINGS["seed"])
    masks[val_rows, 2] = True  # every validation model trained on train:2
    fit = fit_datamodels(masks, margins, N_TRAIN, **SETTINGS)
    assert fit.info["unvalidated_targets"] == [2]
    assert np.isfinite(fit.lam).all() and fit.lam[2] > 0 and fit.weights[2, 2] == 0


def test_fit_summary_records_settings_targets_and_iterations(small):
    masks, margins = small
    fit = fit_datamodels(masks, margins, N_TRAIN, targets=[N_TRAIN + 2, 1], **SETTINGS)
    meta = json.loads(json.dumps(fit_summary(fit.info, fit.targets, N_TRAIN, N_TEST)))
    assert meta["targets"] == [N_TRAIN + 2, 1] and meta["n_targets"] == 2 and meta["n_lambdas"] == SETTINGS["n_lambdas"]
    assert meta["val_models"] == fit.info["val_models"].tolist()
    assert meta["iterations"]["path_total"] == int(fit.info["path_iterations"].sum()) > 0
    assert meta["iterations"]["refit_max"] == int(fit.info["refit_iterations"].max())


def test_one_read_of_a_block_s_columns_gives_the_per_row_set_reads(small, full_path_fit):
    """The fit reads each block's margins once and splits the rows in memory; TargetBlock's own reads agree."""
    import torch

    from backend.datamodels.lasso import MaskRows, TargetBlock

    masks, margins = small
    fit_rows, _ = validation_split(len(masks), SETTINGS["val_frac"], SETTINGS["seed"])
    cols = np.array([1, 4, N_TRAIN + 1])
    rows = MaskRows(masks, fit_rows)
    read = TargetBlock(rows, margins, cols, N_TRAIN)
    given = TargetBlock(rows, None, cols, N_TRAIN, y=margins[:, cols][fit_rows])
    assert torch.equal(read.y, given.y) and torch.equal(read.y_mean, given.y_mean)
    gram, direct = (TargetBlock(rows, margins, cols[2:], N_TRAIN, gram=g) for g in (True, False))
    w = torch.randn(N_TRAIN, 1, generator=torch.Generator().manual_seed(0))
    idx = torch.arange(1)
    torch.testing.assert_close(gram.quadratic()[0].apply(w, idx), direct.quadratic()[0].apply(w, idx),
                               rtol=1e-5, atol=1e-6)


def _bad_inputs():
    masks, margins = random_problem(n_models=40, n_train=8, n_test=2)
    nan = margins.copy()
    nan[5, 9] = np.nan
    inf = margins.copy()
    inf[0, 1] = np.inf
    always = masks.copy()
    always[:, 3] = True
    return [
        ("too few", masks[:11], margins[:11], {}, "11 models are too few.*need at least 15"),
        ("nan", masks, nan, {}, r"margins\[5, 9\] is nan"),
        ("inf", masks, inf, {}, r"margins\[0, 1\] is inf"),
        ("rows", masks[:30], margins, {}, "one margins row per mask row"),
        ("columns", masks[:, :7], margins, {}, "one mask column per training example"),
        ("no test", masks, margins[:, :8], {}, "n_train \\+ n_test"),
        ("dtype", masks.astype(np.int8), margins, {}, "2-D bool array"),
        ("always in", always, margins, {}, "train:3 is in every model's subset"),
        ("val_frac", masks, margins, {"val_frac": 1.0}, "strictly between 0 and 1"),
        ("target range", masks, margins, {"targets": [10]}, "outside 0..9"),
        ("repeat", masks, margins, {"targets": [1, 1]}, "repeat"),
    ]


@pytest.mark.parametrize("name, masks, margins, kwargs, message", _bad_inputs(), ids=[c[0] for c in _bad_inputs()])
def test_bad_inputs_raise_one_line_errors(name, masks, margins, kwargs, message):
    with pytest.raises(DatamodelError, match=message) as err:
        fit_datamodels(masks, margins, 8, **kwargs)
    assert "\n" not in str(err.value) and isinstance(err.value, ValueError)
