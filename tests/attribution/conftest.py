"""The gradient methods' fixture run, shared by their oracle tests and their dattri tests."""
import pytest

from tests.conftest import run_cli


@pytest.fixture(scope="session")
def narrow_run(tmp_path_factory):
    """Digits, 3 models with 4 hidden units (310 parameters, fewer than the 1297 training images), 3 epochs."""
    out = tmp_path_factory.mktemp("gradient") / "run"
    run_cli("train", "--dataset", "digits", "--alpha", "0.5", "--models", "3", "--seed", "0", "--out", out,
            "--epochs", "3", "--hidden", "4", in_process=True)
    return out
