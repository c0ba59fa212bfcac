"""The counterfactual, support, cf-eval and control verbs, as a user runs them."""
from __future__ import annotations

import json

import numpy as np
import pytest

from backend.store.run_dir import Run
from backend.training import retrain_store
from precompute.cli import main
from tests.conftest import run_cli


def test_counterfactual_prints_predicted_and_actual(cf_run):
    proc = run_cli("counterfactual", "--run", cf_run, "--target", "test:42", "--remove", "train:3,train:17,train:99",
                   "--models", "2", "--control-models", "8", "--device", "cpu", "--json", in_process=True)
    out = json.loads(proc.stdout)
    assert out["n_changed"] == 3 and out["changed"] == ["train:3", "train:17", "train:99"]
    assert out["predicted"]["margin"] == pytest.approx(out["control_margin"] + out["predicted"]["delta"])
    assert len(out["actual"]["model_margins"]) == 2 and not out["actual"]["from_log"]
    assert isinstance(out["actual"]["test_flips"], int) and isinstance(out["predicted"]["test_flips"], int)
    again = json.loads(run_cli("counterfactual", "--run", cf_run, "--target", "test:42", "--remove", "train:99,train:3,train:17",
                               "--models", "2", "--control-models", "8", "--device", "cpu", "--json",
                               in_process=True).stdout)
    assert again["actual"]["from_log"] and again["actual"]["margin"] == out["actual"]["margin"]
    assert (out["reused"], out["trained_now"], again["reused"], again["trained_now"]) == (0, 2, 2, 0)


def test_counterfactual_of_16_models_after_8_trains_only_8(cf_run):
    args = ("counterfactual", "--run", cf_run, "--target", "test:7", "--remove", "train:11-13", "--control-models", "8",
            "--device", "cpu", "--json")
    run = Run(cf_run)
    eight = json.loads(run_cli(*args, "--models", "8", in_process=True).stdout)
    before = np.array(retrain_store.load(run, eight["actual"]["key"]).margins)
    sixteen = run_cli(*args, "--models", "16", in_process=True)
    out = json.loads(sixteen.stdout)
    assert (eight["reused"], eight["trained_now"]) == (0, 8) and (out["reused"], out["trained_now"]) == (8, 8)
    assert "/8 models" in sixteen.stderr  # the bar counts only the models trained now
    assert out["actual"]["key"] == eight["actual"]["key"]
    assert out["actual"]["model_margins"][:8] == eight["actual"]["model_margins"]
    stored = retrain_store.load(run, out["actual"]["key"])
    assert stored.indices.tolist() == list(range(16))
    np.testing.assert_array_equal(stored.margins[:8], before)  # the first 8 models are the 8-model result, untouched


