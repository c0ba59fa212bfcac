"""backend.datamodels.quality: reading the eval stage's outputs back, against backend.datamodels.evaluation's own reports."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from backend.datamodels import evaluation

from backend.datamodels import quality
from backend.store.errors import RunError
from backend.store.run_dir import Run
from precompute.args import hparam_overrides
from precompute.cli import build_parser

RUN = "digits-tiny"


@pytest.fixture
def run_copy(dashboard_data_dir, tmp_path) -> Run:
    return Run(shutil.copytree(dashboard_data_dir / "runs" / RUN, tmp_path / RUN, symlinks=True))


def test_eval_outputs_read_back(dashboard_data_dir):
    run = Run(dashboard_data_dir / "runs" / RUN)
    metrics = quality.read_metrics(run)
    lds = quality.stored_lds(run)
    assert lds.shape == (run.n_targets,) and np.isnan(lds[:5]).all()  # train:0-4 have no datamodel
    ok = np.isfinite(lds[run.n_train:])
    assert metrics["lds"]["test"]["mean"] == pytest.approx(float(lds[run.n_train:][ok].mean()), rel=1e-5)
    assert metrics["heldout_run"] == "heldout"  # relative to the run
    assert quality.heldout_dir(run, metrics, dashboard_data_dir) == (run.dir / "heldout").resolve()
    assert not quality.is_stale(run)


def test_missing_corrupt_and_stale_eval_outputs(run_copy):
    run = run_copy
    os.utime(run.dir / "weights.npy", ns=(0, (run.dir / "lds.npy").stat().st_mtime_ns + 10**9))
    assert quality.is_stale(run)
    (run.dir / "metrics.json").write_text("{")
    with pytest.raises(RunError, match="metrics.json is corrupt.*precompute eval"):
        quality.read_metrics(run)
    for name in ("metrics.json", "lds.npy"):
        (run.dir / name).unlink()
    assert quality.read_metrics(run) is None and quality.stored_lds(Run(run.dir)) is None
    root = run.dir.parent
    assert quality.heldout_dir(run, {"heldout_run": "gone"}, root) == run.dir / "heldout"
    shutil.rmtree(run.dir / "heldout")
    assert quality.heldout_dir(run, None, root) is None


def test_a_stored_held_out_path_outside_the_data_directory_is_refused(run_copy, tmp_path):
    """A copied run whose metrics.json still names its origin must not read files there (issue 17, item 9)."""
    run, root = run_copy, run_copy.dir.parent
    outside = shutil.copytree(run.dir / "heldout", tmp_path.parent / f"{tmp_path.name}-outside")
    for stored in (str(outside), f"../../{outside.name}"):
        with pytest.raises(RunError, match="outside the data directory.*precompute eval"):
            quality.heldout_dir(run, {"heldout_run": stored}, root)
    shutil.copytree(outside, root / "sibling")
    assert quality.heldout_dir(run, {"heldout_run": "../sibling"}, root) == root / "sibling"


def test_heldout_command_trains_the_same_recipe_with_the_next_seed(dashboard_data_dir):
    run = Run(dashboard_data_dir / "runs" / RUN)
    args = build_parser().parse_args(quality.heldout_command(run).split()[3:])
    assert args.verb == "train" and args.seed == run.manifest["seed"] + 1 and args.out == run.dir / "heldout"
    assert (args.dataset, args.alpha, args.arch) == (run.manifest["dataset"]["spec"], run.manifest["alpha"], run.manifest["arch"])
    assert all(run.manifest["hparams"][k] == v for k, v in hparam_overrides(args).items())
    assert {"epochs", "hidden"} <= set(hparam_overrides(args))
    eval_args = build_parser().parse_args(quality.eval_command(run).split()[3:])
    assert eval_args.verb == "eval" and eval_args.heldout == run.dir / "heldout"


def test_table5_rows_are_the_reports_test_means():
    rng = np.random.default_rng(0)
    masks = rng.random((40, 12)) < 0.5
    weights = rng.standard_normal((15, 12))
    margins = masks @ weights.T + rng.standard_normal((40, 15))
    report = evaluation.table5_report(weights, np.zeros(15), masks[:25], margins[:25], masks[25:], margins[25:], 12)
    metrics = json.loads(json.dumps({"table5": report}))
    rows = quality.table5_rows(metrics)
    assert [r["estimator"] for r in rows] == list(quality.ESTIMATOR_NAMES.values())
    for row, key in zip(rows, quality.ESTIMATOR_NAMES):
        assert row["Spearman (own target)"] == report[key]["spearman"]["test"]["mean"]
        assert row["AUC (correct)"] == report[key]["auc"]["test"].get("mean")


def test_complexity_curve_keeps_fitted_points_and_lists_skipped_ones():
    def point(n, mean):
        return {"fraction": n / 80, "n_models": n, "n_heldout_models": 30,
                "lds": {"test": {"n_targets": 5, "n_undefined": 0, "mean": mean, "q25": mean - 0.1,
                                 "median": mean, "q75": mean + 0.1}, "train": {"n_targets": 0, "n_undefined": 0}}}
    metrics = {"sample_complexity": {"targets": "5 test and 0 training targets", "points": [
        {"fraction": 0.125, "n_models": 10, "skipped": "10 models are too few: train more models"},
        point(20, 0.1), point(40, 0.2), point(80, 0.3)]}}
    curve = quality.complexity_curve(metrics)
    assert curve["n_models"].tolist() == [20, 40, 80]
    np.testing.assert_allclose(curve["mean"], [0.1, 0.2, 0.3])
    np.testing.assert_allclose(curve["q75"] - curve["q25"], 0.2)
    assert curve["skipped"] == [[10, "10 models are too few: train more models"]]
    assert quality.complexity_curve({})["n_models"].size == 0
