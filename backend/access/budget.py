"""The retraining budget: how many models dashboard clicks may train per run, one job at a time per server.

Every retraining button (Verify by retraining, control models, Certify, faithfulness) asks for a job
of at most n models. A job over the run's remaining budget is refused before anything trains; while a
job runs, every other click on the same server is refused with who holds the machine, so concurrent
clicks cannot stack GPU hours. The ledger lives in the server process (one per `streamlit run`): a
restart resets it. DATAMODELS_RETRAIN_BUDGET sets the cap; the CLI is never capped.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator, Mapping

BUDGET_ENV = "DATAMODELS_RETRAIN_BUDGET"
DEFAULT_BUDGET = 512


class BudgetError(RuntimeError):
    """A retraining job that the budget or the queue refuses; the message says what to do instead."""


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


class RetrainBudget:
    """One server's ledger of models trained per run key (the run directory), and its one job slot."""

    def __init__(self, budget: int):
        self.budget = budget
        self._spent: dict[str, int] = {}
        self._ledger = threading.Lock()
        self._slot = threading.Lock()
        self._holder: str | None = None

    def left(self, run: str) -> int:
        with self._ledger:
            return self.budget - self._spent.get(run, 0)

    @contextmanager
    def job(self, run: str, n_models: int, user: str) -> Iterator[Job]:
        """Reserve up to n_models of run's budget and the server's job slot for the body, or BudgetError.

        On exit the run is charged job.trained (or the whole reservation when unset), also when the body
        failed after training some models; the slot is freed.
        """
        if not self._slot.acquire(blocking=False):
            raise BudgetError(f"{self._holder} is retraining on this server: only one retraining job runs at a "
                              "time, so wait for it to finish and click again")
        try:
            self._holder = user
            with self._ledger:
                left = self.budget - self._spent.get(run, 0)
                if n_models > left:
                    raise BudgetError(f"this would train up to {n_models} models, but only {left} of the run's "
                                      f"budget of {self.budget} are left: ask fewer models, raise {BUDGET_ENV} "
                                      "and restart the server, or retrain with the command line")
                self._spent[run] = self._spent.get(run, 0) + n_models
            job = Job(n_models)
            try:
                yield job
            finally:
                charged = job.reserved if job.trained is None else min(job.trained, job.reserved)
                with self._ledger:
                    self._spent[run] -= job.reserved - charged
        finally:
            self._holder = None
            self._slot.release()
