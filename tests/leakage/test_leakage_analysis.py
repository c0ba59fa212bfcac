"""analyze_leakage on a real tiny run with planted exact copies: stored lists equal brute force, recall is right."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from backend.datasets import write_npz_dataset
from backend.datasets.planted import shifted
from backend.leakage.analysis import (analyze_leakage, load_candidates, planted_ground_truth,
                             review_candidates)
from backend.leakage.candidates import NO_CANDIDATE, pixel_neighbours
from backend.store.errors import RunError
from backend.store.run_dir import Run
from backend.store.schema import CONTROL_FEATURES, IMAGES, LEAKAGE_SUMMARY, WEIGHTS


@pytest.fixture(scope="module")
def run(leakage_data_dir) -> Run:
    return Run(leakage_data_dir / "runs" / "planted")


def test_lists_equal_brute_force_over_the_stored_weights_and_features(run):
    c = load_candidates(run)
    k = c.summary["k"]
    weights = np.load(run.dir / "weights.npy")[run.n_train:]
    features = np.load(run.dir / "control_features.npy").astype(np.float64)
    assert features.shape[0] == run.n_targets
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-300)
    cosine = unit[run.n_train:] @ unit[:run.n_train].T
    for j in range(0, run.n_test, 7):
        positive = [i for i in np.argsort(-weights[j], kind="stable")[:k] if weights[j, i] > 0]
        np.testing.assert_array_equal(c.weight_top[j][: len(positive)], positive)
        assert (c.weight_top[j][len(positive):] == NO_CANDIDATE).all()
        np.testing.assert_allclose(np.sort(cosine[j])[::-1][:k], c.feature_similarity[j], atol=1e-5)
        np.testing.assert_allclose(cosine[j, c.feature_nn[j]], c.feature_similarity[j], atol=1e-5)
    pixels, pixel_similarity = pixel_neighbours(run.images[run.n_train:], run.images[:run.n_train], k)
    np.testing.assert_array_equal(c.pixel_nn, pixels)
    np.testing.assert_allclose(c.pixel_similarity, pixel_similarity, atol=1e-6)
    assert sorted(c.queue.tolist()) == list(range(run.n_test))
    assert np.all(np.diff(np.asarray(c.queue_score)[c.queue]) <= 0)


def test_recall_of_planted_exact_copies(run):
    c = load_candidates(run)
    planted_test, planted_train = planted_ground_truth(run)
    assert len(planted_test) == 12
    # Exact copies have cosine 1 with their source: the baseline must put each first.
    np.testing.assert_array_equal(c.feature_nn[planted_test, 0], planted_train)
    np.testing.assert_array_equal(c.pixel_nn[planted_test, 0], planted_train)
    recall = c.summary["planted"]["recall_at_10"]
    assert recall["baseline"] == recall["pixels"] == recall["combined"] == 1.0
    by_hand = np.mean([s in c.weight_top[t] for t, s in zip(planted_test, planted_train)])
    assert recall["datamodel"] == pytest.approx(by_hand, abs=1e-4)
    assert set(c.summary["planted"]["queue_average_precision"]) == {"datamodel", "baseline", "pixels", "combined"}
    on_disk = json.loads(LEAKAGE_SUMMARY.path(run.dir).read_text())
    assert on_disk["planted"] == c.summary["planted"]


def test_review_candidates_show_top_and_bottom_then_unseen_neighbours(run):
    c = load_candidates(run)
    weights = np.load(run.dir / "weights.npy")
    for test in range(0, run.n_test, 50):
        shown = review_candidates(run, c, test, n=5)
        trains = [x.train for x in shown]
        assert len(trains) == len(set(trains))
        top = [t for t in c.weight_top[test, :5] if t >= 0]
        bottom = [t for t in c.weight_bottom[test, :5] if t >= 0]
        assert trains[: len(top) + len(bottom)] == top + bottom
        extra = [x for x in shown if x.source == "features"]
        assert len(extra) == 5 and all(x.train in c.feature_nn[test] for x in extra)
        pixels = [x.train for x in shown if x.source == "pixels"]
        unseen = [t for t in c.pixel_nn[test] if t not in trains[: len(trains) - len(pixels)]]
        assert pixels == unseen[:5]
        for x in shown:
            assert x.weight == pytest.approx(weights[run.n_train + test, x.train])
            moved = [np.corrcoef(shifted(run.images[run.n_train + test:run.n_train + test + 1], dy, dx).ravel(),
                                 run.images[x.train].ravel())[0, 1] for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
            assert x.pixel == pytest.approx(max(moved), abs=1e-5)


def mapped_kib(path) -> int:
    """Resident KiB of this process's mappings of `path` (Linux /proc/self/smaps)."""
    total, current = 0, None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:  # a mapping's header line
            current = fields[5] if len(fields) > 5 else None
        elif fields[0] == "Rss:" and current == str(path):
            total += int(fields[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="reads Linux's /proc/self/smaps")
def test_reviewing_reads_rows_without_leaving_the_runs_arrays_mapped(run):
    # The dashboard reviews image after image: gathers from the memmaps would keep every touched page (and
    # its neighbours) resident, 750 MiB over 500 images at CIFAR scale; file reads keep none.
    # A fresh Run, so its memmaps are new mappings; other tests' maps of the same files may hold pages already.
    fresh = Run(run.dir)
    c = load_candidates(fresh)
    paths = [artifact.path(run.dir).resolve() for artifact in (WEIGHTS, IMAGES, CONTROL_FEATURES)]
    before = [mapped_kib(path) for path in paths]
    for test in range(fresh.n_test):
        review_candidates(fresh, c, test, n=5)
    assert [mapped_kib(path) for path in paths] == before


def test_missing_inputs_name_the_command_that_makes_them(run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run.dir, copy, ignore=shutil.ignore_patterns("weights.npy", "leakage"))
    with pytest.raises(RunError, match="precompute fit"):
        analyze_leakage(Run(copy))
    with pytest.raises(RunError, match="precompute analyze"):
        load_candidates(Run(copy))


def test_candidates_from_before_the_pixel_list_ask_for_a_new_analysis(run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run.dir, copy)
    summary = json.loads(LEAKAGE_SUMMARY.path(copy).read_text())
    del summary["pixels"]
    LEAKAGE_SUMMARY.path(copy).write_text(json.dumps(summary))
    with pytest.raises(RunError, match="leakage.json is corrupt \\(no 'pixels' entry\\).*precompute analyze"):
        load_candidates(Run(copy))


def test_a_rewritten_dataset_file_is_not_scored(run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run.dir, copy)
    spec = run.manifest["dataset"]["spec"]
    arrays = dict(np.load(spec[len("npz:"):]))
    arrays["planted_train"] = arrays["planted_train"][::-1].copy()
    arrays["images"][-1] = 255 - arrays["images"][-1]
    other = write_npz_dataset(tmp_path / "other.npz", arrays)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["dataset"]["spec"] = f"npz:{other}"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    summary = analyze_leakage(Run(copy), device="cpu")
    assert "changed since the run was trained" in summary["planted"]["note"]
    manifest["dataset"]["spec"] = "digits"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert "planted" not in analyze_leakage(Run(copy), device="cpu")