def test_relabel_counterfactual_has_no_prediction(cf_run, capsys):
    assert main(["counterfactual", "--run", str(cf_run), "--target", "test:5", "--remove", "top:4", "--relabel",
                 "--models", "1", "--control-models", "8", "--device", "cpu", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["predicted"] is None and out["relabelled_to"] is not None and out["n_changed"] == 4


@pytest.mark.parametrize("remove, message", [
    ("train:", "bad target 'train:'"),
    ("train:5,train:99999", "train:99999 is out of range"),
    ("train:5,test:3", "test:3 is a test image"),
    ("top:0", "bad --remove 'top:0'"),
    ("best:3", "bad --remove 'best:3'"),
    ("random:1297", "removing all 1297 training images"),
    ("random:700", "more than this run's cap of 648"),
])
def test_bad_removal_requests_exit_2_before_training(cf_run, remove, message, capsys):
    code = main(["counterfactual", "--run", str(cf_run), "--target", "test:1", "--remove", remove, "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (cf_run / "counterfactuals").exists()


def test_whole_class_removal_is_refused_in_a_fresh_process(cf_run):
    labels = np.load(cf_run / "labels.npy")[:1297]
    names = ",".join(f"train:{i}" for i in np.flatnonzero(labels == 3))
    proc = run_cli("counterfactual", "--run", cf_run, "--target", "test:1", "--remove", names, check=False)
    assert proc.returncode == 2 and "every training image of class '3'" in proc.stderr and "Traceback" not in proc.stderr
    assert not (cf_run / "counterfactuals").exists()


def test_support_writes_estimates_and_cdfs_and_resumes(cf_run):
    args = ("support", "--run", cf_run, "--targets", "test:0-2", "--models", "1", "--budget", "2", "--k-max", "600",
            "--control-models", "8", "--device", "cpu", "--json")
    out = json.loads(run_cli(*args).stdout)
    assert out["search"]["targets"] == 3
    summary = json.loads((cf_run / "support" / "summary-remove.json").read_text())
    assert len(summary["per_target"]) == 3 and summary["heuristic_all_test"]["n"] == 500
    assert summary["certified_cdf"]["fraction"] == sorted(summary["certified_cdf"]["fraction"])
    resumed = run_cli(*args)
    assert "target" not in resumed.stderr and json.loads(resumed.stdout)["search"] == out["search"]  # no 0/0 bar


def test_cf_eval_reports_correlations(cf_run, capsys):
    assert main(["cf-eval", "--run", str(cf_run), "--targets", "2", "--k", "5,20", "--models", "1",
                 "--heuristics", "top,bottom", "--control-models", "8", "--device", "cpu", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_counterfactuals"] == 8 and set(out["per_heuristic"]) == {"top", "bottom"}
    assert -1 <= out["overall"]["pearson"] <= 1


def test_control_verb_and_bad_input(cf_run, tiny_run, capsys):
    out = json.loads(run_cli("control", "--run", cf_run, "--control-models", "8", "--json", in_process=True).stdout)
    assert out["n_control"] == 8 and out["features_dim"] == 16
    assert main(["counterfactual", "--run", str(tiny_run), "--target", "test:1", "--remove", "top:3"]) == 2
    assert "fit them first" in capsys.readouterr().err
    assert main(["cf-eval", "--run", str(cf_run), "--k", "5,x"]) == 2
    assert "bad --k '5,x'" in capsys.readouterr().err
    assert main(["support", "--run", str(cf_run), "--targets", "test:0", "--k-max", "5000"]) == 2
    assert "--k-max 5000 is out of range" in capsys.readouterr().err


def test_random_class_relabel_is_the_apis_set_and_class(cf_run, capsys):
    """The verb is glue over backend.api: its random-class set is RunAPI.removal's for the same seed (all of the
    target's class, by labels.npy) and it relabels to RunAPI.competitor's class, the brute-force one."""
    from backend.api import open_run

    assert main(["counterfactual", "--run", str(cf_run), "--target", "test:6", "--remove", "random-class:5", "--seed", "3",
                 "--relabel", "--models", "1", "--control-models", "8", "--device", "cpu", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    api = open_run(cf_run)
    labels, weights = np.load(cf_run / "labels.npy"), np.load(cf_run / "weights.npy").astype(np.float64)
    column, n_train = api.column("test:6"), api.run.n_train
    assert out["changed"] == api.removal("test:6", "random-class", 5, seed=3)
    assert len(out["changed"]) == 5 and all(labels[int(n.split(":")[1])] == labels[column] for n in out["changed"])
    pull = [np.inf if c == labels[column] else np.minimum(weights[column, :n_train], 0)[labels[:n_train] == c].sum()
            for c in range(len(api.run.class_names))]
    assert out["relabelled_to"] == api.competitor("test:6") == api.run.class_names[int(np.argmin(pull))]
    assert out["label"] == api.label("test:6") and out["predicted"] is None


@pytest.mark.parametrize("verb, request_args, named", [
    ("counterfactual", ["--target", "train:5", "--remove", "top:3"], "train:5 has no datamodel yet"),
    ("support", ["--targets", "test:0,train:5"], "train:5 has no datamodel yet"),
    ("cf-eval", ["--targets", "train:2-3,test:1"], "train:2-3 have no datamodel yet"),
])
def test_a_target_without_a_datamodel_is_refused_before_anything_trains(cf_run, verb, request_args, named, capsys):
    """After `fit --targets test` a training target has NaN λ and zero weights: its "top 3" is empty and a support
    search would retrain for minutes to certify nothing. Each verb refuses in one line naming the fit command, before
    the control models top up (16 asked, 8 stored) and without writing anything."""
    lam = np.load(cf_run / "lam.npy")
    lam[:1297] = np.nan  # as `fit --targets test` leaves the training targets
    np.save(cf_run / "lam.npy", lam)
    before = sorted(p.name for p in cf_run.iterdir())
    code = main([verb, "--run", str(cf_run), *request_args, "--control-models", "16", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and named in err and err.count("\n") == 1, err
    assert f"fit --run {cf_run} --targets {named.split()[0]}`" in err
    assert sorted(p.name for p in cf_run.iterdir()) == before and np.load(cf_run / "control_margins.npy").shape[0] == 8


def test_the_api_will_not_predict_a_removal_for_a_target_without_a_datamodel(cf_run):
    from backend.api import RunError, open_run

    lam = np.load(cf_run / "lam.npy")
    lam[5] = np.nan
    np.save(cf_run / "lam.npy", lam)
    api = open_run(cf_run)
    with pytest.raises(RunError, match=r"^train:5 has no datamodel yet"):
        api.predict_removal("train:5", ["train:1", "train:2"])
    api.require_fitted(["train:4", "test:0"])  # fitted targets pass
    assert api.predict_removal("test:0", ["train:1"]).target == "test:0"
