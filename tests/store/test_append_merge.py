"""Merges append: a top-up writes only its new models' rows, deletes the shards it verified, and a real
SIGKILL at any step of it loses no model (the rerun equals an uninterrupted merge)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from backend.store.errors import RunError
from backend.store.manifest import init_run
from backend.store.run_dir import Run
from backend.store.shards import done_models, missing_ranges, shard_ranges, write_shard
from backend.store.schema import MARGINS, MASKS, SHARD, TARGET_SUMS
from backend.training import target_stats
from backend.training.merge_stage import merge_run
from tests.conftest import FAST_TRAIN, ROOT, run_cli

N_TRAIN, N_TEST, N_CLASSES, SHARD_MODELS = 40, 24, 3, 10


def _models(lo: int, hi: int, dtype=np.float32):
    """Masks, margins and predictions of models [lo, hi), each a function of its index alone."""
    rows = [np.random.default_rng(m) for m in range(lo, hi)]
    masks = np.stack([r.random(N_TRAIN) < 0.5 for r in rows])
    margins = np.stack([r.normal(0.3, 1.0, N_TRAIN + N_TEST) for r in rows]).astype(dtype)
    predictions = np.stack([r.integers(0, N_CLASSES, N_TRAIN + N_TEST) for r in rows]).astype(np.int16)
    return masks, margins, predictions


def _new_run(path, dtype="float32"):
    dataset = {"name": "synthetic", "n_train": N_TRAIN, "n_test": N_TEST, "class_names": ["a", "b", "c"],
               "image_shape": [2, 2, 1]}
    manifest = {"dataset": dataset, "alpha": 0.5, "seed": 0, "arch": "mlp", "hparams": {}, "margins_dtype": dtype}
    init_run(path, manifest, np.zeros(N_TRAIN + N_TEST, np.int64), np.zeros((N_TRAIN + N_TEST, 2, 2, 1), np.uint8))
    return path


def _add_shards(path, lo, hi, dtype="float32"):
    for s in range(lo, hi, SHARD_MODELS):
        write_shard(path, s, *_models(s, s + SHARD_MODELS, dtype), dtype=dtype)


def _merge(path, keep_shards=False):
    return merge_run(path, N_TRAIN, N_TRAIN + N_TEST, keep_shards)


def _assert_holds(path, n, dtype=np.float32):
    """masks.npy/margins.npy hold exactly models [0, n), readable by plain numpy; the summaries match them."""
    masks, margins, predictions = _models(0, n, dtype)
    np.testing.assert_array_equal(np.load(MASKS.path(path), mmap_mode="r"), masks)
    got = np.load(MARGINS.path(path), mmap_mode="r")
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, margins)
    run = Run(path)
    assert run.manifest["n_models"] == n
    mean, accuracy = target_stats.stored_target_stats(run)
    np.testing.assert_allclose(mean, margins.astype(np.float64).mean(axis=0), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(accuracy, (margins > 0).mean(axis=0).astype(np.float32))
    brute = np.stack([(predictions == c).sum(axis=0) for c in range(N_CLASSES)], axis=1)
    np.testing.assert_array_equal(target_stats.stored_prediction_counts(run), brute)


def test_top_ups_append_delete_shards_and_keep_the_record(tmp_path):
    path = _new_run(tmp_path / "run")
    _add_shards(path, 0, 50)
    first = _merge(path)
    assert (first["n_models"], first["added"], first["shards_deleted"]) == (50, 50, 5)
    assert SHARD.glob(path) == []
    _assert_holds(path, 50)
    # With the shards gone the merged arrays are the record of which models are done.
    assert done_models(path).sum() == 50 and missing_ranges(path, 70) == [(50, 70)]
    _add_shards(path, 50, 70)
    _add_shards(path, 80, 90)  # beyond a gap: not merged, kept
    second = _merge(path, keep_shards=True)
    assert (second["n_models"], second["added"], second["shards_deleted"]) == (70, 20, 0)
    _assert_holds(path, 70)
    assert shard_ranges(path) == [(50, 60), (60, 70), (80, 90)]
    assert missing_ranges(path, 100) == [(70, 80), (90, 100)]
    third = _merge(path)  # nothing new: the kept shards are checked against the merged rows, then deleted
    assert (third["added"], third["bytes_written"] < 1024, third["shards_deleted"]) == (0, True, 2)
    assert shard_ranges(path) == [(80, 90)]
    _assert_holds(path, 70)


def test_a_shard_that_differs_from_the_merged_rows_is_kept(tmp_path):
    path = _new_run(tmp_path / "run")
    _add_shards(path, 0, 20)
    _merge(path, keep_shards=True)
    masks, margins, predictions = _models(0, 10)
    write_shard(path, 0, masks, margins + 1, predictions)
    with pytest.raises(RunError, match="000000000-000000010.npz differs from models 0..10"):
        _merge(path)
    assert (0, 10) in shard_ranges(path)


def test_float16_runs_merge_float16_and_other_shards_are_refused(tmp_path):
    path = _new_run(tmp_path / "run", "float16")
    _add_shards(path, 0, 20, "float16")
    _merge(path)
    _assert_holds(path, 20, np.float16)
    _add_shards(path, 20, 30, "float32")
    with pytest.raises(RunError, match="holds float32 margins but the run stores float16"):
        _merge(path)


# A real SIGKILL just after one step of a merge: each point wraps the function whose return ends that step
# (the merge's own code carries no hook). Run in the merge's process before it starts.
_KILL_AT = """
import os, signal
from pathlib import Path
from backend.store import merge
def kill_after(owner, name, calls=1, when=lambda *args: True):
    real, seen = getattr(owner, name), []
    def wrapped(*args, **kwargs):
        result = real(*args, **kwargs)
        if when(*args):
            seen.append(1)
            if len(seen) == calls:
                os.kill(os.getpid(), signal.SIGKILL)
        return result
    setattr(owner, name, wrapped)
