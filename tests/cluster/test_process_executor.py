"""ProcessExecutor, the train stage's default for a large MLP run on a multi-core CPU: every item's result under
its index, each worker's state built once in that worker, nothing left running when the stage is killed, and a
run trained on it equal to the same run trained in this process."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np

from backend.cluster.executor import LocalExecutor, ProcessExecutor
from backend.datasets import load_dataset
from backend.store.run_dir import Run
from backend.training import train_stage
from backend.training.train_stage import train_run
from tests.conftest import ROOT


def _setup(shared: int) -> tuple[int, int]:
    return os.getpid(), shared


def _task(state: tuple[int, int], x: int) -> tuple[int, int]:
    pid, shared = state
    return pid, shared * x


def _sleep(state, seconds: float) -> None:
    time.sleep(seconds)


def _state(pid: int) -> str:
    """A process's state letter (Z: a zombie, dead and not yet reaped), or "gone"."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


def test_results_come_back_under_their_index_from_workers_built_once():
    results = dict(ProcessExecutor(2).map(_task, [(x,) for x in range(6)], setup=_setup, shared=10))
    assert {i: value for i, (_, value) in results.items()} == {x: 10 * x for x in range(6)}
    pids = {pid for pid, _ in results.values()}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2


def test_a_killed_stage_leaves_no_worker_running():
    script = ("import sys; from tests.cluster.test_process_executor import _sleep; "
              "from backend.cluster.executor import ProcessExecutor; "
              "list(ProcessExecutor(2).map(_sleep, [(60,), (60,)]))")
    stage = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    workers: list[int] = []
    deadline = time.time() + 60
    while len(workers) < 2 and time.time() < deadline:
        time.sleep(0.2)
        found = subprocess.run(["pgrep", "-P", str(stage.pid), "-f", "spawn_main"], capture_output=True, text=True)
        workers = [int(p) for p in found.stdout.split()]
    assert len(workers) == 2
    stage.send_signal(signal.SIGKILL)
    stage.wait()
    deadline = time.time() + 20
    while time.time() < deadline and any(_state(p) not in ("gone", "Z") for p in workers):
        time.sleep(0.2)
    assert all(_state(p) in ("gone", "Z") for p in workers)  # without PR_SET_PDEATHSIG they sleep on for 60 s


def test_a_run_trained_on_worker_processes_equals_the_run_trained_here(tmp_path):
    ds = load_dataset("digits")
    kw = dict(alpha=0.5, n_models=8, seed=2, hparams={"epochs": 2, "hidden": 16}, batch_models=3, precision="fp32",
              device="cpu")
    train_run(ds, "digits", tmp_path / "here", executor=LocalExecutor(), **kw)
    train_run(ds, "digits", tmp_path / "workers", executor=ProcessExecutor(2), **kw)
    here, workers = Run(tmp_path / "here"), Run(tmp_path / "workers")
    np.testing.assert_array_equal(np.asarray(here.masks), np.asarray(workers.masks))
    # Each worker has one of the two cores as its thread: only a GEMM's blocking may differ (1e-5, as batching).
    np.testing.assert_allclose(np.asarray(here.margins), np.asarray(workers.margins), rtol=0, atol=1e-5)


def test_the_default_worker_processes_report_progress_chunk_by_chunk(tmp_path, monkeypatch):
    # The stage picks worker processes itself (engine.cpu_workers: an MLP run of 1,000 models or more); here forced
    # for 16 small models. They report only finished chunks, so the stage cuts at least 8 a worker.
    monkeypatch.setattr(train_stage, "cpu_workers", lambda arch, n_models, n_chunks: 2)
    assert train_stage.worker_chunk_size(500, 2000, 2) == 125 and train_stage.worker_chunk_size(500, 5, 2) == 1
    ds = load_dataset("digits")
    kw = dict(alpha=0.5, n_models=16, seed=2, hparams={"epochs": 2, "hidden": 16}, batch_models=16, precision="fp32",
              device="cpu")
    calls: list[tuple[float, int]] = []
    train_run(ds, "digits", tmp_path / "workers", progress=lambda done, total, unit: calls.append((done, total)), **kw)
    train_run(ds, "digits", tmp_path / "here", executor=LocalExecutor(), **kw)
    assert [total for _, total in calls] == [16] * 17 and [done for done, _ in calls] == list(range(17))
    here, workers = Run(tmp_path / "here"), Run(tmp_path / "workers")
    np.testing.assert_array_equal(np.asarray(here.masks), np.asarray(workers.masks))
    np.testing.assert_allclose(np.asarray(here.margins), np.asarray(workers.margins), rtol=0, atol=1e-5)
