"""The yardsticks of every method, through stored scores only: LDS, certified supports, mislabel detection, cost."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from scipy.stats import spearmanr

from backend.attribution import store, yardsticks
from backend.attribution.datamodels import Datamodels
from backend.attribution.compute import attribute
from backend.counterfactuals.support import certified_supports
from backend.datasets import load_dataset
from backend.store.schema import CLI
from backend.datasets.planted import plant_label_noise
from backend.store.artifacts import read_json
from backend.store.run_dir import Run
from backend.store.schema import COUNTERFACTUAL_META, LDS, METHODS_EVAL, METRICS
from tests.conftest import run_cli

RUN = "digits-tiny"


class StoredRows:
    """A test fixture method: given rows of scores (n_test, n_train), stored as they are."""

    def __init__(self, name: str, scores: np.ndarray, config: dict, n_models: int = 1, own: np.ndarray | None = None):
        self.name, self.scores, self.config = name, scores.astype(np.float32), config
        self.own = np.zeros(scores.shape[1]) if own is None else own
        self.models = {"kind": "fixture", "n_models": n_models, "trained": 0}

    def prepare(self, progress=None) -> None:
        pass

    def score(self, rows: slice) -> np.ndarray:
        return self.scores[rows]

    def self_scores(self) -> np.ndarray:
        return self.own


def test_lds_of_the_datamodels_scores_is_the_eval_stages_lds_and_scipys_spearman(dashboard_data_dir):
    run = Run(dashboard_data_dir / "runs" / RUN)
    heldout = Run(run.dir / "heldout")
    lds = yardsticks.method_lds(store.read_scores(run, "datamodels"), heldout, run.n_train)
    stored = run.array(LDS)[run.n_train:]
    np.testing.assert_array_equal(lds.astype(np.float32), stored)
    # the same mean, summed in another order: equal to the last few ulps
    assert np.nanmean(lds) == pytest.approx(read_json(run.dir, METRICS)["lds"]["test"]["mean"], rel=1e-12, abs=0)
    scores, x = np.asarray(store.read_scores(run, "datamodels"), dtype=np.float64), heldout.masks.astype(np.float64)
    for j in range(0, run.n_test, 37):
        rho = spearmanr(x @ scores[j], heldout.margins[:, run.n_train + j]).statistic
        assert lds[j] == pytest.approx(rho, abs=1e-6) or (np.isnan(lds[j]) and np.isnan(rho))
    report = read_json(run.dir, METHODS_EVAL)
    assert report["methods"]["datamodels"]["lds"]["mean"] == pytest.approx(np.nanmean(lds), abs=1e-12)


def test_the_stored_report_holds_cdfs_pairwise_fractions_and_cost_consistent_with_its_supports(dashboard_data_dir):
    run = Run(dashboard_data_dir / "runs" / RUN)
    report = read_json(run.dir, METHODS_EVAL)
    names = sorted(report["methods"])
    assert names == ["datamodels", "fixture-permuted"] and len(report["targets"]) == 3
    control = yardsticks.control_mean(run)
    assert all(control[t] > 0 and t >= run.n_train for t in report["targets"])
    for mode in ("remove", "mislabel"):
        a, b = (report["methods"][n]["support"][mode]["supports"] for n in names)
        ties = np.mean([(np.inf if x is None else x) == (np.inf if y is None else y) for x, y in zip(a, b)])
        pair = report["smaller_support"][mode]
        assert pair[names[0]][names[1]] + pair[names[1]][names[0]] + ties == pytest.approx(1.0)
        for name in names:
            entry = report["methods"][name]["support"][mode]
            found = [s for s in entry["supports"] if s is not None]
            assert entry["cdf"]["never"] == len(entry["supports"]) - len(found)
            for k, share in zip(entry["cdf"]["k"], entry["cdf"]["fraction"]):
                assert share == pytest.approx(sum(s <= k for s in found) / len(entry["supports"]), abs=1e-4)
    for name in names:
        meta = store.read_meta(run, name)
        assert report["methods"][name]["cost"] == {"seconds": meta["seconds"], "n_models": meta["models"]["n_models"],
                                                   "models_trained": meta["models"]["trained"],
                                                   "model_kind": meta["models"]["kind"], "bytes": meta["bytes"]}
    assert "plant-label-noise" in report["mislabel"]["note"]


def test_support_cdf_and_smaller_fraction_by_hand():
    assert yardsticks.support_cdf([3, None, 1, 3]) == {"k": [1.0, 3.0], "fraction": [0.25, 0.75], "never": 1}
    assert yardsticks.smaller_fraction([1, None, 5, 2], [2, 3, None, 2]) == 0.5


def test_the_search_over_a_methods_ranking_is_the_datamodel_search_and_retrains_nothing_twice(cf_run):
    run = Run(cf_run)
    attribute(run, StoredRows("copy", np.load(cf_run / "weights.npy")[run.n_train:], {"of": "weights"}))
    targets = yardsticks.shared_targets(run, 2)
    for mislabel in (False, True):
        expected = [r["support"] for r in certified_supports(run, targets, 2, mislabel=mislabel, budget=2, device="cpu")]
        before = len(COUNTERFACTUAL_META.glob(run.dir))
        params = {"mode": "mislabel" if mislabel else "remove", "n_models": 2, "k_max": 1280, "budget": 2}
        got = yardsticks.method_supports(run, store.read_scores(run, "copy"), targets, params, device="cpu")
        assert got == expected
        assert len(COUNTERFACTUAL_META.glob(run.dir)) == before  # every removal set came from the retrain store


def test_lds_against_models_keeps_one_point_per_configuration(cf_run, dashboard_data_dir):
    run, heldout = Run(cf_run), Run(dashboard_data_dir / "runs" / RUN / "heldout")
    rows = np.random.default_rng(0).normal(size=(run.n_test, run.n_train))
    for k in (5, 1, 5):
        attribute(run, StoredRows("ensemble", rows * k, {"models": k}, n_models=k))
        report = yardsticks.evaluate_methods(run, heldout, modes=(), device="cpu")
    curve = report["lds_vs_models"]["ensemble"]
    assert [p["n_models"] for p in curve] == [1, 5]
    assert report["methods"]["ensemble"]["lds"]["mean"] == pytest.approx(
        np.nanmean(yardsticks.method_lds(rows, heldout, run.n_train)), abs=1e-12)
    assert abs(report["methods"]["ensemble"]["lds"]["mean"]) < 0.1  # random scores predict nothing


def test_methods_eval_splits_the_held_out_models_into_validation_and_test(cf_run, dashboard_data_dir):
    """--validation-models N: LDS on held-out models N.. (test) and on 0..N-1 apart, each scipy's Spearman."""
    run, heldout = Run(cf_run), Run(dashboard_data_dir / "runs" / RUN / "heldout")
    scores = np.asarray(store.read_scores(Run(dashboard_data_dir / "runs" / RUN), "datamodels"), dtype=np.float64)
    attribute(run, StoredRows("split", scores, {"split": 1}))
    run_cli("methods-eval", "--run", run.dir, "--heldout", heldout.dir, "--methods", "split", "--modes", "none",
            "--validation-models", "12", "--device", "cpu", in_process=True)
    report = read_json(run.dir, METHODS_EVAL)
    x, n = heldout.masks.astype(np.float64), run.n_train

    def by_hand(models):
        rhos = [spearmanr(x[models] @ scores[j], heldout.margins[models, n + j]).statistic for j in range(run.n_test)]
        return np.nanmean(rhos)
    entry = report["methods"]["split"]
    assert report["validation_models"] == 12 and report["n_heldout_models"] == 30
    assert entry["lds"]["mean"] == pytest.approx(by_hand(slice(12, None)), abs=1e-6)
    assert entry["lds_validation"]["mean"] == pytest.approx(by_hand(slice(0, 12)), abs=1e-6)
    assert entry["lds"]["mean"] != pytest.approx(entry["lds_validation"]["mean"], abs=1e-9)
    [row] = [row for row in yardsticks.table_rows(report) if row["method"] == "split"]
    assert row["validation LDS"] == entry["lds_validation"]["mean"] and row["LDS"] == entry["lds"]["mean"]