point = {point!r}
if point == "merge:rows":  # the first shard's masks and margins rows written
    kill_after(merge._Growable, "write_rows", calls=2)
elif point == "merge:masks-header":  # masks.npy's header grown, margins.npy's not
    kill_after(merge._Growable, "commit")
elif point == "merge:headers":  # both headers grown, the manifest not yet committed
    kill_after(merge._Growable, "commit", calls=2)
elif point == "merge:committed":  # the manifest committed, no shard deleted yet
    merge._delete_merged_shards = lambda *args: os.kill(os.getpid(), signal.SIGKILL)
elif point == "merge:deleting":  # the first merged shard deleted
    kill_after(Path, "unlink", when=lambda path, *rest: path.parent.name == "shards")
"""


def _cli_merge(path, kill_at=None):
    """`merge` in a subprocess, SIGKILLed just after the step `kill_at` names (KILL_POINTS) where given;
    returns (exit status, its /proc/self/io wchar: bytes it passed to write, stderr)."""
    code = ("import runpy, sys; sys.argv = ['precompute', 'merge', '--run', sys.argv[1]]\n"
            + (_KILL_AT.format(point=kill_at) if kill_at else "") +
            "try:\n    runpy.run_module('precompute', run_name='__main__')\n"
            "finally:\n    print(open('/proc/self/io').read(), file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code, str(path)], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)
    wchar = [int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("wchar:")]
    return proc.returncode, (wchar[0] if wchar else None), proc.stderr


def test_a_ten_percent_top_up_writes_about_ten_percent_of_the_run(tmp_path):
    path = _new_run(tmp_path / "run")
    _add_shards(path, 0, 200)
    assert _cli_merge(path)[0] == 0
    run_bytes = MASKS.path(path).stat().st_size + MARGINS.path(path).stat().st_size
    _add_shards(path, 200, 220)
    status, wchar, stderr = _cli_merge(path)
    assert status == 0, stderr
    new_rows = 20 * (N_TRAIN + 4 * (N_TRAIN + N_TEST))
    summaries = TARGET_SUMS.path(path).stat().st_size + 3 * (N_TRAIN + N_TEST) * 4 + (N_TRAIN + N_TEST) * N_CLASSES * 4
    # Every byte the process wrote: the new rows, the summaries (a few KiB here), the manifest and the line.
    assert new_rows <= wchar <= new_rows + summaries + 16384, (wchar, new_rows, run_bytes)
    assert wchar < 0.2 * run_bytes
    assert f"merge: 220 models in {path} (wrote" in stderr and "deleted 2 shards" in stderr
    _assert_holds(path, 220)


KILL_POINTS = ["merge:rows", "merge:masks-header", "merge:headers", "merge:committed", "merge:deleting"]


@pytest.mark.parametrize("point", KILL_POINTS)
def test_sigkill_at_each_step_of_a_merge_loses_nothing(tmp_path, point):
    path = _new_run(tmp_path / "run")
    _add_shards(path, 0, 30)
    assert _cli_merge(path)[0] == 0
    _add_shards(path, 30, 60)
    status, _, _ = _cli_merge(path, point)
    assert status == -9, f"the kill at {point} did not land"
    # Whatever a plain reader sees now is a prefix of the models, never a torn row.
    seen = np.load(MARGINS.path(path), mmap_mode="r")
    np.testing.assert_array_equal(seen, _models(0, len(seen))[1])
    # A Run reads the models of the last committed merge, even where a header already grew past them.
    run = Run(path)
    assert len(run.masks) == len(run.margins) == run.manifest["n_models"] in (30, 60)
    status, _, stderr = _cli_merge(path)
    assert status == 0, stderr
    _assert_holds(path, 60)
    assert SHARD.glob(path) == []
    assert json.loads((path / "manifest.json").read_text())["n_models"] == 60


def test_a_copy_merged_uninterrupted_is_byte_identical_to_a_killed_and_rerun_one(tmp_path):
    path = _new_run(tmp_path / "run")
    _add_shards(path, 0, 40)
    twin = tmp_path / "twin"
    shutil.copytree(path, twin)
    assert _cli_merge(path, "merge:rows")[0] == -9
    assert _cli_merge(path)[0] == 0 and _cli_merge(twin)[0] == 0
    for artifact in (MASKS, MARGINS):
        assert artifact.path(path).read_bytes() == artifact.path(twin).read_bytes()


def test_train_dtype_float16_is_recorded_and_a_top_up_keeps_it(tmp_path):
    out = tmp_path / "half"
    run_cli("train", "--models", "4", "--out", out, "--batch-models", "4", "--dtype", "float16", *FAST_TRAIN,
            in_process=True)
    assert json.loads((out / "manifest.json").read_text())["margins_dtype"] == "float16"
    assert np.load(MARGINS.path(out), mmap_mode="r").dtype == np.float16 and SHARD.glob(out) == []
    refused = run_cli("train", "--models", "8", "--out", out, "--dtype", "float32", *FAST_TRAIN, check=False)
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 2 and len(lines) == 1 and "stores float16 margins: top it up with --dtype float16" in lines[0]
    run_cli("train", "--models", "8", "--out", out, "--batch-models", "4", *FAST_TRAIN, in_process=True)  # no --dtype
    margins = np.load(MARGINS.path(out), mmap_mode="r")
    assert margins.shape[0] == 8 and margins.dtype == np.float16
    mean, _ = target_stats.stored_target_stats(Run(out))
    np.testing.assert_allclose(mean, np.asarray(margins, dtype=np.float64).mean(axis=0), rtol=1e-5, atol=1e-5)
