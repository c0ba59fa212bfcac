"""Predictions against brute force; retraining against the engine; the store's round trip, reuse and top-up."""
from __future__ import annotations

import numpy as np
import pytest

from backend.training import retrain_store

from backend.training.control import control_mean
from backend.counterfactuals.predict import (load_weights, make_request, predict_removal, retrain, retrain_many, removal_deltas,
                                             verified_removals)
from backend.training.retraining import training_data
from backend.store.errors import RunError
from backend.store.run_dir import Run
from backend.training.engine import train_models


def test_prediction_is_control_mean_minus_summed_weights(counterfactual_run):
    run = Run(counterfactual_run)
    weights, control = np.load(run.dir / "weights.npy"), np.load(run.dir / "control_margins.npy").astype(np.float64).mean(0)
    target, removed = run.n_train + 42, np.array([3, 17, 99, 500, 1200])
    pred = predict_removal(run, target, removed, block=128)
    manual = control[target] - sum(float(weights[target, i]) for i in removed)
    assert pred.predicted_margin == pytest.approx(manual, abs=1e-9)
    assert pred.control_margin == pytest.approx(control[target])
    for j in (0, 42, 499):
        t = run.n_train + j
        assert pred.test_predicted[j] == pytest.approx(control[t] - sum(float(weights[t, i]) for i in removed), abs=1e-9)
    brute = {run.n_train + j for j in range(run.n_test) if (control[run.n_train + j] > 0) != (pred.test_predicted[j] > 0)}
    assert set(pred.flipped.tolist()) == brute
    assert pred.flips == ((control[target] > 0) != (manual > 0))


def test_precomputed_test_deltas_give_the_same_prediction_for_any_target(counterfactual_run):
    """The page caches removal_deltas per removal set and passes them in: same answer as computing them."""
    run = Run(counterfactual_run)
    weights = np.load(run.dir / "weights.npy")
    removed = np.array([3, 17, 99])
    deltas = removal_deltas(run, removed, block=100)
    np.testing.assert_allclose(deltas, -weights[run.n_train:, removed].astype(np.float64).sum(1), atol=1e-9)
    for target in (run.n_train, run.n_targets - 1, 5):
        given, computed = predict_removal(run, target, removed, deltas=deltas), predict_removal(run, target, removed)
        assert given.delta == computed.delta and given.control_margin == computed.control_margin
        np.testing.assert_array_equal(given.test_delta, computed.test_delta)


def test_removing_the_top_weights_is_predicted_to_flip(counterfactual_run):
    run = Run(counterfactual_run)
    weights, control = load_weights(run), control_mean(run)
    target = next(t for t in range(run.n_train, run.n_targets) if 0 < control[t] < weights[t][weights[t] > 0].sum())
    top = np.argsort(-weights[target])[:(weights[target] > 0).sum()]
    pred = predict_removal(run, target, np.sort(top))
    assert pred.flips and pred.predicted_margin < 0 and target in pred.flipped


def test_missing_datamodels_name_the_fix(tiny_run):
    with pytest.raises(RunError, match="fit them first"):
        load_weights(Run(tiny_run))


def test_retrain_matches_the_engine_and_is_logged(cf_run):
    run = Run(cf_run)
    removed = np.array([5, 1, 300])
    cf = retrain(run, removed, n_models=2, device="cpu", target=run.n_train + 7)
    assert cf.margins.shape == (2, run.n_targets) and not cf.cached
    np.testing.assert_array_equal(cf.request.remove, [1, 5, 300])
    keep = np.setdiff1d(np.arange(run.n_train), removed)
    oracle, _ = train_models(training_data(run, "cpu"), keep[None], [cf.request.seeds[1]], run.manifest["arch"], run.manifest["hparams"])
    np.testing.assert_allclose(cf.margins[1], oracle[0], atol=1e-4)
    stored = retrain_store.load(run, cf.request.key)
    np.testing.assert_array_equal(stored.margins, cf.margins)
    np.testing.assert_array_equal(stored.request.remove, [1, 5, 300])
    assert stored.request.seeds == cf.request.seeds and stored.request.relabel is None
    assert stored.targets == [run.n_train + 7]
    (summary,) = retrain_store.summaries(run)
    assert summary["remove"] == [1, 5, 300] and summary["seeds"] == list(cf.request.seeds)
    assert summary["target_margins"] == {str(run.n_train + 7): pytest.approx(cf.margins[:, run.n_train + 7].mean())}