def test_plant_label_noise_flips_a_known_fraction_to_other_classes():
    ds = load_dataset("digits")
    arrays, truth = plant_label_noise(ds, 0.05, seed=3)
    flipped = truth["flipped_train"]
    assert len(flipped) == round(0.05 * ds.n_train) and np.all(np.diff(flipped) > 0)
    labels = arrays["labels"][:ds.n_train]
    changed = np.flatnonzero(labels != ds.train_labels)
    np.testing.assert_array_equal(changed, flipped)
    np.testing.assert_array_equal(truth["original_labels"], ds.train_labels[flipped])
    np.testing.assert_array_equal(arrays["labels"][ds.n_train:], ds.test_labels)
    again, _ = plant_label_noise(ds, 0.05, seed=3)
    np.testing.assert_array_equal(again["labels"], arrays["labels"])


def test_plant_label_noise_cli_refuses_bad_input(tmp_path):
    out = tmp_path / "noisy.npz"
    bad = run_cli("plant-label-noise", "--dataset", "digits", "--fraction", "1.5", "--out", out, check=False)
    assert bad.returncode == 2 and "outside (0, 1)" in bad.stderr and not out.exists()
    run_cli("plant-label-noise", "--dataset", "digits", "--fraction", "0.05", "--out", out)
    again = run_cli("plant-label-noise", "--dataset", "digits", "--out", out, check=False)
    assert again.returncode == 2 and "--force" in again.stderr


