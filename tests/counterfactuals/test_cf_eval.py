"""The Figure 8 experiment: plan, skipped requests, predicted vs actual change, correlations."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from backend.training import retrain_store
from backend.training.control import control_mean
from backend.counterfactuals.evaluation import correlations, evaluate_counterfactuals, evaluation_plan, sample_test_targets
from backend.counterfactuals.predict import load_weights
from backend.store.run_dir import Run


def test_correlations_match_scipy_and_are_none_when_undefined():
    rng = np.random.default_rng(0)
    x = rng.normal(size=20)
    y = x + rng.normal(size=20)
    got = correlations(x, y)
    assert got["pearson"] == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-4)
    assert got["spearman"] == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-4)
    assert correlations(np.zeros(5), y[:5])["pearson"] is None


def test_plan_is_reproducible_and_skips_requests_a_user_could_not_make(counterfactual_run):
    run = Run(counterfactual_run)
    targets = sample_test_targets(run, 3, seed=1)
    assert targets == sample_test_targets(run, 3, seed=1) and all(t >= run.n_train for t in targets)
    plan, skipped = evaluation_plan(run, targets, [5, 200], seed=1)
    again, _ = evaluation_plan(run, targets, [5, 200], seed=1)
    assert all(np.array_equal(a["removed"], b["removed"]) for a, b in zip(plan, again))
    # 200 same-class images is more than any digit class has: removing the whole class is refused.
    assert {(s["k"], s["heuristic"]) for s in skipped} == {(200, "random-class")}
    assert "every training image of class" in skipped[0]["reason"]
    assert len(plan) == 3 * 2 * 4 - 3


def test_evaluation_reports_predicted_and_actual_change(cf_run):
    run = Run(cf_run)
    targets = sample_test_targets(run, 2)
    result = evaluate_counterfactuals(run, targets, [5, 30], n_models=2, heuristics=("top", "random"), device="cpu")
    weights, control = load_weights(run), control_mean(run)
    assert result["n_counterfactuals"] == 8 and len(result["rows"]) == 8
    for row in result["rows"][:3]:
        cf = retrain_store.load(run, row["key"])
        assert row["predicted_delta"] == pytest.approx(-weights[row["target"], cf.request.remove].astype(np.float64).sum())
        assert row["actual_delta"] == pytest.approx(cf.margins[:, row["target"]].mean() - control[row["target"]], abs=1e-6)
        assert row["target"] in cf.targets
    assert set(result["per_heuristic"]) == {"top", "random"} and result["overall"]["n"] == 8
    assert json.loads((run.dir / "counterfactual_eval.json").read_text())["overall"] == result["overall"]
