"""Training a run's models on a Ray cluster: each chunk of model indices is one Ray task.

The tasks return their chunk (masks, margins, predictions) and the driver writes each shard atomically,
so workers need no shared file system with the run, and a shard exists only once its models are whole.
A worker that dies takes its task with it; Ray runs the task again (`max_retries`), and a model's
subset and randomness come from (run seed, index) only, so a retried chunk trains the same models.
Rerunning the same command after the driver dies trains only the chunks no shard holds yet.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from typing import Callable, Iterator

import numpy as np

from backend.datasets import Dataset

_DATA: dict = {}  # per worker process: the dataset's tensors, built once, reused by every task it runs


class ClusterError(ValueError):
    """The cluster cannot be reached, or a task kept failing; finished models are kept."""


def _require_ray():
    try:
        import ray
    except ImportError:
        raise ClusterError("--ray needs Ray: install the cluster extra with `pip install -e '.[cluster]'`") from None
    return ray


def connect(address: str, cpus: int | None = None):
    """Join the cluster at `address`, or with "auto" start a private local Ray instance (shut down by `disconnect`).

    Returns whether this call started the instance. Workers import the project from the same checkout
    (PYTHONPATH), so a multi-node cluster needs it installed at the same path on every node.
    """
    ray = _require_ray()
    code_dir = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in (code_dir, os.environ.get("PYTHONPATH")) if p)}}
    if ray.is_initialized():
        return False
    if address == "auto":
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, runtime_env=env,
                 object_store_memory=256 * 2**20, logging_level=logging.ERROR)
        return True
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:  # Ray itself retries an unanswered address for minutes
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as exc:
        raise ClusterError(f"--ray {address}: no Ray cluster answers there ({exc.strerror or exc}): start one with "
                           "`ray start --head` and pass its address, or use --ray auto") from None
    try:
        ray.init(address=address, log_to_driver=False, runtime_env=env, logging_level=logging.ERROR)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterError(f"--ray {address}: no Ray cluster answers there ({' '.join(str(exc).split())[:200]}): start "
                         "one with `ray start --head` and pass its address, or use --ray auto") from None
    return False


def disconnect(started: bool) -> None:
    if started:
        _require_ray().shutdown()


def nodes_alive() -> int:
    """Nodes (head and workers) of the cluster that are alive now, for the progress line."""
    return sum(1 for node in _require_ray().nodes() if node.get("Alive"))


def _chunk_task(ds_ref: list, seed: int, start: int, end: int, alpha: float, arch: str, hparams: dict, device: str):
    """One Ray task: models [start, end) of the run, trained in this worker (its GPU when it was given one)."""
    import ray

    from backend.training.engine import TrainingData, resolve_device, use_all_cores
    from backend.training.train_stage import train_chunk

    dev = resolve_device(device)
    key = (ds_ref[0].hex(), str(dev))  # the dataset travels once per worker, as an object reference
    if key not in _DATA:
        if dev.type == "cpu":
            use_all_cores()
        _DATA.clear()
        ds = ray.get(ds_ref[0])
        _DATA[key] = (ds.n_train, TrainingData.from_dataset(ds, dev))
    n_train, data = _DATA[key]
    masks, margins, predictions = train_chunk(data, n_train, seed, start, end, alpha, arch, hparams)
    return start, masks, margins, predictions


def train_on_ray(ds: Dataset, chunks: list[tuple[int, int]], *, seed: int, alpha: float, arch: str, hparams: dict,
                 device: str, address: str = "auto", cpus_per_task: float = 1, gpus_per_task: float = 0,
                 max_retries: int = 3, status: Callable[[str], None] | None = None
                 ) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """Train every chunk as a Ray task; yields (start, masks, margins, predictions) as tasks finish.

    status, if given, is called with a short line (models/s, nodes alive) after each finished task.
    """
    if not chunks:
        return
    ray = _require_ray()
    started = connect(address)
    try:
        task = ray.remote(_chunk_task).options(num_cpus=cpus_per_task, num_gpus=gpus_per_task,
                                               max_retries=max_retries, name="train_chunk")
        data = ray.put(ds)
        pending = [task.remote([data], seed, s, e, alpha, arch, hparams, device) for s, e in chunks]
        began, done = time.perf_counter(), 0
        while pending:
            finished, pending = ray.wait(pending, num_returns=1)
            try:
                result = ray.get(finished[0])
            except ray.exceptions.RayError as exc:
                raise ClusterError(f"a Ray training task failed after {max_retries} retries "
                                   f"({' '.join(str(exc).split())[:300]}); finished models are kept: rerun the same "
                                   "command to train the rest") from None
            done += len(result[1])
            if status:
                status(f"{done / (time.perf_counter() - began):.2f} models/s, {nodes_alive()} nodes alive")
            yield result
    finally:
        disconnect(started)
