"""Held-out evaluation against scipy/sklearn and brute-force loops."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from backend.datamodels import evaluation
from backend.datamodels.fit import fit_datamodels
from backend.datamodels.evaluation import (auc_of_ranks, difference_of_means, lds, masked_ranks, sample_complexity, summarize,
                                summary_report, table5, table5_report)
from tests.oracles import random_problem, rows_of

N_TRAIN, N_TEST = 12, 4


@pytest.fixture(scope="module")
def data():
    masks, margins = random_problem(n_models=90, n_train=N_TRAIN, n_test=N_TEST, seed=2)
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(N_TRAIN + N_TEST, N_TRAIN)).astype(np.float32)
    bias = rng.normal(size=N_TRAIN + N_TEST).astype(np.float32)
    margins[:, N_TRAIN + 1] = np.round(margins[:, N_TRAIN + 1])  # ties in the actual margins
    return masks, margins, weights, bias


def counted(masks, column):
    return ~masks[:, column] if column < N_TRAIN else np.ones(len(masks), dtype=bool)


def test_lds_and_mse_match_scipy_per_target(data):
    masks, margins, weights, bias = data
    res = lds(weights, bias, masks, margins, N_TRAIN)
    for c in range(N_TRAIN + N_TEST):
        inc = counted(masks, c)
        pred = masks[inc] @ weights[c].astype(np.float64) + bias[c]
        assert res["n_models"][c] == inc.sum()
        assert res["spearman"][c] == pytest.approx(spearmanr(pred, margins[inc, c]).statistic, abs=1e-12)
        # float32 products of 0/1 masks and float32 weights: a sum rounds once per 8,192 features
        assert res["mse"][c] == pytest.approx(np.mean((pred - margins[inc, c]) ** 2), rel=1e-6)


def test_masks_read_in_row_chunks_give_the_same_lds(data, monkeypatch):
    """Held-out masks too big to hold as float64 (CIFAR shape: 4 GB) are multiplied in chunks of models."""
    masks, margins, weights, bias = data
    whole = lds(weights, bias, masks, margins, N_TRAIN)
    monkeypatch.setattr(evaluation, "MASK_CHUNK_BYTES", 8 * N_TRAIN * 7)  # 7 of the 90 models at a time
    chunked = lds(weights, bias, masks, margins, N_TRAIN)
    np.testing.assert_allclose(chunked["spearman"], whole["spearman"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(chunked["mse"], whole["mse"], rtol=1e-12, atol=1e-12)


def test_lds_is_nan_where_undefined(data):
    masks, margins, weights, bias = data
    margins = margins.copy()
    margins[:, N_TRAIN] = 1.0  # constant margins: no ranking
    masks = masks.copy()
    masks[2:, 4] = True  # only two models leave train:4 out ...
    masks[:1, 4] = True  # ... now one
    res = lds(weights, bias, masks, margins, N_TRAIN, targets=[N_TRAIN, 4, 0])
    assert np.isnan(res["spearman"][:2]).all() and np.isfinite(res["spearman"][2])


def test_auc_matches_sklearn_with_ties_and_one_class(data):
    masks, margins, weights, bias = data
    rng = np.random.default_rng(1)
    scores = np.round(rng.normal(size=(90, 5)), 1)
    labels = rng.random((90, 5)) < 0.4
    labels[:, 4] = True
    inc = rng.random((90, 5)) < 0.7
    auc = auc_of_ranks(masked_ranks(scores, inc), labels, inc)  # as summarize's Table 5 computes it
    for t in range(4):
        assert auc[t] == pytest.approx(roc_auc_score(labels[inc[:, t], t], scores[inc[:, t], t]), abs=1e-12)
    assert np.isnan(auc[4])


@pytest.mark.parametrize("correctness", [False, True])
def test_difference_of_means_matches_a_loop(data, correctness, monkeypatch):
    masks, margins, _, _ = data
    monkeypatch.setattr(evaluation, "BLOCK_BYTES", 8 * N_TRAIN * 25)  # several target blocks ...
    monkeypatch.setattr(evaluation, "MASK_CHUNK_BYTES", N_TRAIN * 25)  # ... and chunks of 25 models
    w, b = difference_of_means(masks, margins, N_TRAIN, correctness=correctness)
    y_all = (margins > 0).astype(np.float64) if correctness else margins.astype(np.float64)
    for c in range(N_TRAIN + N_TEST):
        inc = counted(masks, c)
        x, y = masks[inc], y_all[inc, c]
        # Correctness sums are exact integers; margins enter as a fixed-point copy of y − mean(y), each model
        # off by at most half a step of max|y − mean(y)| / FIXED_POINT_MAX, so a difference of means by one step.
        tol = 1e-12 if correctness else np.abs(y - y.mean()).max() / evaluation.FIXED_POINT_MAX + 1e-12
        for i in range(N_TRAIN):
            inside, outside = y[x[:, i]], y[~x[:, i]]
            expected = inside.mean() - outside.mean() if len(inside) and len(outside) else 0.0
            assert w[c, i] == pytest.approx(expected, abs=tol)
        assert b[c] == pytest.approx(y.mean() - x.mean(0) @ w[c], abs=1e-12)
    assert (w[np.arange(N_TRAIN), np.arange(N_TRAIN)] == 0).all()  # no counted model saw its own target


def test_summaries_split_test_and_train_targets():
    values = np.array([1.0, np.nan, 3.0, 4.0, 10.0, 20.0, 30.0])
    s = summarize(values, np.arange(7), n_train=4)
    assert s["train"] == {"n_targets": 4, "n_undefined": 1, "mean": pytest.approx(8 / 3),
                          "q25": 2.0, "median": 3.0, "q75": 3.5}
    assert s["test"]["mean"] == 20.0 and s["test"]["n_undefined"] == 0


def test_table5_scores_each_estimator_on_the_same_models(data):
    masks, margins, weights, bias = data
    fit_m, held_m = masks[:60], masks[60:]
    fit_y, held_y = margins[:60], margins[60:]
    res = table5(weights, bias, fit_m, fit_y, held_m, held_y, N_TRAIN)
    ref = lds(weights, bias, held_m, held_y, N_TRAIN)
    np.testing.assert_allclose(res["datamodel"]["spearman"], ref["spearman"], equal_nan=True)
    for key in ("targets", "spearman", "mse", "n_models"):  # eval takes its LDS from table5's pass
        np.testing.assert_allclose(res["lds"][key], ref[key], rtol=1e-12, equal_nan=True)
    unfitted = weights.copy()
    unfitted[[3, N_TRAIN + 1]] = np.nan
    got, want = table5(unfitted, bias, fit_m, fit_y, held_m, held_y, N_TRAIN)["lds"], lds(unfitted, bias, held_m, held_y, N_TRAIN)
    assert np.isnan(got["spearman"][[3, N_TRAIN + 1]]).all() and np.isnan(got["mse"][[3, N_TRAIN + 1]]).all()
    for key in ("spearman", "mse", "n_models"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-12, equal_nan=True)
    w, b = difference_of_means(fit_m, fit_y, N_TRAIN, correctness=True)
    c = N_TRAIN + 2
    pred = held_m @ w[c] + b[c]
    assert res["empirical_influence"]["spearman"][c] == pytest.approx(spearmanr(pred, held_y[:, c] > 0).statistic)
    report = table5_report(weights, bias, fit_m, fit_y, held_m, held_y, N_TRAIN)
    json.dumps(report)
    assert set(report) == {"n_fit_models", "n_heldout_models", "empirical_influence", "difference_of_means",
                           "datamodel"}
    assert report["datamodel"]["spearman"]["test"]["mean"] == pytest.approx(np.nanmean(ref["spearman"][N_TRAIN:]))


def test_masked_ranks_are_scipys_average_ranks_among_the_included_models():
    from scipy.stats import rankdata

    rng = np.random.default_rng(3)
    values = np.round(rng.normal(size=(50, 7)), 1)  # many ties
    values[:, 6] = 2.0  # all tied
    inc = rng.random((50, 7)) < 0.6
    ranks = evaluation.masked_ranks(values, inc)
    for t in range(7):
        np.testing.assert_array_equal(ranks[inc[:, t], t], rankdata(values[inc[:, t], t]))
        assert np.isnan(ranks[~inc[:, t], t]).all()


def brute_force_check(masks, margins, n_train: int, n_fit: int, seed: int) -> None:
    """Every number eval reports, against the definitions computed target by target in float64 (scipy, sklearn)."""
    n_targets = margins.shape[1]
    rng = np.random.default_rng(seed)
    weights = (rng.normal(size=(n_targets, n_train)) * (rng.random((n_targets, n_train)) < 0.3)).astype(np.float32)
    bias = rng.normal(size=n_targets).astype(np.float32)
    fit_m, fit_y, held_m, held_y = masks[:n_fit], margins[:n_fit], masks[n_fit:], margins[n_fit:]
    res = table5(weights, bias, fit_m, fit_y, held_m, held_y, n_train)
    ref_lds = lds(weights, bias, held_m, held_y, n_train)
    for c in range(n_targets):
        fit_rows, held_rows = rows_of(fit_m, c, n_train), rows_of(held_m, c, n_train)
        x_fit, x_held = fit_m[fit_rows].astype(np.float64), held_m[held_rows].astype(np.float64)
        actual = held_y[held_rows, c].astype(np.float64)
        correct = actual > 0
        predictors = {}
        for name, y in (("empirical_influence", (fit_y[fit_rows, c] > 0).astype(np.float64)),
                        ("difference_of_means", fit_y[fit_rows, c].astype(np.float64))):
            w = np.array([y[x_fit[:, i] > 0].mean() - y[x_fit[:, i] == 0].mean()
                          if 0 < x_fit[:, i].sum() < len(y) else 0.0 for i in range(n_train)])
            predictors[name] = (x_held @ w + y.mean() - x_fit.mean(0) @ w, correct if name == "empirical_influence" else actual)
        predictors["datamodel"] = (x_held @ weights[c].astype(np.float64) + bias[c], actual)
        for name, (pred, own) in predictors.items():
            expected = {"spearman": spearmanr(pred, own).statistic, "spearman_margin": spearmanr(pred, actual).statistic,
                        "auc": roc_auc_score(correct, pred) if 0 < correct.sum() < len(correct) else np.nan}
            for score, value in expected.items():
                got = res[name][score][c]
                assert (np.isnan(got) and np.isnan(value)) or abs(got - value) <= 1e-4, (name, score, c, got, value)
        assert abs(ref_lds["spearman"][c] - spearmanr(predictors["datamodel"][0], actual).statistic) <= 1e-4
        assert ref_lds["mse"][c] == pytest.approx(np.mean((predictors["datamodel"][0] - actual) ** 2), rel=1e-4)


@pytest.mark.filterwarnings("ignore:An input array is constant")
def test_table5_and_lds_match_a_per_target_brute_force_to_1e4(monkeypatch):
    """Few fit models: 1/n_in + 1/n_out spreads too much for two margin limbs, so all three are summed."""
    n_train, n_test = 30, 6
    masks, margins = random_problem(n_models=400, n_train=n_train, n_test=n_test, noise=0.7, seed=9)
    margins[:, n_train + 1] = np.round(margins[:, n_train + 1])  # ties in the actual margins
    added = []
    monkeypatch.setattr(evaluation.MarginalEffects, "add_limb",
                        lambda self, add=evaluation.MarginalEffects.add_limb: added.append(add(self)))
    brute_force_check(masks, margins, n_train, 300, seed=4)
    assert added


@pytest.mark.filterwarnings("ignore:An input array is constant")
def test_table5_with_two_margin_limbs_and_the_kernel_correction_matches_a_brute_force_to_1e4(monkeypatch):
    """Thousands of fit models at α = 0.5 (as at CIFAR shape): the training targets' third limb comes back
    through Kernels' correction, and the test targets' φ deviations take two limbs."""
    n_train, n_test = 48, 4
    masks, margins = random_problem(n_models=3300, n_train=n_train, n_test=n_test, noise=0.7, seed=5)
    margins[:, n_train + 1] = np.round(margins[:, n_train + 1])
    monkeypatch.setattr(evaluation.MarginalEffects, "add_limb", lambda self: pytest.fail("a third limb was summed"))
    limbs = []
    monkeypatch.setattr(evaluation.Kernels, "_products",
                        lambda self, lhs, products=evaluation.Kernels._products: limbs.append(lhs) or products(self, lhs))
    brute_force_check(masks, margins, n_train, 3000, seed=6)
    assert len(limbs) == 3  # the plain kernel and two limbs of φ's deviations


def test_sample_complexity_points_are_fits_on_model_prefixes():
    masks, margins = random_problem(n_models=400, n_train=10, n_test=3, noise=1.0, seed=5)
    held_m, held_y = masks[320:], margins[320:]
    targets = [0, 4, 10, 11, 12]
    res = sample_complexity(masks[:320], margins[:320], held_m, held_y, 10, fractions=(0.03, 0.25, 1.0),
                            targets=targets, n_lambdas=10)
    json.dumps(res)
    skipped, quarter, whole = res["points"]
    assert "too few" in skipped["skipped"] and (quarter["n_models"], whole["n_models"]) == (80, 320)
    fit = fit_datamodels(masks[:80], margins[:80], 10, targets=targets, n_lambdas=10)
    weights = np.zeros((13, 10), np.float32)
    bias = np.zeros(13, np.float32)
    weights[targets], bias[targets] = fit.weights, fit.bias
    direct = summary_report(lds(weights, bias, held_m, held_y, 10, targets=targets), len(held_m), 10)
    assert quarter["lds"] == direct["lds"] and quarter["mse"] == direct["mse"]
    assert whole["lds"]["test"]["mean"] > 0.3
