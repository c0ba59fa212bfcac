"""`attribute`: any method's scores in resumable blocks, stored with their meta.json."""
import json
import shutil

import numpy as np
import pytest

from backend.attribution.compute import attribute
from backend.attribution.methods import make
from backend.attribution.store import available, read_meta, read_scores, read_self_scores
from backend.store.blocks import BlockedOutput
from backend.store.run_dir import Run
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def fitted(tiny_run, tmp_path_factory):
    """tiny_run with its test targets' datamodels fitted, the rows `datamodels` scores (its self-scores come from
    masks and margins): fitting the training targets too would double the fixture's CPU time."""
    out = tmp_path_factory.mktemp("attribution") / "run"
    shutil.copytree(tiny_run, out)
    run_cli("fit", "--run", out, "--n-lambdas", "5", "--targets", "test", "--device", "cpu", in_process=True)
    return out


def test_datamodels_scores_are_the_test_rows_of_the_weights(fitted):
    result = run_cli("attribute", "--run", fitted, "--method", "datamodels", "--block-rows", "7", "--json")
    summary = json.loads(result.stdout)
    run = Run(fitted)
    weights = np.load(fitted / "weights.npy")
    assert np.array_equal(read_scores(run, "datamodels"), weights[run.n_train:])
    meta = read_meta(run, "datamodels")
    assert meta["models"] == {"kind": "alpha-subset", "n_models": 60, "trained": 0} == summary["models"]
    assert meta["bytes"] == run.n_test * run.n_train * 4 and "git_commit" in meta["code_version"]
    assert available(run) == ["datamodels"]
    assert not (fitted / ".partial" / "attribution-datamodels").exists()


def test_an_interrupted_attribution_keeps_its_finished_blocks(fitted):
    run = Run(fitted)
    method = make("datamodels", run)
    staged = BlockedOutput(run.dir, "attribution-datamodels", {"method": "datamodels", "config": method.config},
                           {"scores": ("float32", (run.n_test, run.n_train))}, 50)
    staged.write(1, scores=np.full((50, run.n_train), 7.0, np.float32))  # as if a killed call had scored block 1
    steps = []
    meta = attribute(run, method, block_rows=50, progress=lambda done, total, unit: steps.append((done, total)))
    scores = read_scores(run, "datamodels")
    assert meta["resumed_blocks"] == 1 and np.all(scores[50:100] == 7.0)
    assert np.array_equal(scores[:50], np.load(fitted / "weights.npy")[run.n_train:run.n_train + 50])
    # preparation, the blocks, the self-scores: one step each
    assert steps[0] == (0, 2 + staged.n_blocks) and steps[-1] == (2 + staged.n_blocks, 2 + staged.n_blocks)
    np.testing.assert_allclose(read_self_scores(run, "datamodels"), method.self_scores(), rtol=1e-6)


def test_progress_is_one_bar_of_blocks_through_a_methods_own_preparation(tiny_run, tmp_path):
    """influence's preparation trains a control model and counts its own units (model, step): the job's bar must stay
    in blocks, its total fixed and its count rising, or the CLI reopens the bar as "0/4 models" of the job's total."""
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    run = Run(out)
    calls = []
    attribute(run, make("influence", run, device="cpu", influence_params="last"), block_rows=50,
              progress=lambda done, total, unit: calls.append((done, total, unit)))
    total = 2 + -(-run.n_test // 50)
    prepared = [c for c in calls if 0 < c[0] < 1]
    assert prepared and {unit for _, _, unit in calls} == {"block"} and {t for _, t, _ in calls} == {total}
    done = [d for d, _, _ in calls]
    assert done == sorted(done) and done[0] == 0 and done[-1] == total


def test_an_unknown_method_is_one_line_and_exit_2(fitted):
    result = run_cli("attribute", "--run", fitted, "--method", "nope", check=False)
    assert result.returncode == 2 and "invalid choice: 'nope'" in result.stderr


def test_every_listed_method_is_registered_by_its_module():
    import importlib

    from backend.attribution import base
    from backend.attribution.methods import METHODS, MODULES

    for module in set(MODULES.values()):
        importlib.import_module(f"backend.attribution.{module}")
    assert sorted(base.METHODS) == list(METHODS)
