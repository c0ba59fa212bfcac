"""`python -m precompute plant-leaks`: the file it writes, and one-line errors with exit code 2."""
import json

import numpy as np
import pytest

from backend.datasets import load_dataset
from backend.datasets.planted import plant_leaks
from tests.conftest import run_cli


def test_writes_the_dataset_and_its_ground_truth(tmp_path):
    out = tmp_path / "sub" / "planted.npz"
    proc = run_cli("plant-leaks", "--dataset", "digits", "--n", "7", "--noise", "0.02", "--seed", "4", "--out", out, "--json")
    summary = json.loads(proc.stdout)
    assert summary["dataset"] == f"npz:{out}" and summary["shift"] is True and summary["n"] == 7
    want, truth = plant_leaks(load_dataset("digits"), n=7, noise=0.02, seed=4)
    with np.load(out, allow_pickle=False) as got:
        assert set(got.files) == set(want)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
    assert summary["planted_test"] == truth["planted_test"].tolist()
    assert summary["planted_train"] == truth["planted_train"].tolist()
    ds = load_dataset(f"npz:{out}")
    np.testing.assert_array_equal(ds.test_labels[truth["planted_test"]], ds.train_labels[truth["planted_train"]])


def test_no_shift_and_no_noise_give_exact_copies(tmp_path):
    out = tmp_path / "exact.npz"
    summary = json.loads(run_cli("plant-leaks", "--n", "5", "--noise", "0", "--no-shift", "--out", out, "--json").stdout)
    ds = load_dataset(f"npz:{out}")
    np.testing.assert_array_equal(ds.test_images[summary["planted_test"]], ds.train_images[summary["planted_train"]])


@pytest.mark.parametrize("args, message", [
    (["--n", "0"], "must be at least 1"),
    (["--n", "600"], "cannot plant 600 leaks"),
    (["--noise", "-0.1"], "is negative"),
    (["--noise", "x"], "is not a number"),
    (["--dataset", "nope"], "unknown dataset"),
])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, args, message):
    out = tmp_path / "x.npz"
    proc = run_cli("plant-leaks", *args, "--out", out, check=False)
    assert proc.returncode == 2 and message in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()
