"""Data support: heuristic against a brute-force loop, bisection against a known threshold, real search and resume."""
from __future__ import annotations

import json

import numpy as np

from backend.training import retrain_store
from backend.training.control import control_mean
from backend.counterfactuals.predict import load_weights
from backend.counterfactuals.removal import competitor_class
from backend.store.run_dir import Run
from backend.counterfactuals.support import bisect_supports, brittleness_cdf, certified_supports, heuristic_support, search_summary


def brute_support(w: np.ndarray, margin: float) -> float:
    if margin <= 0:
        return 0.0
    total = 0.0
    for k, value in enumerate(sorted(w, reverse=True), start=1):
        total += max(value, 0.0)
        if total > margin:
            return float(k)
    return np.inf


def test_heuristic_support_matches_brute_force():
    rng = np.random.default_rng(0)
    weights = rng.normal(0, 0.1, size=(50, 30)) * (rng.random((50, 30)) < 0.5)
    margins = rng.normal(0.5, 0.6, size=50)
    margins[:3] = [-0.2, 0.0, 100.0]  # already wrong, on the boundary, unreachable
    got = heuristic_support(weights, margins, block=7)
    assert got.tolist() == [brute_support(w, m) for w, m in zip(weights, margins)]
    assert got[0] == 0 and got[1] == 0 and got[2] == np.inf


def test_heuristic_support_reads_chosen_rows_of_a_memmapped_file(tmp_path):
    rng = np.random.default_rng(3)
    weights = rng.normal(0, 0.2, size=(40, 25)).astype(np.float32)
    np.save(tmp_path / "w.npy", weights)
    mapped = np.load(tmp_path / "w.npy", mmap_mode="r")
    rows = np.arange(10, 40)
    margins = rng.uniform(0, 2, size=30)
    got = heuristic_support(mapped, margins, rows, block=4)
    assert got.tolist() == [brute_support(weights[r].astype(np.float64), m) for r, m in zip(rows, margins)]


def test_brittleness_cdf_counts_targets_at_or_below_k():
    s = np.array([0, 3, 3, 10, np.inf])
    np.testing.assert_allclose(brittleness_cdf(s, np.array([0, 2, 3, 10, 1000])), [0.2, 0.2, 0.6, 0.8, 0.8])


def fake_evaluator(thresholds, calls):
    """Mean margin after changing k images: positive up to the threshold, negative beyond (known support t + 1)."""
    def evaluate(asks):
        calls.append(list(asks))
        return [thresholds[i] + 0.5 - k for i, k in asks]
    return evaluate


def test_bisection_finds_a_known_threshold_exactly_with_enough_budget():
    thresholds = [0, 1, 37, 500, 1278]
    calls = []
    found = bisect_supports(len(thresholds), fake_evaluator(thresholds, calls), k_max=1280, budget=11)
    assert [s.support for s in found] == [t + 1 for t in thresholds]
    assert [s.lower for s in found] == thresholds
    assert all(len(c) <= len(thresholds) for c in calls) and len(calls) <= 11


def test_bisection_budget_7_brackets_within_resolution_and_accepts_only_negative_margins():
    thresholds = [37, 500, 900]
    found = bisect_supports(3, fake_evaluator(thresholds, []), k_max=1280, budget=7)
    for s, t in zip(found, thresholds):
        assert s.lower <= t < s.support and s.support - s.lower <= 1280 / 2 ** 7
        assert len(s.steps) == 7 and all(m < 0 for k, m in s.steps if k == s.support)


def test_bisection_reports_none_when_nothing_flips():
    (found,) = bisect_supports(1, lambda asks: [5.0] * len(asks), k_max=100, budget=7)
    assert found.support is None and found.lower == 99


def test_certified_search_on_a_real_run_resumes_from_storage(cf_run, monkeypatch):
    run = Run(cf_run)
    control = control_mean(run)
    right = [t for t in range(run.n_train, run.n_targets) if control[t] > 0][:2]
    wrong = next(t for t in range(run.n_train, run.n_targets) if control[t] <= 0)
    started = []
    records = certified_supports(run, right + [wrong], n_models=2, k_max=1200, budget=2, check=True, device="cpu",
                                 progress=lambda done, total, unit: started.append((done, total, unit)))
    assert started[0] == (0, 3, "target") and started[-1] == (3, 3, "target")
    for r in records[:2]:
        assert [k for k, _ in r["steps"]] == [600, 300 if r["steps"][0][1] < 0 else 900]
        if r["support"] is not None:
            assert dict(map(tuple, r["steps"]))[r["support"]] < 0 and "check_margin" in r
    assert records[2]["support"] == 0 and records[2]["steps"] == []
    stored = json.loads((run.dir / "support" / f"remove-{right[0]}.json").read_text())
    assert stored == records[0]

    def no_training(*args, **kwargs):
        raise AssertionError("stored results must be reused")
    monkeypatch.setattr(retrain_store.retraining, "train_sets", no_training)
    again = certified_supports(run, right + [wrong], n_models=2, k_max=1200, budget=2, check=True, device="cpu",
                               progress=lambda done, total, unit: started.append((done, total, unit)))
    assert started[-1] == (0, 0, "target") and again == records
    summary = search_summary(records)
    assert summary["targets"] == 3 and summary["already_wrong"] == 1


def test_mislabel_search_relabels_to_the_competitor(cf_run):
    run = Run(cf_run)
    control = control_mean(run)
    target = next(t for t in range(run.n_train, run.n_targets) if control[t] > 0)
    (record,) = certified_supports(run, [target], n_models=1, mislabel=True, k_max=400, budget=1, device="cpu")
    weights, labels = load_weights(run), np.asarray(run.labels)
    assert record["mode"] == "mislabel" and record["relabel_to"] != labels[target]
    assert record["relabel_to"] == competitor_class(weights[target], labels[:run.n_train], int(labels[target]), 10)
    assert [k for k, _ in record["steps"]] == [200]
    assert (run.dir / "support" / f"mislabel-{target}.json").exists()
