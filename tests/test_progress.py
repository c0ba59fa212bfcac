"""The one progress convention: every job starts at 0, never goes back or past its total, ends at the total."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from backend.counterfactuals.predict import retrain
from backend.leakage.analysis import analyze_leakage
from backend.store.run_dir import Run
from backend.training.control import ensure_control


def check(calls: list[tuple[float, float, str]], total: float, unit: str) -> None:
    done = [d for d, _, _ in calls]
    assert calls[0] == (0, total, unit) and done[-1] == pytest.approx(total)
    assert done == sorted(done) and max(done) <= total + 1e-9
    assert {(t, u) for _, t, u in calls} == {(total, unit)}


def test_retraining_jobs_count_models(cf_run):
    run = Run(cf_run)
    calls = []
    ensure_control(run, 9, device="cpu", progress=lambda *c: calls.append(c))
    check(calls, 1, "model")
    calls = []
    retrain(run, np.array([50, 51]), n_models=3, device="cpu", progress=lambda *c: calls.append(c))
    check(calls, 3, "model")


def test_leakage_analysis_counts_steps(structure_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(structure_run, copy)
    calls = []
    analyze_leakage(copy, lambda *c: calls.append(c), device="cpu")
    check(calls, 4, "step")
