"""Engines a stage's chunks of work run on: this process, or Ray for many machines (`train --ray`, `fit --ray`).

executor  LocalExecutor and RayExecutor, the `map` over chunks a stage is handed
Tasks hand their results back and the driver writes them into the run through the same atomic shards
and blocked outputs a single process uses, so a run built on a cluster is the run one process builds,
and a rerun after any failure resumes from what is on disk. This package imports nothing from the stages.
"""
from __future__ import annotations

import logging
import os
import socket


class ClusterError(ValueError):
    """The cluster cannot be reached, or a task kept failing; finished work is kept."""


def require_ray():
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
    ray = require_ray()
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
        raise _unreachable(address, exc.strerror or str(exc)) from None
    try:
        ray.init(address=address, log_to_driver=False, runtime_env=env, logging_level=logging.ERROR)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise _unreachable(address, " ".join(str(exc).split())[:200]) from None
    return False


def _unreachable(address: str, why: str) -> ClusterError:
    return ClusterError(f"--ray {address}: no Ray cluster answers there ({why}): start one with `ray start --head` "
                        "and pass its address, or use --ray auto")


def disconnect(started: bool) -> None:
    if started:
        require_ray().shutdown()


def nodes_alive() -> int:
    """Nodes (head and workers) of the cluster that are alive now, for the progress line."""
    return sum(1 for node in require_ray().nodes() if node.get("Alive"))


def task(ray, fn, name: str, cpus_per_task: float, gpus_per_task: float, max_retries: int):
    """`fn` as a Ray task asking for its CPUs and GPUs, rerun when its worker dies; processes show `ray::name`."""
    return ray.remote(fn).options(num_cpus=cpus_per_task, num_gpus=gpus_per_task, max_retries=max_retries, name=name)


def task_failed(what: str, max_retries: int, exc: Exception) -> ClusterError:
    """The error of a Ray task that failed past its retries: finished work is kept, so the rerun does the rest."""
    return ClusterError(f"a Ray {what} task failed after {max_retries} retries "
                        f"({' '.join(str(exc).split())[:300]}); finished work is kept: rerun the same "
                        "command to do the rest")


def rate_line(done: int, began: float, now: float, unit: str) -> str:
    return f"{done / max(now - began, 1e-9):.2f} {unit}/s, {nodes_alive()} nodes alive"
