"""Training precision (fp32 / bf16 autocast) and the engine's batching: model k of a batch is model k alone.

Tolerances. fp32: the batched and the lone model run the same arithmetic per model; only a GEMM's
blocking may reorder a sum, so margins (of size ~5) agree to 1e-5. bf16: every matmul rounds its inputs
to 8 significant bits (unit roundoff 2^-8); a batch that blocks its GEMM differently from a lone model may
round one product the other way, which three epochs of SGD carry to the margins. One bf16 ulp of a margin
of 4-8 is 2^-5 = 0.031; we allow 0.05 (observed: < 1e-5 on AVX-512-bf16). bf16 vs fp32 margins of the same
models differ by the rounding itself: we ask that their mean absolute difference stays under 3 % of the
margins' spread and that 99 % of the predicted signs agree (observed: 0.7 % and 99.9 %).
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from backend.datasets import load_dataset
from backend.training import engine
from backend.training.engine import TrainingData, cache_group, epoch_orders, resolve_device, resolve_precision, train_models
from backend.training.retraining import training_data
from backend.store.run_dir import Run
from backend.training.subsets import model_seed, model_subset
from backend.training.train_stage import resolve_hparams
from tests.conftest import FAST_TRAIN, run_cli

BATCH_TOLERANCE = {"fp32": 1e-5, "bf16": 0.05}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _models(K: int):
    ds = load_dataset("digits")
    subsets = np.stack([model_subset(0, i, ds.n_train, 0.5) for i in range(K)])
    return ds, subsets, [model_seed(0, i) for i in range(K)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("arch, overrides", [("mlp", {"epochs": 3, "hidden": 16}), ("cnn", {"epochs": 2, "width": 0.5})])
def test_model_k_of_a_batch_equals_model_k_trained_alone(precision, arch, overrides, device):
    ds, subsets, seeds = _models(6)
    data = TrainingData.from_dataset(ds, resolve_device(device), precision)
    hp = resolve_hparams(arch, overrides)
    batch, _ = train_models(data, subsets, seeds, arch, hp)
    for k in (0, 3, 5):
        alone, _ = train_models(data, subsets[k:k + 1], seeds[k:k + 1], arch, hp)
        np.testing.assert_allclose(alone[0], batch[k], rtol=0, atol=BATCH_TOLERANCE[precision])
    assert not np.allclose(batch[0], batch[1], atol=0.1)  # the models do differ


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


def test_bf16_margins_agree_with_fp32_margins_of_the_same_models():
    ds, subsets, seeds = _models(6)
    hp = resolve_hparams("mlp", {"epochs": 3, "hidden": 16})
    fp32, _ = train_models(TrainingData.from_dataset(ds, resolve_device("cpu"), "fp32"), subsets, seeds, "mlp", hp)
    bf16, _ = train_models(TrainingData.from_dataset(ds, resolve_device("cpu"), "bf16"), subsets, seeds, "mlp", hp)
    assert bf16.dtype == np.float32
    assert np.abs(bf16 - fp32).mean() < 0.03 * fp32.std()
    assert ((bf16 > 0) == (fp32 > 0)).mean() > 0.99
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
