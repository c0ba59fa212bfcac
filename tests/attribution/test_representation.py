"""representation: signed cosine similarity of control features, top 5 %, against a brute-force loop."""
import json
import math
import shutil

import numpy as np

from backend.attribution.representation import representation_scores
from backend.attribution.store import read_meta, read_scores
from backend.store.run_dir import Run
from tests.conftest import run_cli


def brute_force(test, test_labels, train, train_labels, fraction=0.05):
    out = np.zeros((len(test), len(train)))
    k = math.ceil(fraction * len(train))
    for t in range(len(test)):
        row = np.array([(1 if test_labels[t] == train_labels[i] else -1)
                        * test[t] @ train[i] / (np.linalg.norm(test[t]) * np.linalg.norm(train[i]))
                        for i in range(len(train))])
        keep = sorted(range(len(train)), key=lambda i: -abs(row[i]))[:k]
        out[t, keep] = row[keep]
    return out


def test_scores_are_signed_cosines_of_the_top_5_percent():
    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(100, 6)), rng.normal(size=(7, 6))
    train_labels, test_labels = rng.integers(0, 3, 100), rng.integers(0, 3, 7)
    got = representation_scores(test, train, test_labels, train_labels)
    assert got.dtype == np.float32 and np.allclose(got, brute_force(test, test_labels, train, train_labels), atol=1e-6)
    assert ((got != 0).sum(axis=1) == 5).all()


def test_representation_end_to_end_trains_the_control_model_it_needs(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    summary = json.loads(run_cli("attribute", "--run", run, "--method", "representation", "--json").stdout)
    assert summary["models"] == {"kind": "control", "n_models": 1, "trained": 1}
    r = Run(run)
    features, labels, n = np.load(run / "control_features.npy"), np.load(run / "labels.npy"), r.n_train
    expected = representation_scores(features[n:], features[:n], labels[n:], labels[:n])
    assert np.array_equal(read_scores(r, "representation"), expected)
    assert read_meta(r, "representation")["config"]["top_fraction"] == 0.05
