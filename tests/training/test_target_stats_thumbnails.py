"""Per-target margin summaries (chunked vs whole-array numpy), thumbnails and the run catalog."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from backend.store import catalog as run_catalog

from backend.store.manifest import update_manifest
from backend.store.run_dir import Run
from backend.store.shards import read_shard, read_shard_predictions, shard_ranges
from backend.store.schema import MARGINS, MASKS, SHARD, TARGET_ACCURACY, TARGET_MEAN_MARGIN, TARGET_PREDICTIONS, TARGET_SUMS

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
    shutil.copytree(tiny_run, run_dir, ignore=shutil.ignore_patterns(TARGET_MEAN_MARGIN.name, TARGET_ACCURACY.name,
                                                                      TARGET_SUMS.name))
    run = Run(run_dir)
    assert target_stats.stored_target_stats(run) is None
    target_stats.save_target_stats(run)
    mean, accuracy = target_stats.stored_target_stats(Run(run_dir))
    np.testing.assert_allclose(mean, np.asarray(run.margins).mean(axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(accuracy, (np.asarray(run.margins) > 0).mean(axis=0).astype(np.float32))
    MARGINS.path(run_dir).touch()  # a newer mtime alone changes nothing: the summary is keyed on the models counted
    assert target_stats.stored_target_stats(Run(run_dir)) is not None
    for artifact in (MASKS, MARGINS):  # margins of other models than the sums counted: stale
        np.save(artifact.path(run_dir), np.load(artifact.path(run_dir))[:-1])
    update_manifest(run_dir, n_models=59)
    assert target_stats.stored_target_stats(Run(run_dir)) is None


def test_prediction_counts_match_the_shards_predictions(tiny_run):
    run = Run(tiny_run)
    counts = target_stats.stored_prediction_counts(run)
    assert counts is not None and counts.dtype == np.int32 and counts.shape == (run.n_targets, len(run.class_names))
    predictions = np.concatenate([read_shard_predictions(tiny_run, s, e)
                                  for s, e in shard_ranges(tiny_run)])
    brute = np.array([[int((predictions[:, t] == c).sum()) for c in range(counts.shape[1])] for t in range(run.n_targets)])
    np.testing.assert_array_equal(counts, brute)
    # A model is right exactly when its margin is positive, i.e. it predicts the label.
    right = counts[np.arange(run.n_targets), np.asarray(run.labels)]
    np.testing.assert_array_equal(right, (np.asarray(run.margins) > 0).sum(axis=0))


def test_a_run_whose_shards_lack_predictions_has_no_counts(tiny_run, tmp_path):
    copy = tmp_path / "old"
    shutil.copytree(tiny_run, copy, ignore=shutil.ignore_patterns(TARGET_PREDICTIONS.name))
    for path in SHARD.glob(copy):  # a shard as written before predictions were stored
        with np.load(path) as shard:
            masks, margins = shard["masks"], shard["margins"]
        with open(path, "wb") as f:
            np.savez(f, masks=masks, margins=margins)
    run = Run(copy)
    assert read_shard_predictions(copy, *shard_ranges(copy)[0]) is None
    assert target_stats.prediction_counts(copy, len(run.margins), run.n_targets, len(run.class_names)) is None
    assert target_stats.stored_prediction_counts(run) is None and not run.has(TARGET_PREDICTIONS)
    masks, _ = read_shard(copy, *shard_ranges(copy)[0])  # the rest stays readable
    assert masks.dtype == bool


def test_prediction_queries_against_brute_force():
    rng = np.random.default_rng(3)
    counts = rng.multinomial(20, np.full(4, 0.25), size=300).astype(np.int32)
    labels = rng.integers(0, 4, 300)
    majority, share = target_stats.majority_prediction(counts)
    for t in range(300):
        assert counts[t, majority[t]] == counts[t].max() and majority[t] == min(np.flatnonzero(counts[t] == counts[t].max()))
        assert share[t] == counts[t].max() / 20
    got = target_stats.mistaken_targets(counts, labels, 100, 300, 1000)
    wrong = [t for t in range(100, 300) if majority[t] != labels[t]]
    assert sorted(got.tolist()) == wrong
    assert all(share[a] >= share[b] for a, b in zip(got, got[1:]))
    accuracy = rng.random(300).astype(np.float32)
    accuracy[150] = np.nan
    got = target_stats.unstable_targets(accuracy, 100, 300, 7)
    brute = sorted((t for t in range(100, 300) if t != 150), key=lambda t: (abs(float(accuracy[t]) - 0.5), t))[:7]
    assert got.tolist() == brute


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
