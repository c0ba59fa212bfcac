import pytest

from backend.training.architectures import DEFAULT_HPARAMS, build


def test_an_unknown_architecture_names_the_ones_build_supports():
    with pytest.raises(ValueError, match=r"unknown architecture 'vit': choose one of \['cnn', 'mlp', 'resnet9'\]"):
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
