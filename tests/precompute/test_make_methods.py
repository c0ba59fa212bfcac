"""`make methods` (run by `make run`): the cheap methods' scores and their yardsticks, so the Methods page has a table."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from tests.conftest import ROOT


@pytest.mark.slow
def test_make_methods_scores_the_cheap_methods_and_their_lds(dashboard_data_dir, tmp_path):
    run = shutil.copytree(dashboard_data_dir / "runs" / "digits-tiny", tmp_path / "run")
    shutil.rmtree(run / "attribution")  # the dashboard fixture's own scores: make methods starts without any
    bin_dir = Path(sys.executable).parent
    # -o: the venv is this interpreter's; never let make rebuild it from this checkout's pyproject.toml.
    subprocess.run(["make", "--no-print-directory", "-o", f"{bin_dir}/.installed", "methods", f"RUN={run}",
                    f"BIN={bin_dir}"], cwd=ROOT, check=True, capture_output=True, text=True, timeout=600)
    record = json.loads((run / "attribution" / "methods_eval.json").read_text())
    methods = record["methods"]
    assert set(methods) == {"datamodels", "diff-of-means", "empirical-influence", "representation", "influence"}
    assert methods["influence"]["config"]["params"] == "last"
    assert all(np.isfinite(m["lds"]["mean"]) for m in methods.values())
    # The datamodels' LDS, by brute force: Spearman over the held-out models of each test target's predicted and
    # real margin, averaged over the targets where it is defined.
    n_train = len(np.load(run / "masks.npy", mmap_mode="r")[0])
    weights = np.load(run / "weights.npy")[n_train:]
    masks, margins = np.load(run / "heldout" / "masks.npy"), np.load(run / "heldout" / "margins.npy")[:, n_train:]
    with warnings.catch_warnings():  # a constant margin column: Spearman undefined, skipped as methods-eval does
        warnings.simplefilter("ignore")
        rhos = [spearmanr(masks @ w, m).statistic for w, m in zip(weights, margins.T)]
    finite = np.isfinite(rhos)
    assert methods["datamodels"]["lds"]["n_targets"] == finite.sum()
    assert methods["datamodels"]["lds"]["mean"] == pytest.approx(np.mean(np.asarray(rhos)[finite]), abs=1e-5)
