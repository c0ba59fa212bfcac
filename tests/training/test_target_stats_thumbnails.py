"""Per-target margin summaries (chunked vs whole-array numpy), thumbnails and the run catalog."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from backend.store import catalog as run_catalog

from backend.store import run_dir as run_store
from backend.store.schema import MARGINS, TARGET_ACCURACY, TARGET_MEAN_MARGIN

from backend.training import target_stats
from backend.datasets.thumbnails import upscale


@pytest.mark.parametrize("chunk_bytes", [1, 400, 1 << 30])
def test_target_stats_in_chunks_equal_numpy(tmp_path, chunk_bytes):
    margins = np.random.default_rng(0).normal(0.5, 1.0, (37, 50)).astype(np.float32)
    np.save(tmp_path / "m.npy", margins)
    mean, accuracy = target_stats.target_stats(np.load(tmp_path / "m.npy", mmap_mode="r"), chunk_bytes)
    np.testing.assert_allclose(mean, margins.mean(axis=0), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(accuracy, (margins > 0).mean(axis=0).astype(np.float32))


def test_stored_target_stats_round_trip_and_go_stale(tiny_run, tmp_path):
    run_dir = tmp_path / "copy"
    shutil.copytree(tiny_run, run_dir, ignore=shutil.ignore_patterns(TARGET_MEAN_MARGIN.name, TARGET_ACCURACY.name))
    run = run_store.Run(run_dir)
    assert target_stats.stored_target_stats(run) is None
    target_stats.save_target_stats(run)
    mean, accuracy = target_stats.stored_target_stats(run_store.Run(run_dir))
    np.testing.assert_allclose(mean, np.asarray(run.margins).mean(axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(accuracy, (np.asarray(run.margins) > 0).mean(axis=0).astype(np.float32))
    MARGINS.path(run_dir).touch()  # margins newer than the summary: it no longer describes them
    assert target_stats.stored_target_stats(run_store.Run(run_dir)) is None


@pytest.mark.parametrize("shape, size, factor", [((8, 8, 1), 96, 12), ((32, 32, 3), 96, 3), ((32, 32, 3), 20, 1)])
def test_upscale_is_whole_factor_nearest_neighbour(shape, size, factor):
    image = np.random.default_rng(0).integers(256, size=shape, dtype=np.uint8)
    big = upscale(image, size)
    assert big.shape[:2] == (shape[0] * factor, shape[1] * factor) and big.dtype == np.uint8
    want = image if shape[-1] == 3 else image[..., 0]
    np.testing.assert_array_equal(big[::factor, ::factor], want)
    np.testing.assert_array_equal(big[factor - 1::factor, factor - 1::factor], want)


def test_list_runs_finds_only_directories_with_a_manifest(tmp_path, monkeypatch):
    assert run_catalog.list_runs(tmp_path) == []
    for name in ("b", "a"):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "manifest.json").write_text(json.dumps({}))
    (tmp_path / "runs" / "not-a-run").mkdir()
    assert run_catalog.list_runs(tmp_path) == ["a", "b"]
    monkeypatch.setenv(run_catalog.DATA_DIR_ENV, str(tmp_path))
    assert run_catalog.data_dir() == tmp_path
    monkeypatch.delenv(run_catalog.DATA_DIR_ENV)
    assert run_catalog.data_dir() == run_catalog.DEFAULT_DATA_DIR
