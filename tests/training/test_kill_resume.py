"""A run killed with SIGKILL at any moment resumes with no model lost or duplicated."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np

from backend.store.shards import shard_ranges
from tests.conftest import FAST_TRAIN, ROOT, run_cli


def test_sigkill_mid_training_then_resume_matches_uninterrupted(tmp_path, tiny_run):
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "precompute", "train", "--models", "60", "--out", str(out), "--batch-models", "5", *FAST_TRAIN]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(shard_ranges(out)) < 3:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # mid-chunk: the next shard is being trained
    proc.wait()
    held = shard_ranges(out)
    assert 3 <= len(held) < 12, f"kill did not land mid-run: {held}"

    summary = run_cli("train", "--models", "60", "--out", out, "--batch-models", "5", *FAST_TRAIN, "--json")
    assert '"n_models": 60' in summary.stdout
    trained_now = int(summary.stdout.split('"trained_now":')[1].split(",")[0])
    assert trained_now == 60 - 5 * len(held)
    assert np.array_equal(np.load(out / "masks.npy"), np.load(tiny_run / "masks.npy"))
    np.testing.assert_allclose(np.load(out / "margins.npy"), np.load(tiny_run / "margins.npy"), atol=1e-4)
