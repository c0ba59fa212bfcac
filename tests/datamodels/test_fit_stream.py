"""The fit stage streams and resumes: real processes killed mid-fit and mid-commit, float16 weights, --memory.

A small npz run (120 train / 40 test digits, 150 models, `--epochs 3 --hidden 16`) fits in seconds; the
fit runs in blocks of 8 targets so a kill lands between blocks.
"""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from backend.store.run_dir import Run
from tests.conftest import ROOT, run_cli
from tests.datamodels.conftest import FIT, OUTPUTS


def _fit_killed_after_two_blocks(run: Path, *extra: str) -> np.ndarray:
    """SIGKILL a `fit` of run once two of its blocks are done; returns the completion bitmap it left."""
    proc = subprocess.Popen([sys.executable, "-m", "precompute", "fit", "--run", str(run), *FIT, *extra], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done_file = run / ".partial" / "fit" / "done.npy"
    deadline = time.monotonic() + 120
    done = np.zeros(0, dtype=bool)
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            done = np.load(done_file)
        except (OSError, ValueError):  # not created yet, or being replaced
            pass
        if done.sum() >= 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the fit ended before two of its blocks were done"
    return done


def _assert_outputs_equal(run: Path, reference: dict) -> None:
    for name in OUTPUTS:
        got = np.load(run / name)
        assert got.dtype == reference[name].dtype and np.array_equal(got, reference[name], equal_nan=True), name


def test_a_fit_killed_between_blocks_resumes_to_the_uninterrupted_result(small_run, reference, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    done = _fit_killed_after_two_blocks(run)
    assert 2 <= done.sum() < len(done)
    assert not (run / "weights.npy").exists() and not (run / "fit.json").exists()  # nothing half-visible
    kept = int(np.load(run / ".partial" / "fit" / "done.npy").sum())
    result = run_cli("fit", "--run", run, *FIT, "--json")
    assert json.loads(result.stdout)["resumed_blocks"] == kept >= 2
    _assert_outputs_equal(run, reference)
    assert not (run / ".partial").exists()


_KILL_AFTER_FIRST_RENAME = """
import os, signal, sys
from backend.store import atomic
apply = atomic._apply_journal
def first_rename_then_die(run, journal):
    real = os.replace
    def replace(src, dst):
        real(src, dst)
        os.kill(os.getpid(), signal.SIGKILL)
    os.replace = replace
    apply(run, journal)
atomic._apply_journal = first_rename_then_die
from precompute import cli
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_kill_between_the_final_renames_is_finished_by_the_next_open(small_run, reference, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    run_cli("fit", "--run", run, "--n-lambdas", "3", "--block-targets", "40", "--device", "cpu",  # an old fit
            in_process=True)
    old = {name: np.load(run / name) for name in OUTPUTS}
    proc = subprocess.run([sys.executable, "-c", _KILL_AFTER_FIRST_RENAME, "fit", "--run", str(run), *FIT], cwd=ROOT,
                          capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    journals = list(run.glob(".transaction-*"))
    assert len(journals) == 1  # cut inside the commit: one file renamed, the rest pending
    renamed = [name for name in OUTPUTS + ("fit.json",) if (run / name).exists() and
               (name == "fit.json" and json.loads((run / name).read_text())["n_lambdas"] == 12 or
                name != "fit.json" and not np.array_equal(np.load(run / name), old[name], equal_nan=True))]
    assert len(renamed) == 1, renamed
    Run(run)  # any open of the run finishes the commit
    assert not list(run.glob(".transaction-*"))
    _assert_outputs_equal(run, reference)
    assert json.loads((run / "fit.json").read_text())["n_lambdas"] == 12


def test_float16_weights_keep_the_lds_and_every_reader_works(small_run, reference, tmp_path):
    from backend.counterfactuals.predict import predict_removal
    from backend.datamodels.queries import top_weights, weight_profile
    from backend.leakage.candidates import weight_extremes
    from backend.store.rows import read_row, read_rows
    from backend.store.schema import WEIGHTS

    runs, lds = {}, {}
    for dtype in ("float32", "float16"):
        runs[dtype] = tmp_path / dtype
        shutil.copytree(small_run, runs[dtype])
        run_cli("fit", "--run", runs[dtype], *FIT, "--dtype", dtype, in_process=True)
        result = run_cli("eval", "--run", runs[dtype], "--heldout", small_run.parent / "heldout", "--no-complexity",
                         "--json", in_process=True)
        lds[dtype] = {split: json.loads(result.stdout)["lds"][split]["mean"] for split in ("test", "train")}
    full, half = (Run(runs[dtype]) for dtype in ("float32", "float16"))
    w32, w16 = full.array(WEIGHTS), half.array(WEIGHTS)
    assert w16.dtype == np.float16 and w32.dtype == np.float32
    np.testing.assert_array_equal(w16, reference["weights.npy"].astype(np.float16))  # the same fit, stored rounded
    for split in ("test", "train"):
        assert abs(lds["float16"][split] - lds["float32"][split]) <= 0.005, lds
    # Every reader casts a row or a block, never the whole matrix.
    target = half.n_train + 3
    assert read_rows(w16, np.arange(half.n_train, half.n_targets)).dtype == np.float32
    pos, neg = top_weights(read_row(w16, target), 5)
    np.testing.assert_array_equal(np.sort(pos), np.sort(top_weights(read_row(w32, target), 5)[0]))
    assert len(weight_profile(read_row(w16, target))[0]) == np.count_nonzero(read_row(w16, target))
    np.testing.assert_allclose(weight_extremes(w16, 4)[1], weight_extremes(w32, 4)[1], rtol=1e-3, atol=1e-6)
    removed = np.sort(pos[:3])
    zero = np.zeros(half.n_targets)
    p16, p32 = (predict_removal(r, target, removed, control=zero) for r in (half, full))
    np.testing.assert_allclose(p16.test_delta, p32.test_delta, rtol=1e-2, atol=1e-3)


def test_memory_flag_sets_the_block_and_rejects_nonsense(small_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    bad = run_cli("fit", "--run", run, "--memory", "lots", check=False)
    assert bad.returncode == 2 and "not a memory size" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    small = run_cli("fit", "--run", run, "--memory", "1MiB", check=False, in_process=True)
    assert small.returncode == 2 and "too little" in small.stderr and "--memory" in small.stderr
    assert not (run / ".partial").exists() and not (run / "weights.npy").exists()
    result = run_cli("fit", "--run", run, "--n-lambdas", "3", "--memory", "401MiB", "--device", "cpu", "--json",
                     in_process=True)
    # fixed: 400 MiB base + 150·120 mask bytes + 2·(135 + 15 + 150)·120 row-set bytes + 150·120/2 working-set
    # bytes + 16·120² Gram bytes; per target: 4·(5·150 + 47·120) bytes; (401 MiB − fixed) // per target = 28
    assert json.loads(result.stdout)["block_targets"] == 28


def test_the_fit_writes_the_test_weights_transposed_and_removals_read_them(small_run, reference, tmp_path):
    from backend.counterfactuals.predict import removal_deltas
    from backend.store.schema import WEIGHTS_BY_TRAIN

    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    run_cli("fit", "--run", run, *FIT, "--memory", "256MiB", in_process=True)
    weights = np.load(run / "weights.npy")
    n_train = weights.shape[1]
    np.testing.assert_array_equal(np.load(run / WEIGHTS_BY_TRAIN.name), weights[n_train:].T)
    removed = np.array([3, 17, 40, 41, 42, 99])
    expected = -weights[n_train:][:, removed].astype(np.float64).sum(axis=1)
    np.testing.assert_allclose(removal_deltas(Run(run), removed), expected, rtol=1e-12, atol=1e-12)
    (run / WEIGHTS_BY_TRAIN.name).unlink()  # a run fitted before the file existed: the row-block path
    np.testing.assert_allclose(removal_deltas(Run(run), removed), expected, rtol=1e-12, atol=1e-12)
