"""A full disk during train (creation and shards), merge and fit: one clear line and exit 2, no temp file
left, the old outputs intact, and the same command finishes the run once space is freed.

The disk is simulated in-process: every file the run store and the fit stage open for writing is wrapped
so that its writes succeed up to a byte budget, write what still fits, then fail with ENOSPC, as a full
file system does. Budgets are fractions of what the uninterrupted command writes.
"""
from __future__ import annotations

import builtins
import errno
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from backend.store import artifacts, atomic, blocks, merge, shards
from precompute import cli
from tests.conftest import FAST_TRAIN, record_count


class Disk:
    """A byte budget shared by every file opened through `open` while installed (None: unlimited)."""

    def __init__(self):
        self.free: int | None = None
        self.written = 0

    def open(self, file, mode="r", *args, **kwargs):
        f = builtins.open(file, mode, *args, **kwargs)
        return _Limited(f, self) if any(c in mode for c in "wax+") else f


class _Limited:
    def __init__(self, f, disk: Disk):
        self._f, self._disk = f, disk

    def write(self, data):
        size = len(data.encode()) if isinstance(data, str) else memoryview(data).nbytes
        free = self._disk.free
        if free is not None and size > free:
            if free > 0 and not isinstance(data, str):
                self._f.write(memoryview(data).cast("B")[:free])
            self._disk.free = 0
            raise OSError(errno.ENOSPC, "No space left on device", self._f.name)
        if free is not None:
            self._disk.free = free - size
        self._disk.written += size
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


@pytest.fixture
def disk(monkeypatch) -> Disk:
    d = Disk()
    for module in (atomic, artifacts, shards, merge, blocks):  # every store module that opens a file to write it
        monkeypatch.setattr(module, "open", d.open, raising=False)
    return d


def run(argv, capsys) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    return code, [line for raw in err.splitlines() for line in [raw.split("\r")[-1].strip()] if line and "%|" not in line]


def leftovers(run: Path) -> list[Path]:
    return sorted(p for p in run.rglob(".*") if p.name.endswith(".tmp") or p.name.startswith(".transaction-"))


def snapshot(run: Path) -> dict[str, str]:
    return {p.relative_to(run).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file()}


def full_disk_then_resume(argv, disk: Disk, capsys, out: Path, fractions, matrix: str) -> None:
    """Measure what argv writes, then for each fraction: fail at that point, check, free the space, rerun."""
    pristine = out.with_name(out.name + "-pristine")
    if out.exists():
        shutil.copytree(out, pristine)
    disk.free, disk.written = None, 0
    assert run(argv, capsys)[0] == 0
    total, reference = disk.written, snapshot(out)
    for fraction in fractions:
        shutil.rmtree(out)
        if pristine.exists():
            shutil.copytree(pristine, out)
        before = {k: v for k, v in snapshot(out).items() if not k.startswith("shards/")} if out.exists() else {}
        disk.free = int(total * fraction)
        code, lines = run(argv, capsys)
        record_count(matrix, "one line, exit 2, no temp file" if code == 2 and len(lines) == 1 else "FAILED")
        assert code == 2 and len(lines) == 1 and "No space left on device" in lines[0], (fraction, lines)
        if out.exists():
            assert not leftovers(out), leftovers(out)
            now = snapshot(out)
            assert {k: now.get(k) for k in before} == before, "a full disk changed the old outputs"
        disk.free = None  # space freed
        assert run(argv, capsys)[0] == 0
        assert not leftovers(out)
        got = snapshot(out)
        assert {k: v for k, v in got.items() if k.endswith(".npy")} == \
               {k: v for k, v in reference.items() if k.endswith(".npy")}


def train_argv(out: Path, models: int = 8) -> list:
    return ["train", "--models", models, "--out", out, "--batch-models", "4", *FAST_TRAIN, "--device", "cpu"]


def test_train_on_a_full_disk_from_creation_to_merge(tmp_path, disk, capsys):
    # 0.02: while images.npy is written (creation); 0.5: among the shards; 0.97: in the final merge
    full_disk_then_resume(train_argv(tmp_path / "run"), disk, capsys, tmp_path / "run", (0.02, 0.5, 0.97),
                          "disk full: train")


def test_merge_on_a_full_disk(tmp_path, disk, capsys):
    out = tmp_path / "run"
    assert run([*train_argv(out), "--keep-shards"], capsys)[0] == 0
    for name in ("masks.npy", "margins.npy"):  # lost merged arrays: merge rebuilds them from the kept shards
        (out / name).unlink()
    full_disk_then_resume(["merge", "--run", out], disk, capsys, out, (0.1, 0.6, 0.99), "disk full: merge")


def test_fit_on_a_full_disk_keeps_the_old_fit(tmp_path, disk, capsys):
    from sklearn.datasets import load_digits

    digits = load_digits()
    npz = tmp_path / "d.npz"
    np.savez(npz, images=np.round(digits.images[:90] * 255 / 16).astype(np.uint8), labels=digits.target[:90],
             split=np.where(np.arange(90) < 60, "train", "test"))
    out = tmp_path / "run"
    assert run(["train", "--dataset", f"npz:{npz}", "--models", "24", "--out", out, *FAST_TRAIN], capsys)[0] == 0
    assert run(["fit", "--run", out, "--n-lambdas", "4", "--device", "cpu"], capsys)[0] == 0  # the old fit
    full_disk_then_resume(["fit", "--run", out, "--n-lambdas", "6", "--device", "cpu"], disk, capsys, out,
                          (0.05, 0.5, 0.98), "disk full: fit")
