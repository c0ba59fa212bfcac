"""diff-of-means and empirical-influence against a brute-force loop over training images on the tiny run."""
import shutil

import numpy as np
import pytest

from backend.attribution.store import read_meta, read_scores, read_self_scores
from backend.store.run_dir import Run
from tests.conftest import run_cli


def brute_force(masks, outcome):
    """w[t, i] = mean outcome of target t over the models that saw i minus over those that did not."""
    out = np.zeros((outcome.shape[1], masks.shape[1]))
    for i in range(masks.shape[1]):
        seen = masks[:, i]
        if seen.any() and (~seen).any():
            out[:, i] = outcome[seen].mean(axis=0) - outcome[~seen].mean(axis=0)
    return out


@pytest.fixture(scope="module")
def run(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("marginal") / "run"
    shutil.copytree(tiny_run, out)
    return out


@pytest.mark.parametrize("method, correctness", [("diff-of-means", False), ("empirical-influence", True)])
def test_scores_are_the_per_pair_difference_of_means(run, method, correctness):
    run_cli("attribute", "--run", run, "--method", method, "--block-rows", "150", in_process=True)
    r = Run(run)
    masks = np.load(run / "masks.npy")
    margins = np.load(run / "margins.npy").astype(np.float64)[:, r.n_train:]
    expected = brute_force(masks, (margins > 0).astype(np.float64) if correctness else margins)
    assert np.allclose(read_scores(r, method), expected, atol=1e-5)
    assert read_meta(r, method)["models"] == {"kind": "alpha-subset", "n_models": 60, "trained": 0}
    # self-scores: the memorisation score, each training image's own outcome with it in minus out, all models
    own = np.load(run / "margins.npy").astype(np.float64)[:, :r.n_train]
    own = (own > 0).astype(np.float64) if correctness else own
    expected_self = [own[masks[:, i], i].mean() - own[~masks[:, i], i].mean() for i in range(r.n_train)]
    np.testing.assert_allclose(read_self_scores(r, method), expected_self, atol=1e-5)
