"""`train --ray`: each chunk of model indices is one Ray task.

The tasks return their chunk (masks, margins, predictions) and the driver writes each shard atomically,
so workers need no shared file system with the run, and a shard exists only once its models are whole.
A worker that dies takes its task with it; Ray runs the task again (`max_retries`), and a model's
subset and randomness come from (run seed, index) only, so a retried chunk trains the same models.
Rerunning the same command after the driver dies trains only the chunks no shard holds yet.
"""
from __future__ import annotations

import time
from typing import Callable, Iterator

import numpy as np

from backend.cluster import gather, rate_line, session, task
from backend.datasets import Dataset

_DATA: dict = {}  # per worker process: the dataset's tensors, built once, reused by every task it runs


def _chunk_task(ds_ref: list, seed: int, start: int, end: int, alpha: float, arch: str, hparams: dict, device: str,
                precision: str):
    """One Ray task: models [start, end) of the run, trained in this worker (its GPU when it was given one)."""
    import ray

    from backend.training.engine import TrainingData, resolve_device, use_all_cores
    from backend.training.train_stage import train_chunk

    dev = resolve_device(device)
    key = (ds_ref[0].hex(), str(dev), precision)  # the dataset travels once per worker, as an object reference
    if key not in _DATA:
        if dev.type == "cpu":
            use_all_cores()
        _DATA.clear()
        ds = ray.get(ds_ref[0])
        _DATA[key] = (ds.n_train, TrainingData.from_dataset(ds, dev, precision))
    n_train, data = _DATA[key]
    masks, margins, predictions = train_chunk(data, n_train, seed, start, end, alpha, arch, hparams)
    return start, masks, margins, predictions


def train_on_ray(ds: Dataset, chunks: list[tuple[int, int]], *, seed: int, alpha: float, arch: str, hparams: dict,
                 device: str, precision: str = "fp32", address: str = "auto", cpus_per_task: float = 1, gpus_per_task: float = 0,
                 max_retries: int = 3, status: Callable[[str], None] | None = None
                 ) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """Train every chunk as a Ray task; yields (start, masks, margins, predictions) as tasks finish.

    precision : the run's resolved precision ("fp32" or "bf16"), which every worker trains in.
    status, if given, is called with a short line (models/s, nodes alive) after each finished task.
    """
    if not chunks:
        return
    with session(address) as ray:
        train = task(ray, _chunk_task, "train_chunk", cpus_per_task, gpus_per_task, max_retries)
        data = ray.put(ds)
        pending = [train.remote([data], seed, s, e, alpha, arch, hparams, device, precision) for s, e in chunks]
        began, done = time.perf_counter(), 0
        for result in gather(ray, pending, "training", max_retries):
            done += len(result[1])
            if status:
                status(rate_line(done, began, time.perf_counter(), "models"))
            yield result
