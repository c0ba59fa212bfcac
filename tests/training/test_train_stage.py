"""The train stage: masks, margins, manifest, reproducibility, top-up and worker shards."""
from __future__ import annotations

import json

import numpy as np
import pytest

from backend.store.run_dir import Run
from backend.store.shards import read_shard_predictions, shard_ranges
from backend.datasets import load_dataset
from backend.training.subsets import model_seed, model_subset, subset_size
from backend.training.engine import TrainingData, resolve_device, train_models
from backend.training.train_stage import resolve_hparams
from tests.conftest import FAST_TRAIN, run_cli


def test_run_files_follow_the_contract(tiny_run):
    ds = load_dataset("digits")
    manifest = json.loads((tiny_run / "manifest.json").read_text())
    masks = np.load(tiny_run / "masks.npy", mmap_mode="r", allow_pickle=False)
    margins = np.load(tiny_run / "margins.npy", mmap_mode="r", allow_pickle=False)
    labels = np.load(tiny_run / "labels.npy", allow_pickle=False)
    images = np.load(tiny_run / "images.npy", allow_pickle=False)
    assert masks.dtype == bool and masks.shape == (60, ds.n_train)
    assert margins.dtype == np.float32 and margins.shape == (60, ds.n_train + ds.n_test)
    assert labels.dtype == np.int64 and np.array_equal(labels, np.concatenate([ds.train_labels, ds.test_labels]))
    assert images.dtype == np.uint8 and images.shape == (ds.n_train + ds.n_test, 8, 8, 1)
    assert np.array_equal(images[ds.n_train:], ds.test_images)
    assert (masks.sum(axis=1) == round(0.5 * ds.n_train)).all()
    assert np.isfinite(margins).all()
    for key in ("dataset", "alpha", "seed", "arch", "hparams", "n_models", "versions", "git_commit", "mean_test_accuracy"):
        assert key in manifest
    assert manifest["n_models"] == 60 and manifest["dataset"]["n_train"] == ds.n_train
    assert manifest["mean_test_accuracy"] == pytest.approx(float((margins[:, ds.n_train:] > 0).mean()), abs=1e-4)
    # The per-target summary the dashboard ranks targets by is written with the margins.
    np.testing.assert_allclose(np.load(tiny_run / "target_mean_margin.npy"), np.asarray(margins).mean(axis=0), atol=1e-5)
    np.testing.assert_array_equal(np.load(tiny_run / "target_accuracy.npy"), (np.asarray(margins) > 0).mean(axis=0).astype(np.float32))


def test_masks_come_from_seed_and_index_alone(tiny_run):
    masks = np.load(tiny_run / "masks.npy", allow_pickle=False)
    n_train = masks.shape[1]
    for i in (0, 17, 59):
        assert np.array_equal(np.flatnonzero(masks[i]), model_subset(0, i, n_train, 0.5))
    assert not np.array_equal(masks[0], masks[1])


def test_model_reproduces_alone_as_in_a_batch(tiny_run):
    ds = load_dataset("digits")
    data = TrainingData.from_dataset(ds, resolve_device("cpu"))
    hp = resolve_hparams("mlp", {"epochs": 3, "hidden": 16})
    i = 41  # trained inside the second chunk of 30
    alone, _ = train_models(data, model_subset(0, i, ds.n_train, 0.5)[None], [model_seed(0, i)], "mlp", hp)
    margins = np.load(tiny_run / "margins.npy", allow_pickle=False)
    np.testing.assert_allclose(alone[0], margins[i], atol=1e-4)


def test_predictions_leave_margins_byte_identical_and_agree_with_them(tiny_run):
    ds = load_dataset("digits")
    data = TrainingData.from_dataset(ds, resolve_device("cpu"))
    hp = resolve_hparams("mlp", {"epochs": 3, "hidden": 16})
    subsets = np.stack([model_subset(0, i, ds.n_train, 0.5) for i in (0, 1)])
    plain, _ = train_models(data, subsets, [model_seed(0, i) for i in (0, 1)], "mlp", hp)
    margins, _, predictions = train_models(data, subsets, [model_seed(0, i) for i in (0, 1)], "mlp", hp,
                                           with_predictions=True)
    assert plain.tobytes() == margins.tobytes() and predictions.dtype == np.int16
    np.testing.assert_array_equal(predictions == ds.target_labels()[None], margins > 0)
    shard = read_shard_predictions(tiny_run, *shard_ranges(tiny_run)[0])
    np.testing.assert_array_equal(shard[:2], predictions)


def test_full_training_set_mlp_reaches_95_percent():
    ds = load_dataset("digits")
    data = TrainingData.from_dataset(ds, resolve_device("cpu"))
    hp = resolve_hparams("mlp", {})
    subsets = np.tile(np.arange(ds.n_train), (3, 1))
    margins, _ = train_models(data, subsets, [model_seed(7, i) for i in range(3)], "mlp", hp)
    assert (margins[:, ds.n_train:] > 0).mean() >= 0.95


def test_top_up_equals_one_go(tmp_path, tiny_run):
    out = tmp_path / "topup"
    run_cli("train", "--models", "20", "--out", out, "--batch-models", "30", *FAST_TRAIN, in_process=True)
    summary = json.loads(run_cli("train", "--models", "60", "--out", out, "--batch-models", "30", *FAST_TRAIN, "--json",
                                 in_process=True).stdout)
    assert summary["trained_now"] == 40 and summary["n_models"] == 60
    assert np.array_equal(np.load(out / "masks.npy"), np.load(tiny_run / "masks.npy"))
    np.testing.assert_allclose(np.load(out / "margins.npy"), np.load(tiny_run / "margins.npy"), atol=1e-4)


def test_shard_workers_merge_to_the_same_run(tmp_path, tiny_run):
    out = tmp_path / "workers"
    for i in range(3):
        run_cli("train", "--models", "60", "--out", out, "--shard", f"{i}/3", "--batch-models", "30", *FAST_TRAIN,
                in_process=True)
    assert json.loads(run_cli("merge", "--run", out, "--json", in_process=True).stdout)["n_models"] == 60
    assert np.array_equal(np.load(out / "masks.npy"), np.load(tiny_run / "masks.npy"))
    np.testing.assert_allclose(np.load(out / "target_accuracy.npy"), np.load(tiny_run / "target_accuracy.npy"))
    np.testing.assert_allclose(np.load(out / "margins.npy"), np.load(tiny_run / "margins.npy"), atol=1e-4)


def test_resnet9_trains_on_a_cifar_fixture(tmp_path):
    from tests.dataset_files import write_cifar10_binary

    rng = np.random.default_rng(0)
    train_x = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    test_x = rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    train_y, test_y = np.arange(40) % 10, np.arange(10) % 10
    write_cifar10_binary(tmp_path / "c10", train_x, train_y, test_x, test_y, tuple(f"c{i}" for i in range(10)))
    out = tmp_path / "cifar_run"
    run_cli("train", "--dataset", "cifar10", "--data-dir", tmp_path / "c10", "--models", "2", "--out", out,
            "--arch", "resnet9", "--epochs", "1", "--batch-size", "8", "--width", "0.0625",  # CPU's default: cnn
            in_process=True)
    run = Run(out)
    assert run.manifest["arch"] == "resnet9" and run.manifest["hparams"]["augment"] is True
    assert run.margins.shape == (2, 50) and np.isfinite(run.margins).all()
    assert (run.masks.sum(1) == subset_size(40, 0.5)).all()
