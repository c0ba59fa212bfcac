"""The retraining budget: how many models dashboard clicks may train per run, one job at a time per server.

Every retraining button (Verify by retraining, control models, Certify, faithfulness) asks for a job
of at most n models. Jobs queue first come, first served for the server's one job slot; a job whose
turn comes is refused before anything trains when it would exceed the run's remaining budget. What
clicks have trained is kept in the run (retrain_budget.json, written atomically at the start and the
end of each job), so a restarted server, or another server on the same run, goes on from there.
DATAMODELS_RETRAIN_BUDGET sets the cap; the CLI is never capped.
"""
from __future__ import annotations

import threading
from collections import deque
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Mapping

from backend.store.artifacts import read_json, write_json
from backend.store.schema import RETRAIN_SPEND

BUDGET_ENV = "DATAMODELS_RETRAIN_BUDGET"
DEFAULT_BUDGET = 512
WAIT_POLL_S = 0.5  # how often a queued click redraws its place in the queue


class BudgetError(RuntimeError):
    """A retraining job that the budget refuses; the message says what to do instead."""


def budget_from_env(environ: Mapping[str, str]) -> int:
    """Models per run that clicks may train: DATAMODELS_RETRAIN_BUDGET (an integer ≥ 0), else DEFAULT_BUDGET."""
    value = environ.get(BUDGET_ENV, "").strip()
    if not value:
        return DEFAULT_BUDGET
    if not value.isdigit():
        raise BudgetError(f"{BUDGET_ENV}={value!r} is not a number of models: write an integer ≥ 0, e.g. 512")
    return int(value)


class Job:
    """A running job's reservation; set `trained` to the models it really trained (default: all reserved)."""

    def __init__(self, reserved: int):
        self.reserved, self.trained = reserved, None


def spent(run_dir: Path) -> int:
    """Models the dashboard's retraining clicks have trained in the run, as retrain_budget.json records them."""
    record = read_json(Path(run_dir), RETRAIN_SPEND, missing_ok=True)
    return 0 if record is None else record["spent"]


_SERVER_BUDGETS: dict[int, "RetrainBudget"] = {}
_SERVER_LOCK = threading.Lock()


def server_budget(budget: int) -> "RetrainBudget":
    """The process's one retraining queue and job slot (per budget setting). A module global, not
    st.cache_resource: any websocket client may send Streamlit's clear_cache message, which empties that cache
    for everyone, and a fresh RetrainBudget would let the next click run beside the job that holds the slot."""
    with _SERVER_LOCK:
        if budget not in _SERVER_BUDGETS:
            _SERVER_BUDGETS[budget] = RetrainBudget(budget)
        return _SERVER_BUDGETS[budget]


class RetrainBudget:
    """One server's queue of retraining jobs and its one job slot, charging each run's spend in the run."""

    def __init__(self, budget: int):
        self.budget = budget
        self._cond = threading.Condition()
        self._queue: deque[tuple[object, str]] = deque()  # waiting jobs, first come first
        self._holder: str | None = None

    def left(self, run_dir: Path) -> int:
        return self.budget - spent(run_dir)

    def _charge(self, run_dir: Path, models: int) -> None:
        with self._cond:  # one read-modify-write at a time in this server
            write_json(Path(run_dir), RETRAIN_SPEND, {"spent": spent(run_dir) + models, "budget": self.budget})

    def _take_turn(self, user: str, on_wait: Callable[[int, str | None], None] | None) -> None:
        """Wait in the queue until the slot is free and this job is first; on_wait(jobs ahead, holder) while queued."""
        ticket = object()
        with self._cond:
            self._queue.append((ticket, user))
        try:
            while True:
                with self._cond:
                    ahead = [t for t, _ in self._queue].index(ticket)
                    if ahead == 0 and self._holder is None:
                        self._queue.popleft()
                        self._holder = user
                        return
                    holder = self._holder
                if on_wait is not None:
                    on_wait(ahead + (holder is not None), holder)
                with self._cond:
                    self._cond.wait(WAIT_POLL_S)
        except BaseException:  # the click was abandoned (the page rerun or closed): leave the queue
            with self._cond:
                self._queue = deque(entry for entry in self._queue if entry[0] is not ticket)
                self._cond.notify_all()
            raise

    @contextmanager
    def job(self, run_dir: Path, n_models: int, user: str,
            on_wait: Callable[[int, str | None], None] | None = None) -> Iterator[Job]:
        """Queue for the server's job slot, then reserve up to n_models of the run's budget for the body, or
        BudgetError.

        On exit the run is charged job.trained (or the whole reservation when unset), also when the body
        failed after training some models; the slot passes to the next job in the queue.
        """
        self._take_turn(user, on_wait)
        try:
            left = self.left(run_dir)
            if n_models > left:
                raise BudgetError(f"this would train up to {n_models} models, but only {left} of the run's "
                                  f"budget of {self.budget} are left: ask fewer models, raise {BUDGET_ENV} "
                                  "and restart the server, or retrain with the command line")
            self._charge(run_dir, n_models)  # before training: a server killed mid-job has still spent it
            job = Job(n_models)
            try:
                yield job
            finally:
                charged = job.reserved if job.trained is None else min(job.trained, job.reserved)
                if charged < job.reserved:
                    self._charge(run_dir, charged - job.reserved)
        finally:
            with self._cond:
                self._holder = None
                self._cond.notify_all()
