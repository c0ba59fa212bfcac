"""`train --ray` on a real local Ray cluster: a head and a worker node, on loopback only.

The cluster's runs equal the single-process run; a worker SIGKILLed mid-run loses no model and duplicates
none; a killed driver's rerun trains only what no shard holds. Tiny models: 24 digits models, 2 per task.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from backend.store.schema import SHARD
from tests.conftest import FAST_TRAIN, ROOT, run_cli

ray = pytest.importorskip("ray", reason="the cluster extra is not installed: pip install -e '.[cluster]'")
pytestmark = pytest.mark.slow

MODELS = ["--dataset", "digits", "--alpha", "0.5", "--models", "24", "--seed", "3", "--batch-models", "2", "--keep-shards",
          "--device", "cpu", *FAST_TRAIN]
RAY_BIN = Path(sys.executable).parent / "ray"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Ray swaps a loopback address for the machine's outward one unless told it runs single-machine; the driver
# processes the tests start are told so, and reach the loopback-only cluster below.
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "OMP_WAIT_POLICY": "PASSIVE"}


@pytest.fixture(scope="module")
def cluster():
    """HOST:PORT of a real two-node cluster on 127.0.0.1: a head and a worker node (own GCS/raylet processes,
    1 CPU each), started by Ray's multi-node harness `ray.cluster_utils.Cluster`."""
    from ray.cluster_utils import Cluster

    nodes = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False,
        "object_store_memory": 100 * 2**20})
    try:
        nodes.add_node(num_cpus=1, node_ip_address="127.0.0.1", object_store_memory=100 * 2**20)
        yield nodes.address
    finally:
        nodes.shutdown()


def _cli(*args, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", **LOOPBACK)
    result = subprocess.run([sys.executable, "-m", "precompute", *map(str, args)], env=env, capture_output=True,
                            text=True, timeout=600)
    if check:
        assert result.returncode == 0, result.stderr[-2000:]
    return result


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single") / "run"
    run_cli("train", *MODELS, "--out", out)
    return out


def _assert_same_run(run: Path, reference: Path) -> None:
    assert np.array_equal(np.load(run / "masks.npy"), np.load(reference / "masks.npy"))
    np.testing.assert_allclose(np.load(run / "margins.npy"), np.load(reference / "margins.npy"), atol=1e-4, rtol=0)


def test_a_cluster_run_equals_the_single_process_run(cluster, reference, tmp_path):
    result = _cli("train", *MODELS, "--out", tmp_path / "run", "--ray", cluster)
    _assert_same_run(tmp_path / "run", reference)
    assert "nodes alive" in result.stderr


def _task_pids() -> list[int]:
    """Ray worker processes running a training task (Ray titles them after the task's name)."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return [int(line.split(None, 1)[0]) for line in out.splitlines() if "ray::train_chunk" in line]


def _train_in_background(out: Path, cluster: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), **LOOPBACK)
    return subprocess.Popen([sys.executable, "-m", "precompute", "train", *MODELS, "--out", str(out), "--ray", cluster],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_worker_killed_mid_run_loses_and_duplicates_no_model(cluster, reference, tmp_path):
    driver = _train_in_background(tmp_path / "run", cluster)
    deadline, killed = time.time() + 120, None
    while killed is None and time.time() < deadline and driver.poll() is None:
        pids = _task_pids()
        if pids and SHARD.glob(tmp_path / "run"):  # mid-run: some chunks done, one in flight
            os.kill(pids[0], signal.SIGKILL)
            killed = pids[0]
        time.sleep(0.05)
    _, stderr = driver.communicate(timeout=300)
    assert killed is not None, "no training task was seen running"
    assert driver.returncode == 0, stderr
    _assert_same_run(tmp_path / "run", reference)
    starts = [int(SHARD.fields_of(p, tmp_path / "run")["start"]) for p in SHARD.glob(tmp_path / "run")]
    assert sorted(starts) == list(range(0, 24, 2))  # every chunk once


def test_a_killed_driver_s_rerun_trains_only_the_rest(cluster, reference, tmp_path):
    driver = _train_in_background(tmp_path / "run", cluster)
    deadline = time.time() + 120
    while len(SHARD.glob(tmp_path / "run")) < 2 and time.time() < deadline and driver.poll() is None:
        time.sleep(0.05)
    driver.kill()
    driver.wait()
    kept = len(SHARD.glob(tmp_path / "run"))
    assert 2 <= kept < 12
    result = _cli("train", *MODELS, "--out", tmp_path / "run", "--ray", cluster, "--json")
    assert '"trained_now": ' + str(24 - 2 * kept) in result.stdout
    _assert_same_run(tmp_path / "run", reference)


def test_ray_flags_are_checked_at_the_edge(tmp_path):
    bad = run_cli("train", *MODELS, "--out", tmp_path / "r", "--ray", "not an address", check=False)
    assert bad.returncode == 2 and "is not a Ray address" in bad.stderr
    stray = run_cli("train", *MODELS, "--out", tmp_path / "r", "--gpus-per-task", "1", check=False)
    assert stray.returncode == 2 and "add --ray" in stray.stderr
    nobody = _cli("train", *MODELS, "--out", tmp_path / "r", "--ray", f"127.0.0.1:{_free_port()}", check=False)
    assert nobody.returncode == 2 and "no Ray cluster answers there" in nobody.stderr