def test_identical_request_is_answered_from_the_log(cf_run, monkeypatch):
    run = Run(cf_run)
    first = retrain(run, np.array([10, 20]), n_models=2, device="cpu", target=run.n_train)

    def no_training(*args, **kwargs):
        raise AssertionError("an identical request must not train")
    monkeypatch.setattr(retrain_store.retraining, "train_sets", no_training)
    again = retrain(run, np.array([20, 10]), n_models=2, device="cpu", target=run.n_train + 1)
    assert again.cached and again.request.key == first.request.key
    np.testing.assert_array_equal(again.margins, first.margins)
    assert retrain_store.load(run, first.request.key).targets == [run.n_train, run.n_train + 1]
    margins = retrain_store.summaries(run)[0]["target_margins"]
    assert margins[str(run.n_train + 1)] == pytest.approx(first.margins[:, run.n_train + 1].mean())
    assert make_request(run, [10, 20], n_models=2, seed_start=2).key == first.request.key  # same entry, other models
    assert make_request(run, [10, 21], n_models=2).key != first.request.key


def test_more_models_train_only_the_missing_seed_indices(cf_run):
    run = Run(cf_run)
    first = retrain(run, np.array([30, 31]), n_models=2, device="cpu")
    calls = []
    more = retrain(run, np.array([30, 31]), n_models=3, device="cpu", progress=lambda *call: calls.append(call))
    assert (more.reused, more.trained_now) == (2, 1) and calls[0] == (0, 1, "model") and calls[-1] == (1, 1, "model")
    np.testing.assert_array_equal(more.margins[:2], first.margins)
    keep = np.setdiff1d(np.arange(run.n_train), [30, 31])
    oracle, _ = train_models(training_data(run, "cpu"), keep[None], [more.request.seeds[2]], run.manifest["arch"],
                             run.manifest["hparams"])
    np.testing.assert_allclose(more.margins[2], oracle[0], atol=1e-4)
    # Fresh models past the held ones (support --check) train only their own indices, not [0, start).
    fresh = retrain(run, np.array([30, 31]), n_models=2, seed_start=5, device="cpu")
    assert (fresh.reused, fresh.trained_now) == (0, 2) and fresh.indices.tolist() == [5, 6]
    assert retrain_store.load(run, first.request.key).indices.tolist() == [0, 1, 2, 5, 6]


def test_relabelling_trains_on_the_full_set_with_new_labels(cf_run):
    run = Run(cf_run)
    ids = np.array([0, 1, 2])
    cf = retrain(run, ids, relabel=np.array([9, 9, 9]), n_models=1, device="cpu")
    labels = np.array(run.labels[:run.n_train])
    labels[ids] = 9
    import torch
    oracle, _ = train_models(training_data(run, "cpu"), np.arange(run.n_train)[None], list(cf.request.seeds),
                             run.manifest["arch"], run.manifest["hparams"], train_labels=torch.from_numpy(labels))
    np.testing.assert_allclose(cf.margins[0], oracle[0], atol=1e-4)
    assert retrain_store.load(run, cf.request.key).request.relabel.tolist() == [9, 9, 9]


def test_batched_requests_of_several_sizes_match_separate_training(cf_run):
    run = Run(cf_run)
    sets = [np.array([1, 2]), np.array([3, 4, 5]), np.array([6, 7]), np.array([8, 9])]
    requests = [make_request(run, s, n_models=2) for s in sets]
    started = []
    # Three removals of size 2 (split over two engine calls of at most 4 models) and one of size 3.
    results = retrain_many(run, requests, device="cpu", progress=lambda *call: started.append(call), batch_models=4)
    assert started[0] == (0, 8, "model") and started[-1] == (8, 8, "model")
    data = training_data(run, "cpu")
    for group in ([0, 2, 3], [1]):
        keeps = [np.setdiff1d(np.arange(run.n_train), sets[g]) for g in group for _ in range(2)]
        seeds = [s for g in group for s in results[g].request.seeds]
        oracle, _ = train_models(data, np.stack(keeps), seeds, run.manifest["arch"], run.manifest["hparams"])
        np.testing.assert_allclose(np.concatenate([results[g].margins for g in group]), oracle, atol=1e-4)
    assert len(retrain_store.summaries(run)) == 4


def test_verified_removals_pair_prediction_and_truth(cf_run):
    run = Run(cf_run)
    target = run.n_train + 3
    removed = np.array([2, 40, 41])
    cf = retrain(run, removed, n_models=2, device="cpu", target=target)
    retrain(run, removed, relabel=np.array([1, 1, 1]), n_models=1, device="cpu", target=target)
    rows = verified_removals(run)
    assert len(rows) == 1 and rows[0]["target"] == target
    assert rows[0]["predicted_delta"] == pytest.approx(predict_removal(run, target, removed).delta)
    assert rows[0]["actual_delta"] == pytest.approx(cf.margins[:, target].mean() - control_mean(run)[target], abs=1e-6)


def test_corrupt_log_entry_names_the_files_to_delete(cf_run):
    run = Run(cf_run)
    cf = retrain(run, np.array([4]), n_models=1, device="cpu")
    (run.dir / "counterfactuals" / f"{cf.request.key}.npz").write_bytes(b"broken")
    with pytest.raises(RunError, match="delete"):
        retrain_store.load(run, cf.request.key)
