"""representation: signed cosine similarity of control features, top 5 %, against a brute-force loop."""
import json
import math
import shutil

import numpy as np

from backend.attribution.representation import knn_label_disagreement, representation_scores
from backend.attribution.store import read_meta, read_scores, read_self_scores
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


def test_knn_label_disagreement_is_sklearns_brute_force_neighbours():
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(1)
    features, labels = rng.normal(size=(230, 8)), rng.integers(0, 4, 230)
    got = knn_label_disagreement(features, labels, k=7, block=64)  # blocks that do not divide 230
    distance, nearest = NearestNeighbors(n_neighbors=8, metric="cosine", algorithm="brute").fit(features).kneighbors(
        features)
    assert (nearest[:, 0] == np.arange(230)).all()  # each row's nearest is itself, which the score leaves out
    similarity = np.clip(1 - distance[:, 1:], 0, None)  # sklearn's cosine distance is 1 − cos
    expected = (similarity * (labels[nearest[:, 1:]] != labels[:, None])).sum(axis=1) / 7
    assert got.dtype == np.float32 and np.allclose(got, expected, atol=1e-6)


def test_knn_label_disagreement_ranks_the_image_closer_to_its_disagreeing_neighbours_first():
    # 0 and 1 (label 0) each have only label-1 images (2, 3, 4) among their 3 nearest, so the share of
    # disagreeing neighbours is 1 for both; 0 lies nearer them (angles 0.02–0.07 against 0.65–0.7), so it is
    # the likelier mislabel. 5 and 6 (label 1) lie opposite, each nearest the other and then 1 and 0.
    angles = np.array([0.12, -0.6, 0.05, 0.08, 0.1, np.pi, np.pi + 0.1])
    features, labels = np.c_[np.cos(angles), np.sin(angles)], np.array([0, 0, 1, 1, 1, 1, 1])
    got = knn_label_disagreement(features, labels, k=3)
    assert np.isclose(got[0], np.cos([0.02, 0.04, 0.07]).mean(), atol=1e-6)
    assert np.isclose(got[1], np.cos([0.65, 0.68, 0.7]).mean(), atol=1e-6)
    assert got[0] > got[1]
    assert got[5] == got[6] == 0  # their neighbours of another label point away (cos < 0): clamped to nothing


def test_representation_end_to_end_trains_the_control_model_it_needs(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    summary = json.loads(run_cli("attribute", "--run", run, "--method", "representation", "--json",
                                 in_process=True).stdout)
    assert summary["models"] == {"kind": "control", "n_models": 1, "trained": 1}
    r = Run(run)
    features, labels, n = np.load(run / "control_features.npy"), np.load(run / "labels.npy"), r.n_train
    expected = representation_scores(features[n:], features[:n], labels[n:], labels[:n])
    assert np.array_equal(read_scores(r, "representation"), expected)
    assert read_meta(r, "representation")["config"]["top_fraction"] == 0.05
    np.testing.assert_array_equal(read_self_scores(r, "representation"), knn_label_disagreement(features[:n], labels[:n]))
