"""Executors: how a stage runs its chunks of work, in this process (LocalExecutor), on worker processes of this
machine (ProcessExecutor) or as Ray tasks (RayExecutor).

A stage hands `map` a task function and its items: chunks of model indices for `train`, blocks of targets
for `fit`. Each worker builds a state once, `setup(shared)` (the dataset's tensors on its device, a fitter
with the masks resident), and runs `fn(state, *item)` for every item it is given. The task functions live
in the stages and travel to Ray's workers by reference (the workers import the project from the same
checkout), so this package imports nothing from the stages: an engine is handed to a stage, it never
reaches into one.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import Any, Callable, Iterable, Iterator, Sequence

from backend.cluster import connect, disconnect, rate_line, require_ray, task, task_failed


class LocalExecutor:
    """Every item in this process, in order, pulled from `items` only when its turn comes (so an item may
    depend on the results written before it). Tasks may report progress and share objects without copies."""

    in_process = True  # tasks run here: a stage may hand them progress callbacks and in-memory objects

    def map(self, fn: Callable, items: Iterable[tuple], *, setup: Callable | None = None, shared: Any = None,
            **_ray_only) -> Iterator[tuple[int, Any]]:
        """Yield (index of the item, fn(state, *item)) in item order; state = setup(shared), built once."""
        state = built = None
        for i, item in enumerate(items):
            if setup is not None and not built:  # not built at all when there is nothing to run
                state, built = setup(shared), True
            yield i, fn(state, *item)


class ProcessExecutor:
    """Items on `workers` processes of this machine, spawned for one `map` and given out as they free up; each
    builds its state once. Why processes and not threads: a process's torch ops run one after another, and ops
    too small to split well between threads (the digits MLP's GEMMs) keep every core busy only as separate
    streams of work. Results come back in the order they finish; a stage consuming them must not depend on the
    order (the train stage writes each chunk's shard as it comes)."""

    in_process = False  # tasks run in other processes: what they get is pickled, and progress counts finished items

    def __init__(self, workers: int):
        self.workers = workers

    def map(self, fn: Callable, items: Iterable[tuple], *, setup: Callable | None = None, shared: Any = None,
            **_ray_only) -> Iterator[tuple[int, Any]]:
        """Yield (index of the item, fn(state, *item)) as items finish; state = setup(shared), once per worker."""
        items = list(items)
        if not items:
            return
        # spawn, not fork: a forked child of a process whose OpenMP threads have run can hang in them.
        pool = ProcessPoolExecutor(max_workers=min(self.workers, len(items)), mp_context=get_context("spawn"),
                                   initializer=_build_state, initargs=(shared, setup, os.getpid()))
        try:
            futures = {pool.submit(_run_on_state, fn, item): i for i, item in enumerate(items)}
            for future in as_completed(futures):
                yield futures[future], future.result()
        finally:  # on an error or an abandoned generator, drop the items not started instead of waiting for them
            pool.shutdown(wait=True, cancel_futures=True)


_WORKER_STATE: list = []  # per ProcessExecutor worker process: its state, built by _build_state


def _build_state(shared: Any, setup: Callable | None, parent: int) -> None:
    # `shared` comes first in the pickle: a worker reads it, and only then imports what `setup` needs (torch, about a
    # second). The parent writes the whole pickle to a pipe at spawn and waits until the worker has read it, so with
    # `setup` first it waited for each worker's imports in turn (the digits stage: the second started 1.2 s late).
    # A killed stage must not leave its workers training on: on Linux they get SIGKILL when it dies.
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # prctl(PR_SET_PDEATHSIG, SIGKILL)
    if os.getppid() != parent:  # it died before the line above
        os._exit(1)
    _WORKER_STATE.append(None if setup is None else setup(shared))


def _run_on_state(fn: Callable, item: tuple):
    return fn(_WORKER_STATE[0], *item)


_STATE: dict = {}  # per Ray worker process: the state of the last key it was set up for


def _run_item(fn: Callable, setup: Callable | None, key: str, shared_ref: list, item: tuple):
    """One Ray task: the worker's state for `key`, built from the shared object on first use, then fn on the item.

    shared_ref is a one-element list so that Ray hands over the reference itself and the object is fetched
    only by a worker that has no state for the key yet.
    """
    if key not in _STATE:
        _STATE.clear()
        _STATE[key] = None if setup is None else setup(require_ray().get(shared_ref[0]))
    return fn(_STATE[key], *item)


class RayExecutor:
    """Items as Ray tasks on the cluster at `address` ("auto": a private local instance), joined on the first
    `map` and left by `close`. A task whose worker dies is rerun (max_retries); one that fails past its
    retries is a ClusterError, and what the stage already wrote is kept. `status(line)`, if given, sees a
    rate line (units per second, nodes alive) after each finished task."""

    in_process = False  # tasks run in other processes: what they get is pickled, and progress counts finished items

    def __init__(self, address: str = "auto", *, cpus_per_task: float = 1, gpus_per_task: float = 0,
                 max_retries: int = 3, status: Callable[[str], None] | None = None):
        self.address, self.cpus_per_task, self.gpus_per_task = address, cpus_per_task, gpus_per_task
        self.max_retries, self.status = max_retries, status
        self._ray, self._started = None, False

    def __enter__(self) -> "RayExecutor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._ray is not None:
            disconnect(self._started)
            self._ray, self._started = None, False

    def map(self, fn: Callable, items: Iterable[tuple], *, setup: Callable | None = None, shared: Any = None,
            key: str | None = None, ordered: bool = False, name: str = "task", what: str = "stage",
            sizes: Sequence[int] | None = None, unit: str = "tasks") -> Iterator[tuple[int, Any]]:
        """Submit every item at once; yield (index of the item, result) as tasks finish (ordered: in item order).

        key : names the workers' state; a later map with the same key reuses it (default: one per map).
        name : the tasks' process title (`ray::name`); what : the work, for a failure's message.
        sizes : each item's units (models, targets) for the rate line, default 1 per item.
        """
        items = list(items)
        if not items:
            return
        if self._ray is None:
            self._started = connect(self.address)
            self._ray = require_ray()
        ray = self._ray
        shared_ref = ray.put(shared)
        remote = task(ray, _run_item, name, self.cpus_per_task, self.gpus_per_task, self.max_retries)
        key = shared_ref.hex() if key is None else key
        pending = {remote.remote(fn, setup, key, [shared_ref], item): i for i, item in enumerate(items)}
        order = list(pending)
        began, done = time.perf_counter(), 0
        while pending:
            if ordered:
                finished = order.pop(0)
            else:
                (finished,), _ = ray.wait(list(pending), num_returns=1)
            try:
                result = ray.get(finished)
            except ray.exceptions.RayError as exc:
                raise task_failed(what, self.max_retries, exc) from None
            i = pending.pop(finished)
            done += 1 if sizes is None else sizes[i]
            if self.status:
                self.status(rate_line(done, began, time.perf_counter(), unit))
            yield i, result
