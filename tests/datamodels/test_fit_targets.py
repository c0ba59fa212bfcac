"""`fit --targets`: fit some targets, leave the rest unfitted (weights 0, bias and λ NaN), fill them in later
without refitting the first, resume a killed partial fit to the same bytes, and `eval` over fitted targets only.

Reuses test_fit_stream's small npz run (120 train / 40 test digits, 150 models; tests/datamodels/conftest.py)
and its blocks of 8 targets.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.conftest import run_cli
from tests.datamodels.conftest import FIT, OUTPUTS
from tests.datamodels.test_fit_stream import _fit_killed_after_two_blocks

N_TRAIN, N_TEST = 120, 40


def _outputs(run):
    return {name: np.load(run / name) for name in OUTPUTS}


def test_a_partial_fit_leaves_the_rest_unfitted_and_a_later_call_fills_them_in(small_run, reference, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    first = json.loads(run_cli("fit", "--run", run, *FIT, "--targets", "test", "--json", in_process=True).stdout)
    assert first["fitted_now"] == N_TEST and first["unfitted"] == "train"
    after_test = _outputs(run)
    assert (after_test["weights.npy"][:N_TRAIN] == 0).all()
    assert np.isnan(after_test["bias.npy"][:N_TRAIN]).all() and np.isnan(after_test["lam.npy"][:N_TRAIN]).all()
    assert np.isfinite(after_test["lam.npy"][N_TRAIN:]).all()
    assert json.loads((run / "fit.json").read_text())["targets"] == list(range(N_TRAIN, N_TRAIN + N_TEST))
    # eval scores the fitted targets only, and says which are not
    metrics = json.loads(run_cli("eval", "--run", run, "--heldout", small_run.parent / "heldout", "--no-complexity",
                                 "--json", in_process=True).stdout)
    assert metrics["unfitted"] == {"n_train": N_TRAIN, "n_test": 0, "targets": "train"}
    assert metrics["lds"]["train"]["n_targets"] == 0 and metrics["lds"]["test"]["n_targets"] == N_TEST
    assert np.isnan(np.load(run / "lds.npy")[:N_TRAIN]).all()

    # the default, all: fills in the rest
    second = json.loads(run_cli("fit", "--run", run, *FIT, "--json", in_process=True).stdout)
    assert (second["fitted_now"], second["kept"], second["unfitted"]) == (N_TRAIN, N_TEST, None)
    after_all = _outputs(run)
    for name in OUTPUTS:  # the first call's rows, byte for byte
        assert after_all[name][N_TRAIN:].tobytes() == after_test[name][N_TRAIN:].tobytes(), name
    for name in OUTPUTS:  # and the whole equals one uninterrupted fit of every target (the same blocks)
        np.testing.assert_array_equal(after_all[name], reference[name])
    assert json.loads((run / "fit.json").read_text())["targets"] == "all"
    np.testing.assert_array_equal(np.load(run / "weights_test_by_train.npy"), after_all["weights.npy"][N_TRAIN:].T)
    again = json.loads(run_cli("fit", "--run", run, *FIT, "--json", in_process=True).stdout)  # nothing left to fit
    assert again["fitted_now"] == 0
    assert all(np.load(run / name).tobytes() == after_all[name].tobytes() for name in OUTPUTS)


def test_a_killed_partial_fit_resumes_to_the_same_bytes(small_run, tmp_path):
    whole = tmp_path / "whole"
    shutil.copytree(small_run, whole)
    run_cli("fit", "--run", whole, *FIT, "--targets", "test", in_process=True)
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    done = _fit_killed_after_two_blocks(run, "--targets", "test")
    assert 2 <= done.sum() < len(done) == N_TEST // 8
    assert not (run / "weights.npy").exists()
    result = json.loads(run_cli("fit", "--run", run, *FIT, "--targets", "test", "--json", in_process=True).stdout)
    assert result["resumed_blocks"] >= 2
    for name in OUTPUTS + ("weights_test_by_train.npy",):
        assert np.load(run / name).tobytes() == np.load(whole / name).tobytes(), name
    assert not (run / ".partial").exists()


def test_other_settings_start_afresh(small_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    run_cli("fit", "--run", run, *FIT, "--targets", "test:0-7", in_process=True)
    result = json.loads(run_cli("fit", "--run", run, *FIT[:-2], "--eps", "1e-2", "--targets", "test:8-15",
                                "--json", in_process=True).stdout)
    assert (result["kept"], result["fitted_now"]) == (0, 8)  # test:0-7 were fitted with another eps: dropped
    assert np.isfinite(np.load(run / "lam.npy")).sum() == 8


@pytest.mark.parametrize("spec, message", [("test:3,test:1-4", "listed twice"), ("test:40", "out of range"),
                                           ("train:5-2", "must not be below"), ("tests", "bad target"),
                                           ("train:-1", "bad target")])
def test_a_bad_target_list_is_one_line_and_exit_2(small_run, tmp_path, spec, message):
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    bad = run_cli("fit", "--run", run, "--targets", spec, check=False)
    assert bad.returncode == 2 and message in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert not (run / ".partial").exists() and not (run / "weights.npy").exists()
