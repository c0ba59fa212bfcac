"""`make fashion`, the resumable full-size Fashion-MNIST sequence, on a small slice of the real files: killed twice
(mid-train, then mid-analyses) and rerun, it ends with the same files, byte for byte, as one uninterrupted run;
rerun when done, it trains, fits and recomputes nothing."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, write_fashion_slice

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
# The first 400 training and 100 test images and the pairs: resuming to the same bytes shows on a fifth of the session's
# slice (fashion_mnist_slice) as well, in about half the CPU time (its fit in a fifth).
N_TRAIN, N_TEST = 402, 102


@pytest.fixture(scope="module")
def small_slice(tmp_path_factory) -> Path:
    return write_fashion_slice(tmp_path_factory.mktemp("fashion-small"), N_TRAIN - 2, N_TEST - 2)[0]


def make_fashion(run: Path, folder: Path) -> subprocess.Popen:
    """`make fashion` on the slice with tiny settings, in its own process group (so a kill takes every stage)."""
    settings = [f"FASHION_RUN={run}", f"FASHION_DATASET=idx:{folder}", "FASHION_MODELS=16", "FASHION_HELDOUT=8",
                "FASHION_TRAIN=--arch mlp --hidden 8 --epochs 2 --alpha 0.5 --precision fp32 --batch-models 4",
                "FASHION_ANALYZE=--n-control 1 --components 4 --clusters-per-class 2",
                "FASHION_METHODS=datamodels diff-of-means"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    return subprocess.Popen(["make", "--no-print-directory", "-C", str(ROOT), "fashion", f"BIN={BIN}",
                             "-o", f"{BIN}/.installed", *settings], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-3000:]
    return out


def kill_when(proc: subprocess.Popen, ready, timeout: float = 600) -> None:
    """SIGKILL the whole sequence (a power cut: no handler runs) once ready() holds."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"make ended before the kill point:\n{proc.communicate()[0][-3000:]}"
        assert time.monotonic() < deadline, "the kill point never came"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def run_files(run: Path) -> dict[str, bytes]:
    """Every array of the run (the stages' results) by relative path, and methods-eval's LDS."""
    files = {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*.npy"))}
    report = json.loads((run / "attribution" / "methods_eval.json").read_text())
    files["lds"] = json.dumps({name: m["lds"] for name, m in report["methods"].items()}, sort_keys=True).encode()
    return files


def test_a_killed_sequence_resumes_to_the_uninterrupted_result(small_slice, tmp_path):
    folder = small_slice
    reference = tmp_path / "reference"
    finish(make_fashion(reference, folder))

    run = tmp_path / "killed"
    kill_when(make_fashion(run, folder), lambda: len(list((run / "shards").glob("*"))) >= 1)  # mid-train
    assert not (run / "masks.npy").exists()
    kill_when(make_fashion(run, folder), lambda: (run / "metrics.json").exists())  # mid-analyses
    assert not (run / "attribution" / "methods_eval.json").exists()
    out = finish(make_fashion(run, folder))
    assert f"0 datamodels fitted ({N_TEST} kept" in out  # the fit finished before the second kill is kept
    assert " eval " not in out  # so is the held-out evaluation

    expected, got = run_files(reference), run_files(run)
    assert sorted(got) == sorted(expected)
    assert [name for name in expected if got[name] != expected[name]] == []
    assert np.load(run / "weights.npy", mmap_mode="r").shape == (N_TRAIN + N_TEST, N_TRAIN)

    # The results after train's (whose no-op rerun refreshes the manifest and the target summary) stay untouched.
    results = [run / name for name in ("weights.npy", "fit.json", "lds.npy", "metrics.json", "analysis.json")]
    results += [p for folder in ("structure", "leakage", "attribution") for p in (run / folder).rglob("*")]
    stamps = {p: p.stat().st_mtime_ns for p in results}
    out = finish(make_fashion(run, folder))
    assert "0 trained now" in out and "0 datamodels fitted" in out and "Nothing to be done for 'fashion-analyses'" in out
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