@pytest.fixture(scope="module")
def noisy_run(tmp_path_factory):
    """A digits run of 40 fast models on 5 % flipped training labels; fit.json is written by hand (a fixture:
    the datamodels method reads it, and self-scores use masks and margins only)."""
    root = tmp_path_factory.mktemp("noisy")
    run_cli("plant-label-noise", "--dataset", "digits", "--fraction", "0.05", "--seed", "1",
            "--out", root / "noisy.npz", in_process=True)
    out = root / "run"
    run_cli("train", "--dataset", f"npz:{root / 'noisy.npz'}", "--models", "40", "--out", out,
            "--batch-models", "40", "--epochs", "20", "--hidden", "32", in_process=True)
    (out / "fit.json").write_text(json.dumps({"n_targets": 0, "targets": [], "iterations": {}}))
    return Run(out)


def test_datamodels_self_scores_find_the_flipped_labels(noisy_run):
    run = noisy_run
    flipped = yardsticks.flipped_labels(run)
    with np.load(run.manifest["dataset"]["spec"][len("npz:"):]) as npz:
        np.testing.assert_array_equal(flipped, npz["flipped_train"])
    own = Datamodels(run).self_scores()
    masks, margins = run.masks, np.asarray(run.margins, dtype=np.float64)
    for i in range(0, run.n_train, 97):
        inside = masks[:, i]
        assert own[i] == pytest.approx(margins[inside, i].mean() - margins[~inside, i].mean(), abs=1e-9)
    auc = yardsticks.mislabel_auc(own, flipped)
    is_flipped = np.isin(np.arange(run.n_train), flipped)
    pos, neg = own[is_flipped], own[~is_flipped]
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert auc == pytest.approx(pairs, abs=1e-12)
    assert auc > 0.8, auc  # a flipped label is learnt only when seen: its margin rises most when included


def test_mislabel_auc_has_dattris_orientation():
    """Higher self-score = likelier mislabelled: dattri's mislabel_detection_auc inspects from the top score down."""
    torch = pytest.importorskip("torch")
    from dattri.metric import mislabel_detection_auc

    rng = np.random.default_rng(0)
    scores, flipped = rng.normal(size=300), np.sort(rng.choice(300, 15, replace=False))
    scores[flipped] += 1.5
    truth = torch.zeros(300, dtype=torch.bool)
    truth[flipped] = True
    theirs = float(mislabel_detection_auc(torch.tensor(scores), truth)[0])
    assert yardsticks.mislabel_auc(scores, flipped) == pytest.approx(theirs, abs=1e-3) and theirs > 0.8


