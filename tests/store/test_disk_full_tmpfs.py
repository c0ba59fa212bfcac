"""A full disk for real: train, merge and fit on a small tmpfs, then a read-only one.

Each stage first runs with room to spare on its own tmpfs, which measures what it writes. Then a filler
file leaves only part of that free, and the stage runs again in a fresh process (a full tmpfs faults a
memory-mapped write with SIGBUS, which must not take the test with it): one line naming the full disk,
exit 2, no temp file, the old outputs intact. The filler is deleted (space freed) and the same command
finishes with the same arrays. tests/store/test_disk_full.py simulates the same in-process, byte by byte;
this is the file system's own ENOSPC and EROFS. Mounting needs root (CAP_SYS_ADMIN): elsewhere the tests
skip saying so.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest

from precompute import cli
from tests.conftest import FAST_TRAIN, record_count, run_cli


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size_bytes) -> a fresh tmpfs directory of that size; unmounted afterwards."""
    mounted = []

    def mount(size: int) -> Path:
        where = tmp_path / f"tmpfs-{len(mounted)}"
        where.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"mounting a tmpfs is not permitted here ({proc.stderr.strip() or proc.returncode}): "
                        "tests/store/test_disk_full.py simulates a full disk instead")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=True)


def used(where: Path) -> int:
    st = os.statvfs(where)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def fill_leaving(where: Path, free: int) -> Path:
    """A filler file that leaves `free` bytes (to a page) free on the file system of `where`."""
    st = os.statvfs(where)
    filler = where / f"filler-{uuid.uuid4().hex}"
    with open(filler, "wb") as f:
        os.posix_fallocate(f.fileno(), 0, max(0, st.f_bavail * st.f_frsize - free))
    return filler


def leftovers(run: Path) -> list[Path]:
    return sorted(p for p in run.rglob(".*") if p.name.endswith(".tmp") or p.name.startswith(".transaction-"))


