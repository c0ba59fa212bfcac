"""The one progress convention: every job starts at 0, never goes back or past its total, ends at the total."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from backend.counterfactuals.predict import retrain
from backend.progress import part
from backend.leakage.analysis import analyze_leakage
from backend.store.run_dir import Run
from backend.training.control import ensure_control


def check(calls: list[tuple[float, float, str]], total: float, unit: str) -> None:
    done = [d for d, _, _ in calls]
    assert calls[0] == (0, total, unit) and done[-1] == pytest.approx(total)
    assert done == sorted(done) and max(done) <= total + 1e-9
    assert {(t, u) for _, t, u in calls} == {(total, unit)}


def test_part_maps_a_sub_job_onto_its_range():
    calls = []
    record = lambda *c: calls.append(c)  # noqa: E731
    within = part(record, 6, 4, 10, "model")  # units 6..10 of 10: the sub-job's share scaled by 4
    for done in (0, 2, 8):
        within(done, 8, "step")
    part(record, 2, 3, 5)(1, 3, "λ step")  # no unit given: the sub-job's own
    part(record, 2, 3, 5, "stage")(0, 0, "model")  # nothing to do: complete
    part(part(record, 6, 4, 10), 1, 3, 4)(1, 2, "model")  # 1 + 3 · 1/2 = 2.5 of 4, so 6 + 4 · 2.5/4 = 8.5 of 10
    assert calls == [(6, 10, "model"), (7, 10, "model"), (10, 10, "model"), (3, 5, "λ step"), (5, 5, "stage"),
                     (8.5, 10, "model")]
    assert part(None, 0, 1, 1) is None


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
    analyze_leakage(Run(copy), lambda *c: calls.append(c), device="cpu")
    check(calls, 4, "step")
