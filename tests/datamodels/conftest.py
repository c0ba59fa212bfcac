"""A small random datamodel problem (fixed-size random subsets, margins with a sparse linear signal), and the
small npz run that test_fit_stream.py and test_fit_targets.py fit copies of, with its uninterrupted fit."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import FAST_TRAIN, run_cli
from tests.oracles import random_problem


@pytest.fixture(scope="module")
def problem():
    return random_problem()


FIT = ["--n-lambdas", "12", "--block-targets", "8", "--device", "cpu"]
OUTPUTS = ("weights.npy", "bias.npy", "lam.npy")


@pytest.fixture(scope="session")
def small_run(tmp_path_factory) -> Path:
    from sklearn.datasets import load_digits

    digits = load_digits()
    pick = np.random.default_rng(0).permutation(len(digits.target))[:160]
    tmp = tmp_path_factory.mktemp("fit-stream")
    np.savez(tmp / "digits160.npz", images=np.round(digits.images[pick] * 255 / 16).astype(np.uint8),
             labels=digits.target[pick], split=np.where(np.arange(160) < 120, "train", "test"))
    out = tmp / "run"
    run_cli("train", "--dataset", f"npz:{tmp / 'digits160.npz'}", "--models", "150", "--out", out,
            "--batch-models", "50", "--device", "cpu", *FAST_TRAIN, in_process=True)
    run_cli("train", "--dataset", f"npz:{tmp / 'digits160.npz'}", "--models", "60", "--seed", "1",
            "--out", tmp / "heldout", "--batch-models", "60", "--device", "cpu", *FAST_TRAIN, in_process=True)
    return out


@pytest.fixture(scope="session")
def reference(small_run, tmp_path_factory) -> dict:
    """An uninterrupted fit's outputs and fit.json."""
    out = tmp_path_factory.mktemp("reference") / "run"
    shutil.copytree(small_run, out)
    run_cli("fit", "--run", out, *FIT, in_process=True)
    return {**{name: np.load(out / name) for name in OUTPUTS}, "fit.json": json.loads((out / "fit.json").read_text())}
