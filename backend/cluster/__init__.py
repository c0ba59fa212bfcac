"""Ray as the engine for many machines: `train --ray` (training.py) and `fit --ray` (fit.py).

Tasks hand their results back and the driver writes them into the run through the same atomic shards
and blocked outputs a single process uses, so a run built on a cluster is the run one process builds,
and a rerun after any failure resumes from what is on disk.
"""
from __future__ import annotations

import logging
import os
import socket
from contextlib import contextmanager


class ClusterError(ValueError):
    """The cluster cannot be reached, or a task kept failing; finished work is kept."""


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
        _require_ray().shutdown()


def nodes_alive() -> int:
    """Nodes (head and workers) of the cluster that are alive now, for the progress line."""
    return sum(1 for node in _require_ray().nodes() if node.get("Alive"))


@contextmanager
def session(address: str):
    """Ray, connected to `address` for the block (a private instance for "auto", shut down after it)."""
    ray = _require_ray()
    started = connect(address)
    try:
        yield ray
    finally:
        disconnect(started)


def task(ray, fn, name: str, cpus_per_task: float, gpus_per_task: float, max_retries: int):
    """`fn` as a Ray task asking for its CPUs and GPUs, rerun when its worker dies; processes show `ray::name`."""
    return ray.remote(fn).options(num_cpus=cpus_per_task, num_gpus=gpus_per_task, max_retries=max_retries, name=name)


def gather(ray, pending: list, what: str, max_retries: int):
    """Yield the results of Ray tasks as they finish; a task that failed past its retries is a ClusterError."""
    while pending:
        finished, pending = ray.wait(pending, num_returns=1)
        try:
            result = ray.get(finished[0])
        except ray.exceptions.RayError as exc:
            raise ClusterError(f"a Ray {what} task failed after {max_retries} retries "
                               f"({' '.join(str(exc).split())[:300]}); finished work is kept: rerun the same "
                               "command to do the rest") from None
        yield result


def rate_line(done: int, began: float, now: float, unit: str) -> str:
    return f"{done / max(now - began, 1e-9):.2f} {unit}/s, {nodes_alive()} nodes alive"
