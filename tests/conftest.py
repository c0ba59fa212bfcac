"""Shared fixtures: tiny real runs built in seconds by the real CLI."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Tiny but real: few models, few epochs, a narrow MLP.
FAST_TRAIN = ["--epochs", "3", "--hidden", "16"]


def run_cli(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python -m precompute ARGS` in a fresh process, as a user would."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, "-m", "precompute", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"precompute {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A digits run of 60 fast models (alpha 0.5, seed 0), trained once per test session."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    run_cli("train", "--dataset", "digits", "--alpha", "0.5", "--models", "60", "--seed", "0",
            "--out", out, "--batch-models", "30", *FAST_TRAIN)
    return out
