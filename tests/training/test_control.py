"""Control models: built once, atomically, from their own seed stream, reproducible by the engine alone."""
from __future__ import annotations

import json

import numpy as np

from backend.store.schema import CONTROL_MARGINS
from backend.training.control import control_mean, control_seeds, ensure_control, load_control_features
from backend.training.retraining import training_data
from backend.store.run_dir import Run
from backend.training.subsets import model_seed
from backend.training.engine import train_models


def test_control_files_follow_the_contract(counterfactual_run):
    run = Run(counterfactual_run)
    margins = np.load(CONTROL_MARGINS.path(run.dir), allow_pickle=False)
    features = load_control_features(run)
    meta = json.loads((run.dir / "control.json").read_text())
    assert margins.dtype == np.float32 and margins.shape == (8, run.n_targets)
    assert features.dtype == np.float32 and features.shape == (run.n_targets, 16)  # hidden=16 in the tiny run
    assert meta["n_control"] == 8 and meta["seeds"] == control_seeds(0, 8)
    np.testing.assert_allclose(control_mean(run), margins.astype(np.float64).mean(axis=0))
    # Full-set models beat the run's half-set models on the test set.
    assert (margins[:, run.n_train:] > 0).mean() > (run.margins[:, run.n_train:] > 0).mean()


def test_control_seeds_never_repeat_a_run_model():
    run_seeds = {model_seed(0, i) for i in range(5000)}
    assert not run_seeds & set(control_seeds(0, 64))
    assert len(set(control_seeds(0, 64))) == 64


def test_control_model_is_the_engine_on_the_full_set(counterfactual_run):
    run = Run(counterfactual_run)
    data = training_data(run, "cpu")
    alone, feats = train_models(data, np.arange(run.n_train)[None], control_seeds(0, 1), run.manifest["arch"],
                                run.manifest["hparams"], with_features=True)
    np.testing.assert_allclose(alone[0], np.load(CONTROL_MARGINS.path(run.dir))[0], atol=1e-4)
    np.testing.assert_allclose(feats[0], load_control_features(run), atol=1e-4)


def test_existing_controls_are_reused_and_topped_up(cf_run):
    run = Run(cf_run)
    before = np.array(np.load(CONTROL_MARGINS.path(run.dir)))
    started = []
    assert len(ensure_control(run, 4, device="cpu", progress=lambda *call: started.append(call))) == 8
    assert started == [(0, 0, "model")]
    topped = ensure_control(run, 10, device="cpu", progress=lambda *call: started.append(call))
    assert started[1] == (0, 2, "model") and started[-1] == (2, 2, "model") and topped.shape == (10, run.n_targets)
    np.testing.assert_array_equal(topped[:8], before)
