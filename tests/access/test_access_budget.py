"""The retraining budget, kept in the run, and its queue for the one job slot (backend/access/budget.py)."""
import json
import subprocess
import sys
import threading

import pytest

from backend.access.budget import BUDGET_ENV, DEFAULT_BUDGET, BudgetError, RetrainBudget, budget_from_env, spent
from backend.store import schema
from backend.store.errors import RunError
from tests.conftest import ROOT


def waiting(budget: RetrainBudget) -> list[str]:
    """The users whose jobs wait for the slot, in the order they will run."""
    with budget._cond:
        return [user for _, user in budget._queue]


@pytest.fixture
def runs(tmp_path):
    """Two run directories (the budget needs only their folders)."""
    a, b = tmp_path / "run-a", tmp_path / "run-b"
    a.mkdir()
    b.mkdir()
    return a, b


def test_budget_setting():
    assert budget_from_env({}) == DEFAULT_BUDGET and budget_from_env({BUDGET_ENV: " 12 "}) == 12
    assert budget_from_env({BUDGET_ENV: "0"}) == 0
    for bad in ("-1", "1e3", "many", "2.5"):
        with pytest.raises(BudgetError, match=f"{BUDGET_ENV}.*integer"):
            budget_from_env({BUDGET_ENV: bad})


def test_jobs_are_charged_what_they_trained_and_refused_over_budget(runs):
    a, b = runs
    budget = RetrainBudget(10)
    with budget.job(a, 8, "ann") as job:
        job.trained = 3  # 5 of the 8 reserved models were already in the retrain store
    assert budget.left(a) == 7 and budget.left(b) == 10  # budgets are per run
    with budget.job(a, 7, "ann"):
        pass  # trained unset: charged the whole reservation
    assert budget.left(a) == 0
    with pytest.raises(BudgetError, match="up to 1 models, but only 0 of the run's budget of 10 are left"):
        with budget.job(a, 1, "ann"):
            pytest.fail("an over-budget job must not start")
    with budget.job(b, 4, "ann") as job:
        job.trained = 99  # never charged past the reservation
    assert budget.left(b) == 6


def test_a_failed_job_is_charged_and_frees_the_slot(runs):
    a, _ = runs
    budget = RetrainBudget(10)
    with pytest.raises(RuntimeError):
        with budget.job(a, 4, "ann") as job:
            job.trained = 2
            raise RuntimeError("out of memory")
    assert budget.left(a) == 8
    with budget.job(a, 1, "bob"):
        pass


def test_the_spend_survives_a_restart(runs):
    """The spend is in the run: a new ledger (a cleared cache) and a new process both go on from it."""
    a, _ = runs
    with RetrainBudget(10).job(a, 4, "ann") as job:
        job.trained = 3
    assert json.loads(schema.RETRAIN_SPEND.path(a).read_text())["spent"] == 3
    assert RetrainBudget(10).left(a) == 7
    code = f"from backend.access.budget import RetrainBudget; print(RetrainBudget(10).left({str(a)!r}))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "7"
    with pytest.raises(BudgetError, match="only 7 of the run's budget of 10"):
        with RetrainBudget(10).job(a, 8, "bob"):
            pytest.fail("over the budget a restart kept")


def test_a_server_killed_mid_job_has_spent_the_reservation(runs):
    a, _ = runs
    with pytest.raises(KeyboardInterrupt):
        with RetrainBudget(10).job(a, 6, "ann"):
            assert spent(a) == 6  # charged before anything trains
            raise KeyboardInterrupt
    assert spent(a) == 6  # trained unset: the whole reservation


def test_a_corrupt_spend_record_is_one_error_naming_it(runs):
    a, _ = runs
    schema.RETRAIN_SPEND.path(a).write_text('{"spent": "lots"}')
    with pytest.raises(RunError, match="retrain_budget.json is corrupt .*'spent' is a JSON str"):
        RetrainBudget(10).left(a)


def test_clicks_while_a_job_runs_queue_in_order_and_see_their_place(runs):
    a, b = runs
    budget = RetrainBudget(100)
    started, release = threading.Event(), threading.Event()
    ran, places = [], {"bob": [], "cat": []}

    def long_job():
        with budget.job(a, 5, "alice"):
            started.set()
            release.wait(10)
            ran.append("alice")

    def click(user, run, queued):
        def on_wait(ahead, holder):
            places[user].append((ahead, holder))
            queued.set()
        with budget.job(run, 1, user, on_wait=on_wait):
            ran.append(user)

    alice = threading.Thread(target=long_job)
    alice.start()
    assert started.wait(10)
    bob_queued, cat_queued = threading.Event(), threading.Event()
    bob = threading.Thread(target=click, args=("bob", a, bob_queued))
    bob.start()
    assert bob_queued.wait(10)
    cat = threading.Thread(target=click, args=("cat", b, cat_queued))  # the slot is per server, not per run
    cat.start()
    assert cat_queued.wait(10)
    assert waiting(budget) == ["bob", "cat"]
    release.set()
    for thread in (alice, bob, cat):
        thread.join(10)
    assert ran == ["alice", "bob", "cat"]
    assert places["bob"][0] == (1, "alice") and places["cat"][0] == (2, "alice")
    assert budget.left(a) == 94 and budget.left(b) == 99 and waiting(budget) == []


def test_an_abandoned_click_leaves_the_queue(runs):
    a, _ = runs
    budget = RetrainBudget(100)
    started, release = threading.Event(), threading.Event()

    def long_job():
        with budget.job(a, 1, "alice"):
            started.set()
            release.wait(10)

    def leave(ahead, holder):
        raise KeyboardInterrupt  # what a page rerun raises in a waiting script thread

    alice = threading.Thread(target=long_job)
    alice.start()
    assert started.wait(10)
    with pytest.raises(KeyboardInterrupt):
        with budget.job(a, 1, "bob", on_wait=leave):
            pytest.fail("an abandoned click must not run")
    assert waiting(budget) == []
    release.set()
    alice.join(10)
    with budget.job(a, 1, "cat"):
        pass
    assert budget.left(a) == 98
