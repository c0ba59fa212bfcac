"""The run store's transactions: all of a stage's files or none, a commit a kill cut is finished by the next
open, temps of dead writers are removed (a live writer's are kept), and an interrupted run creation resumes."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from backend.store import atomic, schema
from backend.store.artifacts import read_array, write_array, write_json
from backend.store.atomic import delete, recover, transaction
from backend.store.run_dir import Run
from tests.conftest import FAST_TRAIN, ROOT, run_cli


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_three(run, value: float) -> None:
    write_array(run, schema.BIAS, np.full(4, value, np.float32))
    write_array(run, schema.LAM, np.full(4, value, np.float32))
    write_json(run, schema.FIT, {"value": value})


def state(run) -> tuple:
    return (float(np.load(run / "bias.npy")[0]), float(np.load(run / "lam.npy")[0]),
            json.loads((run / "fit.json").read_text())["value"])


def test_a_failing_stage_leaves_the_old_files_and_no_temp(tmp_path):
    write_three(tmp_path, 1.0)
    with pytest.raises(RuntimeError), transaction(tmp_path, "fit"):
        write_three(tmp_path, 2.0)
        assert float(read_array(tmp_path, schema.BIAS)[0]) == 2.0  # the stage reads its own writes
        assert float(np.load(tmp_path / "bias.npy")[0]) == 1.0  # nobody else sees them yet
        raise RuntimeError("killed")
    assert state(tmp_path) == (1.0, 1.0, 1.0)
    assert not list(tmp_path.glob(".*"))


def test_a_commit_cut_after_its_journal_is_finished_by_the_next_open(tmp_path, monkeypatch):
    write_three(tmp_path, 1.0)
    real_replace, calls = os.replace, []

    def die_after_one_rename(src, dst):
        if str(src).endswith(".tmp") and ".transaction-" not in str(dst):
            calls.append(dst)
            if len(calls) == 2:
                raise KeyboardInterrupt  # the process dies here
        real_replace(src, dst)
    monkeypatch.setattr(atomic.os, "replace", die_after_one_rename)
    with pytest.raises(KeyboardInterrupt), transaction(tmp_path, "fit"):
        write_three(tmp_path, 2.0)
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    assert sorted(state(tmp_path)) != [1.0, 1.0, 1.0] and sorted(state(tmp_path)) != [2.0, 2.0, 2.0]  # mixed, for now
    journal = tmp_path / ".transaction-fit.json"
    record = json.loads(journal.read_text())
    recover(tmp_path)  # its writer (this process) is alive: left alone
    assert journal.exists()
    journal.write_text(json.dumps(dict(record, pid=dead_pid())))
    recover(tmp_path)
    assert state(tmp_path) == (2.0, 2.0, 2.0) and not list(tmp_path.glob(".*"))


def test_only_the_temps_of_dead_writers_are_removed(tmp_path):
    mine = tmp_path / f".bias.npy.{os.getpid()}.abcdefgh.tmp"
    theirs = tmp_path / f".bias.npy.{dead_pid()}.abcdefgh.tmp"
    old_style = tmp_path / "structure" / ".pca_mean.npy.abcdefgh.tmp"
    old_style.parent.mkdir()
    for path in (mine, theirs, old_style):
        path.write_bytes(b"partial")
    recover(tmp_path)
    assert mine.exists() and not theirs.exists() and not old_style.exists()


def test_a_creation_cut_before_the_manifest_resumes(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "labels.npy").write_bytes(b"half")
    (out / "shards").mkdir()
    (out / f".images.npy.{dead_pid()}.abcdefgh.tmp").write_bytes(b"partial")
    run_cli("train", "--models", "2", "--out", out, *FAST_TRAIN, in_process=True)
    assert Run(out).manifest["n_models"] == 2
    assert not [p for p in out.rglob(".*")]


def test_a_deletion_is_part_of_the_commit(tmp_path, monkeypatch):
    """analyze drops an old representation baseline (save_pca without one): with its other files, or not at all."""
    from backend.structure import embeddings

    write_three(tmp_path, 1.0)
    ratio = schema.REPRESENTATION_RATIO.path(tmp_path)
    write_array(tmp_path, schema.REPRESENTATION_RATIO, np.ones(3, np.float32))
    with pytest.raises(RuntimeError), transaction(tmp_path, "analyze"):
        delete(ratio)
        write_three(tmp_path, 2.0)
        assert ratio.exists()  # nobody sees the deletion before the commit
        raise RuntimeError("killed")
    assert ratio.exists() and state(tmp_path) == (1.0, 1.0, 1.0)

    real_replace = os.replace
    monkeypatch.setattr(atomic.os, "replace", lambda src, dst: (_ for _ in ()).throw(KeyboardInterrupt)
                        if ".transaction-" not in str(dst) else real_replace(src, dst))
    with pytest.raises(KeyboardInterrupt), transaction(tmp_path, "analyze"):
        delete(ratio)
        write_three(tmp_path, 2.0)
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    assert ratio.exists()  # killed after the journal, before any rename: the next open finishes the commit
    journal = tmp_path / ".transaction-analyze.json"
    journal.write_text(json.dumps(dict(json.loads(journal.read_text()), pid=dead_pid())))
    recover(tmp_path)
    assert not ratio.exists() and state(tmp_path) == (2.0, 2.0, 2.0)

    write_array(tmp_path, schema.REPRESENTATION_RATIO, np.ones(3, np.float32))
    pca = embeddings.PCA(components=np.zeros((2, 4), np.float32), explained_variance=np.ones(2, np.float32),
                         mean=np.zeros(4, np.float32), total_variance=4.0, n_samples=4)
    with transaction(tmp_path, "analyze"):
        embeddings.save_pca(tmp_path, pca, np.zeros((6, 2), np.float32), None)
        assert ratio.exists()
    assert not ratio.exists() and not list(tmp_path.glob(".*"))


def test_written_files_honour_the_umask(tmp_path):
    """mkstemp's 0600 would survive the rename: a run's files get the mode open() gives (0644 under umask 022)."""
    write_array(tmp_path, schema.BIAS, np.zeros(4, np.float32))
    with open(tmp_path / "plain", "w"):
        pass
    assert (tmp_path / "bias.npy").stat().st_mode & 0o777 == (tmp_path / "plain").stat().st_mode & 0o777

    out = tmp_path / "run"  # a whole run, written by a process whose umask lets the group read but no one else
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, "-m", "precompute", "train", "--models", "2", "--out", str(out), *FAST_TRAIN],
                   cwd=ROOT, env=env, check=True, capture_output=True, preexec_fn=lambda: os.umask(0o027))
    modes = {p.relative_to(out).as_posix(): p.stat().st_mode & 0o777 for p in out.rglob("*") if p.is_file()}
    assert modes and set(modes.values()) == {0o640}, modes
