"""`fit --ray auto`: blocks of targets as tasks of a private local Ray instance, the same fit as one process."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from tests.conftest import FAST_TRAIN, run_cli

pytest.importorskip("ray", reason="the cluster extra is not installed: pip install -e '.[cluster]'")
pytestmark = pytest.mark.slow

FIT = ["--n-lambdas", "3", "--device", "cpu", "--block-targets", "40"]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """24 models on an npz of 60 train and 30 test digits: 90 targets, so three blocks of 40 (the last short)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pick = np.random.default_rng(0).permutation(len(digits.target))[:90]
    folder = tmp_path_factory.mktemp("fit-ray")
    np.savez(folder / "digits90.npz", images=np.round(digits.images[pick] * 255 / 16).astype(np.uint8),
             labels=digits.target[pick], split=np.where(np.arange(90) < 60, "train", "test"))
    run_cli("train", "--dataset", f"npz:{folder / 'digits90.npz'}", "--models", "24", "--out", folder / "run",
            "--batch-models", "24", *FAST_TRAIN)
    return folder / "run"


def _raylets() -> int:
    out = subprocess.run(["ps", "-eo", "args="], capture_output=True, text=True).stdout
    return sum("raylet" in line.split(" ", 1)[0] for line in out.splitlines())


def test_fit_on_ray_equals_fit_and_shuts_its_instance_down(small_run, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    # One answer whatever the engine: the single process sums with 2 threads, a Ray task of 1 CPU with one,
    # so float summation orders differ; the tie rule (lasso.improves) keeps the chosen λ, and the weights
    # agree to the solver's tolerance, on a 20-λ path with the default patience.
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    local = tmp_path / "local"
    shutil.copytree(small_run, local)
    path = ["--n-lambdas", "20", *FIT[2:]]
    run_cli("fit", "--run", local, *path)  # on a copy: a fit with the same settings keeps a fitted run's targets
    single = {name: np.load(local / f"{name}.npy") for name in ("weights", "bias", "lam")}
    before = _raylets()
    result = run_cli("fit", "--run", run, *path, "--ray", "auto", "--cpus-per-task", "1")
    assert "nodes alive" in result.stderr
    np.testing.assert_allclose(np.load(run / "lam.npy"), single["lam"], rtol=1e-6)  # λ_max to float32 rounding
    for name in ("weights", "bias"):
        np.testing.assert_allclose(np.load(run / f"{name}.npy"), single[name], atol=1e-2, rtol=0, err_msg=name)
    assert _raylets() == before, "fit --ray auto left its local Ray instance running"
    assert not (run / ".partial").exists()
