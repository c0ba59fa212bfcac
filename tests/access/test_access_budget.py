"""The retraining budget and its one job slot (backend/access/budget.py)."""
import threading

import pytest

from backend.access.budget import BUDGET_ENV, DEFAULT_BUDGET, BudgetError, RetrainBudget, budget_from_env


def test_budget_setting():
    assert budget_from_env({}) == DEFAULT_BUDGET and budget_from_env({BUDGET_ENV: " 12 "}) == 12
    assert budget_from_env({BUDGET_ENV: "0"}) == 0
    for bad in ("-1", "1e3", "many", "2.5"):
        with pytest.raises(BudgetError, match=f"{BUDGET_ENV}.*integer"):
            budget_from_env({BUDGET_ENV: bad})


def test_jobs_are_charged_what_they_trained_and_refused_over_budget():
    budget = RetrainBudget(10)
    with budget.job("run-a", 8, "ann") as job:
        job.trained = 3  # 5 of the 8 reserved models were already in the retrain store
    assert budget.left("run-a") == 7 and budget.left("run-b") == 10  # budgets are per run
    with budget.job("run-a", 7, "ann"):
        pass  # trained unset: charged the whole reservation
    assert budget.left("run-a") == 0
    with pytest.raises(BudgetError, match="up to 1 models, but only 0 of the run's budget of 10 are left"):
        with budget.job("run-a", 1, "ann"):
            pytest.fail("an over-budget job must not start")
    with budget.job("run-b", 4, "ann") as job:
        job.trained = 99  # never charged past the reservation
    assert budget.left("run-b") == 6


def test_a_failed_job_is_charged_and_frees_the_slot():
    budget = RetrainBudget(10)
    with pytest.raises(RuntimeError):
        with budget.job("r", 4, "ann") as job:
            job.trained = 2
            raise RuntimeError("out of memory")
    assert budget.left("r") == 8
    with budget.job("r", 1, "bob"):
        pass


def test_one_job_at_a_time_the_others_are_told_who_holds_the_machine():
    budget = RetrainBudget(100)
    started, release = threading.Event(), threading.Event()

    def long_job():
        with budget.job("r", 5, "alice"):
            started.set()
            release.wait(10)

    worker = threading.Thread(target=long_job)
    worker.start()
    assert started.wait(10)
    refused = []
    for run in ("r", "other-run"):  # the slot is per server, not per run
        try:
            with budget.job(run, 1, "bob"):
                pass
        except BudgetError as exc:
            refused.append(str(exc))
    release.set()
    worker.join(10)
    assert len(refused) == 2 and all("alice is retraining on this server" in m for m in refused)
    assert budget.left("r") == 95 and budget.left("other-run") == 100  # refused clicks cost nothing
    with budget.job("r", 1, "bob"):
        pass
