import json

import numpy as np
import pytest
import torch

from backend.training.architectures import DEFAULT_HPARAMS, BatchedAirbench, build
from backend.training.engine import strict_fp32
from tests.conftest import run_cli


def test_an_unknown_architecture_names_the_ones_build_supports():
    with pytest.raises(ValueError, match=r"unknown architecture 'vit': choose one of \['airbench', 'cnn', 'mlp', 'resnet9'\]"):
        build("vit", 1, (8, 8, 1), 10, [], DEFAULT_HPARAMS["mlp"])


def test_the_default_architecture_is_the_mlp_for_digits_and_the_cnn_for_small_images_on_cpu():
    import torch
    from backend.training.architectures import default_arch

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert default_arch("digits", (8, 8, 1), cpu) == "mlp"
    assert default_arch("npz:fashion", (28, 28, 1), cpu) == "cnn"
    assert default_arch("cifar10", (32, 32, 3), cpu) == "cnn"
    assert default_arch("cifar10", (32, 32, 3), cuda) == "resnet9"
    assert default_arch("big", (64, 64, 3), cpu) == "resnet9"


def _correlated_images(n: int, seed: int) -> torch.Tensor:
    """(n, 3, 16, 16) images whose neighbouring pixels and channels are strongly correlated (far from white)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, 1, 17, 17))
    smooth = base[:, :, 1:, 1:] + base[:, :, :-1, 1:] + base[:, :, 1:, :-1] + 0.3 * rng.normal(size=(n, 3, 16, 16))
    return torch.from_numpy(smooth * np.array([1.0, 2.0, 0.5])[None, :, None, None]).float()


def test_airbench_whitening_makes_each_models_own_patches_white():
    """The frozen 2x2 whitening (airbench94): model k's first 12 filters map model k's 2x2 patches to channels
    whose covariance is diag(e / (e + eps)) for the eigenvalues e of its patch covariance (numpy's eigh, the oracle);
    the other 12 filters are their negatives; and model k's filters do not depend on the other models of its batch."""
    x = _correlated_images(120, 0)
    subsets = torch.stack([torch.arange(0, 60), torch.arange(60, 120)])
    hp = dict(DEFAULT_HPARAMS["airbench"], width=0.125)
    model = build("airbench", 2, (16, 16, 3), 10, [torch.Generator().manual_seed(k) for k in range(2)], hp)
    model.init_whitening(x, subsets)
    w = model.whiten_conv.weight.detach().double()  # (2 * 24, 3, 2, 2)
    for k in range(2):
        own = x[subsets[k]].double()
        patches = own.unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 12).numpy()
        eig = np.linalg.eigvalsh(patches.T @ patches / len(patches))[::-1]
        filters = w[24 * k:24 * k + 12].reshape(12, 12).numpy()
        out = patches @ filters.T
        np.testing.assert_allclose(out.T @ out / len(out), np.diag(eig / (eig + 5e-4)), atol=1e-5)
        np.testing.assert_array_equal(w[24 * k + 12:24 * k + 24].numpy(), -w[24 * k:24 * k + 12].numpy())
        alone = build("airbench", 1, (16, 16, 3), 10, [torch.Generator().manual_seed(k)], hp)
        alone.init_whitening(x, subsets[k:k + 1])
        assert torch.equal(alone.whiten_conv.weight.detach().double(), w[24 * k:24 * (k + 1)])
    assert not model.whiten_conv.weight.requires_grad  # frozen, as airbench's
    assert {id(p) for p in model.bias_params()} == {id(m.bias) for m in model.modules()
                                                      if isinstance(m, torch.nn.BatchNorm2d)}


def test_airbench_without_whitening_trains_its_first_convolution():
    hp = dict(DEFAULT_HPARAMS["airbench"], width=0.125, whiten=False)
    model = build("airbench", 1, (16, 16, 3), 10, [torch.Generator().manual_seed(0)], hp)
    before = model.whiten_conv.weight.detach().clone()
    model.init_whitening(_correlated_images(10, 1), torch.arange(10)[None])
    assert model.whiten_conv.weight.requires_grad and torch.equal(model.whiten_conv.weight, before)


def test_strict_fp32_turns_off_cudnns_tf32_on_cuda_and_restores_it():
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    try:
        with strict_fp32(torch.device("cuda")):
            assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
        with strict_fp32(torch.device("cpu")):  # nothing to change on a CPU
            assert torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_airbench_trains_from_the_cli_and_the_manifest_records_its_recipe(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (96, 16, 16, 3), dtype=np.uint8)
    labels = np.minimum(images[:, :8].mean(axis=(1, 2, 3)).astype(np.int64) * 4 // 256, 3)
    data = tmp_path / "rgb16.npz"
    np.savez(data, images=images, labels=labels, split=np.array(["train"] * 64 + ["test"] * 32))
    run_cli("train", "--dataset", f"npz:{data}", "--models", "4", "--out", tmp_path / "run", "--arch", "airbench",
            "--epochs", "1", "--width", "0.125", "--batch-size", "16", "--precision", "fp32", "--device", "cpu",
            in_process=True)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["arch"] == "airbench"
    assert manifest["hparams"] == dict(DEFAULT_HPARAMS["airbench"], epochs=1, width=0.125, batch_size=16)
    margins = np.load(tmp_path / "run" / "margins.npy")
    assert margins.shape == (4, 96) and np.isfinite(margins).all()


def test_airbench_refuses_images_below_16_pixels_with_one_line(tmp_path):
    refused = run_cli("train", "--dataset", "digits", "--models", "2", "--out", tmp_path / "run", "--arch", "airbench",
                      "--device", "cpu", check=False)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "error: --arch airbench needs images of at least 16x16 (three pooling stages), not 8x8: use --arch mlp or cnn"]