def arrays(run: Path) -> dict[str, str]:
    """The run's arrays by content, without a stage's staging (.partial/, kept to resume from)."""
    return {p.relative_to(run).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*.npy")) if not p.relative_to(run).as_posix().startswith(".")}


def ok(*argv) -> None:
    """A command with room to spare, in-process (only the runs that hit the full disk need a process of their own)."""
    assert cli.main([str(a) for a in argv]) == 0, argv


def error_lines(stderr: str) -> list[str]:
    return [line for raw in stderr.splitlines() for line in [raw.split("\r")[-1].strip()] if line and "%|" not in line]


def fails_cleanly(argv: list, run: Path, matrix: str) -> None:
    """argv on a full disk: exit 2, one line naming it, no traceback, no temp file left in the run."""
    proc = run_cli(*argv, check=False)
    lines = error_lines(proc.stderr)
    ok = proc.returncode == 2 and len(lines) == 1 and "No space left on device" in lines[0]
    ok = ok and "Traceback" not in proc.stderr and not (run.exists() and leftovers(run))
    record_count(matrix, "one line, exit 2, no temp file" if ok else "FAILED")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, (proc.returncode, proc.stderr[-2000:])
    assert len(lines) == 1 and "No space left on device" in lines[0], lines
    assert not run.exists() or not leftovers(run), leftovers(run)


def train_argv(out: Path, *extra) -> list:
    return ["train", "--models", "8", "--out", out, "--batch-models", "4", *FAST_TRAIN, "--device", "cpu", *extra]


def test_train_on_a_full_tmpfs(tmpfs):
    disk = tmpfs(32 << 20)
    run = disk / "run"
    ok(*train_argv(run))
    budget, reference = used(disk), arrays(run)
    shutil.rmtree(run)
    # 0.2: while the run is created (images.npy); 0.9: among the shards or in the final merge
    for fraction in (0.2, 0.9):
        filler = fill_leaving(disk, int(budget * fraction))
        fails_cleanly(train_argv(run), run, "disk full (tmpfs): train")
        filler.unlink()  # space freed
        ok(*train_argv(run))  # the same command resumes (or starts) the run
        assert not leftovers(run) and arrays(run) == reference
        shutil.rmtree(run)


def test_merge_on_a_full_tmpfs(tmpfs):
    disk = tmpfs(32 << 20)
    run, pristine = disk / "run", disk / "run-pristine"
    ok(*train_argv(run, "--keep-shards"))
    for name in ("masks.npy", "margins.npy"):  # lost merged arrays: merge rebuilds them from the kept shards
        (run / name).unlink()
    shutil.copytree(run, pristine)
    argv = ["merge", "--run", run, "--keep-shards"]
    before = used(disk)
    ok(*argv)
    budget, reference = used(disk) - before, arrays(run)  # what the merge adds, and its arrays
    shutil.rmtree(run)
    shutil.copytree(pristine, run)
    filler = fill_leaving(disk, budget // 2)
    fails_cleanly(argv, run, "disk full (tmpfs): merge")
    filler.unlink()
    ok(*argv)
    assert not leftovers(run) and arrays(run) == reference


def test_fit_on_a_full_tmpfs_keeps_the_old_fit(tmpfs, tmp_path):
    from sklearn.datasets import load_digits

    digits = load_digits()
    npz = tmp_path / "d.npz"
    np.savez(npz, images=np.round(digits.images[:90] * 255 / 16).astype(np.uint8), labels=digits.target[:90],
             split=np.where(np.arange(90) < 60, "train", "test"))
    disk = tmpfs(32 << 20)
    run, pristine = disk / "run", disk / "run-pristine"
    ok("train", "--dataset", f"npz:{npz}", "--models", "24", "--out", run, *FAST_TRAIN)
    ok("fit", "--run", run, "--n-lambdas", "4", "--device", "cpu")  # the old fit
    old = arrays(run)
    shutil.copytree(run, pristine)
    argv = ["fit", "--run", run, "--n-lambdas", "6", "--device", "cpu"]
    ok(*argv)
    reference = arrays(run)
    shutil.rmtree(run)
    shutil.copytree(pristine, run)
    # the new fit's files sit beside the old ones until its commit: half of them fit
    budget = sum((run / name).stat().st_size for name in ("weights.npy", "bias.npy", "lam.npy"))
    filler = fill_leaving(disk, budget // 2)
    fails_cleanly(argv, run, "disk full (tmpfs): fit")
    assert arrays(run) == old, "a full disk changed the old fit"
    filler.unlink()
    ok(*argv)
    assert not leftovers(run) and arrays(run) == reference


def test_a_read_only_tmpfs_is_one_line_and_touches_nothing(tmpfs):
    disk = tmpfs(32 << 20)
    run = disk / "run"
    train = ["train", "--out", run, "--batch-models", "8", *FAST_TRAIN, "--device", "cpu"]
    ok(*train, "--models", "16")  # enough models to fit
    before = arrays(run)
    remount = subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True, text=True)
    if remount.returncode != 0:
        pytest.skip(f"remounting the tmpfs read-only is not permitted here ({remount.stderr.strip()})")
    try:  # three stages that must write: a fit, a top-up of the models, the control models
        for argv in (["fit", "--run", run, "--n-lambdas", "4", "--device", "cpu"],
                     [*train, "--models", "20"],
                     ["control", "--run", run, "--control-models", "2", "--device", "cpu"]):
            proc = run_cli(*argv, check=False)
            lines = error_lines(proc.stderr)
            good = proc.returncode == 2 and len(lines) == 1 and "Read-only file system" in lines[0]
            record_count("read-only file system (tmpfs)", "one line, exit 2" if good else "FAILED")
            assert good and "Traceback" not in proc.stderr, (argv[0], proc.returncode, proc.stderr[-2000:])
            assert arrays(run) == before
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)
