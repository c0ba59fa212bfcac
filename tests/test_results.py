"""`results` (backend.results): leak counts against counts over the stored lists, the flagged images against the
stored self-scores, the LDS table against methods_eval.json, the stage table against a GNU time log."""
import json

import numpy as np
import pytest
from PIL import Image

from backend.results import SCALE, flagged, stage_name
from backend.store.run_dir import Run
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def planted_results(leakage_data_dir, tmp_path_factory):
    """`near-duplicates` on the planted digits (12 exact copies), then `results` on the run trained on them."""
    out = tmp_path_factory.mktemp("results")
    pairs = out / "near_duplicates.csv"
    run_cli("near-duplicates", "--dataset", f"npz:{leakage_data_dir / 'planted.npz'}", "--radius", "0",
            "--max-shift", "0", "--out", pairs)
    report = json.loads(run_cli("results", "--run", leakage_data_dir / "runs" / "planted", "--pairs", pairs,
                                "--out", out / "report", "--json").stdout)
    return leakage_data_dir / "runs" / "planted", pairs, out / "report", report


def test_leak_counts_equal_a_count_over_the_stored_lists(planted_results):
    run_dir, pairs, out, report = planted_results
    lines = pairs.read_text().splitlines()[1:]
    truth = [(int(t), int(r)) for t, r, _ in (line.split(",") for line in lines)]
    planted = np.load(run_dir.parent.parent / "planted.npz")
    assert set(zip(planted["planted_test"].tolist(), planted["planted_train"].tolist())) <= set(truth)
    for name, file in (("top weights", "weight_top"), ("features", "feature_nn"), ("pixels", "pixel_nn"),
                       ("combined", "combined")):
        rows = np.load(run_dir / "leakage" / f"{file}.npy")
        want = sum(1 for t, r in truth if r in rows[t, :10].tolist())
        assert report["leakage"]["lists"][name] == want, name
    queue = np.load(run_dir / "leakage" / "queue.npy")[:100].tolist()
    assert report["leakage"]["queue_pairs"] == sum(1 for t, _ in truth if t in queue)
    # Exact copies correlate 1 in pixels: the pixel list ranks every pair in its top 10.
    assert report["leakage"]["lists"]["pixels"] == len(truth)
    md = (out / "results.md").read_text()
    assert f"| pixels | {len(truth)} / {len(truth)} |" in md
    with Image.open(out / "pairs.png") as picture:
        assert picture.height == min(len(truth), 16) * (8 * SCALE + 26)


@pytest.fixture(scope="module")
def tiny_results(dashboard_data_dir, tmp_path_factory):
    run_dir = dashboard_data_dir / "runs" / "digits-tiny"
    out = tmp_path_factory.mktemp("tiny-results")
    log = out / "times.log"
    log.write_text("noise\n/usr/bin/python -m precompute fit --run R --targets test|wall=100.5|user=150.25|sys=9.75"
                   "|maxrss_kb=2097152|load=3.1-4.2\n")
    run_cli("results", "--run", run_dir, "--out", out / "report", "--times", log)
    return run_dir, out / "report", json.loads((out / "report" / "results.json").read_text())


def test_flagged_images_are_the_largest_stored_self_scores(tiny_results):
    run_dir, out, report = tiny_results
    self_scores = np.load(run_dir / "attribution" / "datamodels" / "self_scores.npy")
    want = sorted(range(len(self_scores)), key=lambda i: (-float(self_scores[i]), i))[:10]
    assert report["flagged"]["datamodels"] == want
    # The fixture's second method scores every image 0: ties go to the lowest positions.
    assert report["flagged"]["fixture-permuted"] == list(range(10))
    with Image.open(out / "flagged.png") as picture:
        assert picture.height == 2 * (8 * SCALE + 26)


def test_lds_table_is_methods_eval(tiny_results):
    run_dir, out, report = tiny_results
    stored = json.loads((run_dir / "attribution" / "methods_eval.json").read_text())["methods"]
    assert set(report["methods"]) == set(stored)
    for name, m in stored.items():
        assert report["methods"][name]["lds"] == m["lds"]["mean"]
        assert report["methods"][name]["mislabel_auc"] == m.get("mislabel_auc")


def test_cluster_and_component_pictures_have_a_row_each(tiny_results):
    run_dir, out, report = tiny_results
    clusters = np.load(run_dir / "structure" / "clusters_all.npy")
    with Image.open(out / "clusters.png") as picture:
        assert picture.height == len(np.unique(clusters)) * (8 * SCALE + 26)
    with Image.open(out / "pca.png") as picture:
        assert picture.height == 2 * 4 * (8 * SCALE + 26)  # 4 components, both ends
    ratio = np.load(run_dir / "structure" / "pca_explained_variance_ratio.npy")
    np.testing.assert_allclose(report["pca_explained_variance_ratio"], ratio[:4])


def test_stage_table_takes_the_time_log_over_the_runs_records(tiny_results):
    run_dir, out, report = tiny_results
    stages = {s["stage"]: s for s in report["stages"]}
    assert stages["fit"] == {"stage": "fit", "wall_s": 100.5, "cpu_s": 160.0, "peak_rss_mib": 2048, "load": "3.1-4.2"}
    analysis = json.loads((run_dir / "analysis.json").read_text())
    assert stages["analyze"]["wall_s"] == analysis["seconds"]
    assert stages["attribute datamodels"]["wall_s"] == json.loads(
        (run_dir / "attribution" / "datamodels" / "meta.json").read_text())["seconds"]


def test_stage_names():
    assert stage_name("env X=1 nice -n 19 py -m precompute attribute --run R --method trak --models 10") == "attribute trak"
    assert stage_name("py -m precompute train --dataset d --out data/runs/f/heldout") == "train (held-out)"
    assert flagged(np.array([0.5, 2.0, 2.0, -1.0]), 3).tolist() == [1, 2, 0]


def test_another_datasets_pairs_are_refused(tiny_results, tmp_path):
    run_dir, _, _ = tiny_results
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("test,train,rms\n9999,1,0.5\n")
    proc = run_cli("results", "--run", run_dir, "--pairs", pairs, "--out", tmp_path / "r", check=False)
    assert proc.returncode == 2 and "another dataset's pair list" in proc.stderr and "Traceback" not in proc.stderr