def test_methods_eval_reads_stored_self_scores_and_leaves_old_scores_without_an_auc(noisy_run, tmp_path):
    run = Run(shutil.copytree(noisy_run.dir, tmp_path / "run"))
    flipped = yardsticks.flipped_labels(run)
    own = np.random.default_rng(0).normal(size=run.n_train)
    own[flipped] += 3.0
    rows = np.zeros((run.n_test, run.n_train))
    attribute(run, StoredRows("stored", rows, {"a": 1}, own=own))
    attribute(run, StoredRows("old", rows, {"b": 1}))
    (run.dir / "attribution" / "old" / "self_scores.npy").unlink()  # as `attribute` stored scores before self-scores
    heldout = tmp_path / "heldout"
    run_cli("train", "--dataset", run.manifest["dataset"]["spec"], "--models", "8", "--seed", "1", "--out", heldout,
            "--batch-models", "8", "--epochs", "20", "--hidden", "32", in_process=True)
    run_cli("methods-eval", "--run", run.dir, "--heldout", heldout, "--modes", "none", "--device", "cpu",
            in_process=True)
    report = read_json(run.dir, METHODS_EVAL)
    assert report["modes"] == [] and report["methods"]["stored"]["support"] == {}
    assert report["methods"]["stored"]["mislabel_auc"] == pytest.approx(yardsticks.mislabel_auc(own, flipped), abs=1e-6)
    assert report["methods"]["old"]["mislabel_auc"] is None
    table = {row["method"]: row for row in yardsticks.table_rows(report)}
    assert table["old"]["mislabel AUC"] is None and table["stored"]["remove found"] is None
    steps = yardsticks.missing_steps(run, report)
    assert f"{CLI} attribute --run {run.dir} --method old   # its self-scores, for the mislabel AUC" in steps
    assert not any("--method stored " in step for step in steps)
    assert any(step.startswith(f"{CLI} methods-eval --run {run.dir} --methods ") and "stored" in step
               and step.endswith("# the support search `--modes none` skipped") for step in steps), steps
    # Judging one method again keeps the others' results (same targets, parameters, held-out run, scores) ...
    again = yardsticks.evaluate_methods(run, Run(heldout), methods=["old"], modes=(), device="cpu")
    assert again["methods"]["stored"] == report["methods"]["stored"] and set(again["methods"]) == set(report["methods"])
    # ... but not a method whose scores were computed again with another configuration.
    attribute(run, StoredRows("stored", rows, {"a": 2}, own=own))
    third = yardsticks.evaluate_methods(run, Run(heldout), methods=["old"], modes=(), device="cpu")
    assert "stored" not in third["methods"] and "old" in third["methods"]


def test_flipped_labels_of_a_changed_dataset_file_is_a_note(noisy_run, tmp_path):
    run = Run(shutil.copytree(noisy_run.dir, tmp_path / "run"))
    path = run.manifest["dataset"]["spec"][len("npz:"):]
    copy = tmp_path / "noisy.npz"
    with np.load(path) as npz:
        arrays = dict(npz)
    arrays["labels"] = arrays["labels"].copy()
    arrays["labels"][0] = (arrays["labels"][0] + 1) % 10
    np.savez(copy, **arrays)
    manifest = json.loads((run.dir / "manifest.json").read_text())
    manifest["dataset"]["spec"] = f"npz:{copy}"
    (run.dir / "manifest.json").write_text(json.dumps(manifest))
    assert "changed since the run was trained" in yardsticks.flipped_labels(Run(run.dir))


def test_methods_eval_cli_errors_name_the_fix(tiny_run, dashboard_data_dir):
    no_heldout = run_cli("methods-eval", "--run", tiny_run, check=False)
    assert no_heldout.returncode == 2 and "train held-out models first" in no_heldout.stderr
    heldout = dashboard_data_dir / "runs" / RUN / "heldout"
    no_scores = run_cli("methods-eval", "--run", tiny_run, "--heldout", heldout, check=False, in_process=True)
    assert no_scores.returncode == 2 and "attribute --run" in no_scores.stderr
    no_test = run_cli("methods-eval", "--run", tiny_run, "--heldout", heldout, "--validation-models", "30", check=False,
                      in_process=True)
    assert no_test.returncode == 2 and "--validation-models 30 leaves no test models" in no_test.stderr
    assert "give at most 29" in no_test.stderr
    bad_mode = run_cli("methods-eval", "--run", tiny_run, "--heldout", heldout, "--modes", "remove,x", check=False,
                       in_process=True)
    assert bad_mode.returncode == 2 and "unknown mode 'x'" in bad_mode.stderr and "or none" in bad_mode.stderr
