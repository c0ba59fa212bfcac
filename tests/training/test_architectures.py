import pytest

from backend.training.architectures import DEFAULT_HPARAMS, build


def test_an_unknown_architecture_names_the_ones_build_supports():
    with pytest.raises(ValueError, match=r"unknown architecture 'vit': choose one of \['mlp', 'resnet9'\]"):
        build("vit", 1, (8, 8, 1), 10, [], DEFAULT_HPARAMS["mlp"])
