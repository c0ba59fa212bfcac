"""`fit --ray`: blocks of targets as Ray tasks, written by the driver into the fit's blocked outputs.

A task opens the run by path (so the nodes need the run on a shared file system, read-only) and returns
its block; the driver writes blocks in target order through the completion bitmap, exactly as the
single-process fit does, so a kill anywhere resumes from the finished blocks and the result is the same
fit. A target no validation model leaves out borrows the median λ ratio of the blocks before it: the
tasks start with the ratios on disk, and a block that needs more is solved again once its predecessors
are written. Ray gives a task as many threads as it asks CPUs (OMP_NUM_THREADS), and a block's solve
depends on the thread count through float summation order: a fit on Ray equals a single-process fit run
with the same number of threads.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from backend.cluster import gather, rate_line, session, task

_FITTERS: dict = {}  # per worker process: the run's fitter (its masks on the device), kept across blocks


def _block_task(run_dir: str, settings: dict, device: str, columns: np.ndarray, ratios: np.ndarray):
    from backend.datamodels.fit import solve_block
    return solve_block(run_dir, settings, device, columns, ratios, cache=_FITTERS)


def fit_on_ray(out, run_dir, columns: np.ndarray, todo: list[int], settings: dict, step: Callable[[int], None],
               steps_per_target: int, *, address: str = "auto", device: str = "auto", cpus_per_task: float = 1,
               gpus_per_task: float = 0, max_retries: int = 3, status: Callable[[str], None] | None = None) -> None:
    """Solve the blocks `todo` of the BlockedOutput `out` as Ray tasks and write them in order."""
    from backend.datamodels.fit import prior_ratios

    if not todo:
        return
    with session(address) as ray:
        solve = task(ray, _block_task, "fit_block", cpus_per_task, gpus_per_task, max_retries)
        known = prior_ratios(out, todo[0])  # complete for the first block only
        pending = {b: solve.remote(str(run_dir), settings, device, columns[out.rows(b)], known) for b in todo}
        began, done = time.perf_counter(), 0
        for block in todo:
            result = next(gather(ray, [pending.pop(block)], "fit", max_retries))
            if result["unvalidated"].any() and block != todo[0]:
                ratios = prior_ratios(out, block)
                result = next(gather(ray, [solve.remote(str(run_dir), settings, device, columns[out.rows(block)],
                                                       ratios)], "fit", max_retries))
            out.write(block, **result)
            rows = out.rows(block)
            done += rows.stop - rows.start
            step((rows.stop - rows.start) * steps_per_target)
            if status:
                status(rate_line(done, began, time.perf_counter(), "targets"))
