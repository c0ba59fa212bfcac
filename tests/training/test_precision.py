"""Training precision (fp32 / bf16 autocast) and the engine's batching: model k of a batch is model k alone.

Tolerances. fp32: the batched and the lone model run the same arithmetic per model; only a GEMM's
blocking may reorder a sum, so margins (of size ~5) agree to 1e-5. bf16: every matmul rounds its inputs
to 8 significant bits (unit roundoff 2^-8); a batch that blocks its GEMM differently from a lone model may
round one product the other way, which three epochs of SGD carry to the margins. One bf16 ulp of a margin
of 4-8 is 2^-5 = 0.031; we allow 0.05 (observed: < 1e-5 on AVX-512-bf16). bf16 vs fp32 margins of the same
models differ by the rounding itself, carried along by training: we ask that their mean absolute difference
stays under 10 % of the mean difference between two models of the batch (a different subset and seed) and that
97 % of the margins' signs agree (observed on CPU: MLP 0.7 % of the spread and 99.9 %; the conv nets 2-6 % of the
between-model gap and 98-99 %). On CUDA the same tests run with the same tolerances (cuDNN's fp32 convolutions
forced to real fp32, `engine.strict_fp32`).
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from backend.datasets import Dataset, load_dataset
from backend.training import engine
from backend.training.engine import (TrainingData, cache_group, epoch_orders, model_keys, resolve_device, resolve_precision,
                                     train_models)
from backend.training.retraining import training_data
from backend.store.run_dir import Run
from backend.training.subsets import model_seed, model_subset
from backend.training.train_stage import resolve_hparams
from tests.conftest import FAST_TRAIN, run_cli

BATCH_TOLERANCE = {"fp32": 1e-5, "bf16": 0.05}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _rgb16() -> Dataset:
    """600 + 100 random 16x16 RGB images labelled by the brightness of their top half (learnable)."""
    images = np.random.default_rng(0).integers(0, 256, (700, 16, 16, 3), dtype=np.uint8)
    labels = np.minimum(images[:, :8].mean(axis=(1, 2, 3)).astype(np.int64) * 10 // 256, 9)
    return Dataset(name="rgb16", train_images=images[:600], train_labels=labels[:600], test_images=images[600:],
                   test_labels=labels[600:], class_names=tuple(str(i) for i in range(10)))


def _models(K: int, images: str = "digits"):
    """Digits, or for airbench (three pooling stages: 16x16 at least) synthetic 16x16 RGB images."""
    ds = load_dataset("digits") if images == "digits" else _rgb16()
    subsets = np.stack([model_subset(0, i, ds.n_train, 0.5) for i in range(K)])
    return ds, subsets, [model_seed(0, i) for i in range(K)]


# Every architecture, small. A batch's grouped convolutions may sum in another order than a lone model's (1e-7), and
# a large step carries that apart as in any chaotic system: ResNet-9 at its lr 0.5 (one epoch of digits, width 1/8)
# ends up to 0.1 apart for some models and 1e-6 for others, airbench at its own lr (1.5, BatchNorm biases at 96)
# 1e-4 after two epochs, while at lr 1e-6 every model is within 4e-8 of itself alone (CPU). So the conv nets run
# at learning rates where batching shows its arithmetic, not chaos: ResNet-9 at 0.1, airbench at the CNN's 0.2.
ARCHS = [("mlp", {"epochs": 3, "hidden": 16}, "digits"), ("cnn", {"epochs": 2, "width": 0.5}, "digits"),
         ("resnet9", {"epochs": 1, "width": 0.125, "batch_size": 64, "lr": 0.1, "augment": False}, "digits"),
         ("airbench", {"epochs": 1, "width": 0.125, "batch_size": 64, "lr": 0.2}, "synthetic")]


# bf16 on the CPU: the MLP and one conv net, the CNN. ResNet-9 and airbench batch their convolutions as the CNN does
# (fp32 here) and train in bf16 in the next test; their bf16 cases here cost 14 and 10 s of CPU (the lone models'
# ungrouped bf16 convolutions, without AMX), the six other CPU cases 7 s together.
BATCH_CASES = [(*arch, precision, device) for arch in ARCHS for precision in ("fp32", "bf16") for device in DEVICES
               if not (precision == "bf16" and device == "cpu" and arch[0] in ("resnet9", "airbench"))]


@pytest.mark.parametrize("arch, overrides, images, precision, device", BATCH_CASES)
def test_model_k_of_a_batch_equals_model_k_trained_alone(precision, arch, overrides, images, device):
    ds, subsets, seeds = _models(6, images)
    data = TrainingData.from_dataset(ds, resolve_device(device), precision)
    hp = resolve_hparams(arch, overrides)
    batch, _ = train_models(data, subsets, seeds, arch, hp)
    worst = 0.0
    for k in (0, 3, 5):
        alone, _ = train_models(data, subsets[k:k + 1], seeds[k:k + 1], arch, hp)
        np.testing.assert_allclose(alone[0], batch[k], rtol=0, atol=BATCH_TOLERANCE[precision])
        worst = max(worst, float(np.abs(alone[0] - batch[k]).max()))
    assert np.abs(batch[0] - batch[1]).max() > max(10 * worst, 1e-2)  # the models do differ, far beyond that


def test_a_batch_larger_than_the_cache_group_trains_each_model_as_alone(monkeypatch):
    monkeypatch.setattr(engine, "_last_level_cache_bytes", lambda: 32 << 20)  # this machine's L3, on any CI machine
    ds, subsets, seeds = _models(45)
    data = TrainingData.from_dataset(ds, resolve_device("cpu"), "fp32")
    hp = resolve_hparams("mlp", {"epochs": 1})
    assert cache_group("mlp", data.train_x.device, 64, 10, hp) == 41  # digits' MLP: 41 x 200 kB in 8 MiB
    batch, _, predictions = train_models(data, subsets, seeds, "mlp", hp, with_predictions=True)
    assert batch.shape == (45, ds.n_train + ds.n_test) and predictions.shape == batch.shape
    alone, _ = train_models(data, subsets[44:], seeds[44:], "mlp", hp)
    np.testing.assert_allclose(alone[0], batch[44], rtol=0, atol=BATCH_TOLERANCE["fp32"])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("arch, overrides, images", ARCHS)
def test_bf16_margins_agree_with_fp32_margins_of_the_same_models(arch, overrides, images, device):
    ds, subsets, seeds = _models(6, images)
    hp = resolve_hparams(arch, overrides)
    if arch != "mlp":  # the conv nets at a tenth of the lr above: at the CNN's 0.2, bf16 and fp32 end 0.15 apart
        hp["lr"] /= 10  # (a third of the gap between two models, 89 % signs), at 0.02 0.003 (2 %, 99.2 %)
    dev = resolve_device(device)
    fp32, _ = train_models(TrainingData.from_dataset(ds, dev, "fp32"), subsets, seeds, arch, hp)
    bf16, _ = train_models(TrainingData.from_dataset(ds, dev, "bf16"), subsets, seeds, arch, hp)
    assert bf16.dtype == np.float32
    # Against an independent yardstick, two different models of the same batch: rounding must move a model's
    # margins far less than a different subset and seed do.
    between_models = np.abs(fp32[0] - fp32[1]).mean()
    assert np.abs(bf16 - fp32).mean() < 0.1 * between_models
    assert ((bf16 > 0) == (fp32 > 0)).mean() > 0.97
    assert not np.array_equal(bf16, fp32)  # bf16 did run


def test_each_models_shuffle_is_a_permutation_of_its_subset_and_independent_of_the_batch():
    _, subsets, seeds = _models(5)
    subsets_t, seeds_t = torch.from_numpy(subsets), torch.tensor(seeds)
    orders = epoch_orders(subsets_t, seeds_t, epoch=2)
    for k in range(5):
        np.testing.assert_array_equal(np.sort(orders[k].numpy()), np.sort(subsets[k]))
        alone = epoch_orders(subsets_t[k:k + 1], seeds_t[k:k + 1], epoch=2)[0]
        assert torch.equal(alone, orders[k])
    assert not torch.equal(orders, epoch_orders(subsets_t, seeds_t, epoch=3))  # a fresh shuffle every epoch
    # Every position is equally likely: over many epochs each element sits in the first half about half the time.
    first_half = np.mean([np.isin(subsets[0][:len(subsets[0]) // 2],
                                  epoch_orders(subsets_t[:1], seeds_t[:1], e)[0, :len(subsets[0]) // 2].numpy()).mean()
                          for e in range(200)])
    assert abs(first_half - 0.5) < 0.02


def test_each_models_shuffle_is_the_stable_argsort_of_its_keys():
    # The oracle is the definition: a stable torch argsort of the model's hashed keys (numpy's unstable sort agrees
    # only because a model's keys are distinct).
    _, subsets, seeds = _models(7)
    subsets_t, seeds_t = torch.from_numpy(subsets), torch.tensor(seeds)
    for epoch in (0, 5):
        keys = model_keys(seeds_t, epoch, subsets.shape[1])
        assert all(len(set(row.tolist())) == subsets.shape[1] for row in keys)
        assert torch.equal(epoch_orders(subsets_t, seeds_t, epoch), subsets_t.gather(1, keys.argsort(dim=1, stable=True)))


def test_auto_precision_follows_the_cpus_bf16_instructions():
    flags = set()
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("flags"):
                flags |= set(line.split(":", 1)[1].split())
    native = bool(flags & {"amx_bf16", "avx512_bf16"})
    assert resolve_precision("auto", torch.device("cpu")) == ("bf16" if native else "fp32")
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    with pytest.raises(ValueError, match="unknown precision 'fp16': use fp32, bf16 or auto"):
        resolve_precision("fp16", torch.device("cpu"))


def test_the_run_records_its_precision_and_its_retrains_use_it(tiny_run):
    assert json.loads((tiny_run / "manifest.json").read_text())["precision"] == "fp32"
    assert training_data(Run(tiny_run), "cpu").precision == "fp32"


def test_a_top_up_in_the_other_precision_is_refused_with_one_line(tiny_run, tmp_path):
    fast = [a for a in FAST_TRAIN if a not in ("--precision", "fp32")]
    refused = run_cli("train", "--models", "70", "--out", tiny_run, *fast, "--precision", "bf16", check=False)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"error: {tiny_run} was trained in fp32: top it up with --precision fp32 (or start a new --out), not bf16"]
    # A run made before the option trained in fp32: its manifest has no precision, and bf16 is refused too.
    old = tmp_path / "old"
    shutil.copytree(tiny_run, old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["precision"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    refused = run_cli("train", "--models", "70", "--out", old, *fast, "--precision", "bf16", check=False)
    assert refused.returncode == 2 and "was trained in fp32" in refused.stderr
    assert training_data(Run(old), "cpu").precision == "fp32"
