"""Blocked outputs: blocks written in place survive a restart, and commit with the rest of a stage's files."""
import numpy as np
import pytest

from backend.store.blocks import BlockedOutput
from backend.store.artifacts import read_array, read_json, write_json
from backend.store.atomic import transaction
from backend.store.schema import BIAS, FIT, WEIGHTS

ARRAYS = {"weights": ("float32", (10, 4)), "bias": ("float32", (10,))}


def _block(out, b):
    rows = out.rows(b)
    n = rows.stop - rows.start
    return {"weights": np.full((n, 4), b + 1, np.float32), "bias": np.arange(rows.start, rows.stop, dtype=np.float32)}


def test_blocks_resume_from_the_bitmap_and_restart_on_a_new_config(tmp_path):
    out = BlockedOutput(tmp_path, "fit", {"lam": 1}, ARRAYS, block_rows=3)
    assert out.n_blocks == 4 and out.missing() == [0, 1, 2, 3] and not out.resumed
    out.write(0, **_block(out, 0))
    out.write(2, **_block(out, 2))
    again = BlockedOutput(tmp_path, "fit", {"lam": 1}, ARRAYS, block_rows=3)
    assert again.resumed and again.missing() == [1, 3]
    assert np.array_equal(again.view("weights")[6:9], np.full((3, 4), 3, np.float32))
    other = BlockedOutput(tmp_path, "fit", {"lam": 2}, ARRAYS, block_rows=3)
    assert not other.resumed and other.missing() == [0, 1, 2, 3]
    assert BlockedOutput(tmp_path, "fit", {"lam": 2}, ARRAYS, block_rows=5).missing() == [0, 1]


def test_commit_renames_the_staged_arrays_with_the_stage_s_other_files(tmp_path):
    out = BlockedOutput(tmp_path, "fit", {}, ARRAYS, block_rows=4)
    for b in out.missing():
        out.write(b, **_block(out, b))
    with transaction(tmp_path, "fit"):
        out.commit({"weights": (WEIGHTS, {}), "bias": (BIAS, {})})
        write_json(tmp_path, FIT, {"n_targets": 10, "targets": "all", "iterations": {}})
        assert not WEIGHTS.path(tmp_path).exists()  # nothing visible before the commit
    out.discard()
    weights = read_array(tmp_path, WEIGHTS)
    assert weights.shape == (10, 4) and weights[9, 0] == 3
    assert np.array_equal(read_array(tmp_path, BIAS), np.arange(10, dtype=np.float32))
    assert read_json(tmp_path, FIT)["n_targets"] == 10
    assert not (tmp_path / ".partial" / "fit").exists()


def test_an_aborted_commit_keeps_the_staged_blocks(tmp_path):
    out = BlockedOutput(tmp_path, "fit", {}, ARRAYS, block_rows=10)
    out.write(0, **_block(out, 0))
    with pytest.raises(RuntimeError, match="boom"), transaction(tmp_path, "fit"):
        out.commit({"weights": (WEIGHTS, {}), "bias": (BIAS, {})})
        raise RuntimeError("boom")
    assert not WEIGHTS.path(tmp_path).exists()
    assert BlockedOutput(tmp_path, "fit", {}, ARRAYS, block_rows=10).missing() == []


def test_commit_refuses_unfinished_blocks_and_partial_writes(tmp_path):
    out = BlockedOutput(tmp_path, "fit", {}, ARRAYS, block_rows=5)
    with pytest.raises(ValueError, match="every array"):
        out.write(0, weights=np.zeros((5, 4), np.float32))
    out.write(0, **_block(out, 0))
    with pytest.raises(RuntimeError, match="1 of 2 blocks"), transaction(tmp_path, "fit"):
        out.commit({"weights": (WEIGHTS, {}), "bias": (BIAS, {})})
