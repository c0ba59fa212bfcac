"""ssl-esvm: exemplar-SVM scores against LinearSVC fitted directly, and the method end to end through the CLI."""
import json
import shutil

import numpy as np
import pytest
from sklearn.svm import LinearSVC

from backend.attribution.methods import make
from backend.attribution.ssl_esvm import DEFAULT_C, exemplar_scores
from backend.attribution.representation import knn_label_disagreement
from backend.attribution.store import read_meta, read_scores, read_self_scores
from backend.store.run_dir import Run
from tests.conftest import run_cli


def labelled_embeddings(seed=0, n_train=90, n_test=6, d=5, classes=3):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3, size=(classes, d))
    train_labels, test_labels = rng.integers(0, classes, n_train), rng.integers(0, classes, n_test)
    return (centres[test_labels] + rng.normal(size=(n_test, d)), test_labels,
            centres[train_labels] + rng.normal(size=(n_train, d)), train_labels)


def test_exemplar_svm_scores_are_linearsvc_decisions_on_the_same_class():
    test, test_labels, train, train_labels = labelled_embeddings()
    scores = exemplar_scores(test, test_labels, train, train_labels, "svm", c=0.1)
    for row, (e, label) in enumerate(zip(test, test_labels)):
        same = train_labels == label
        clf = LinearSVC(C=0.1, class_weight="balanced", tol=1e-6, max_iter=10_000)
        clf.fit(np.vstack([e, train[same]]), np.r_[1, np.zeros(same.sum())])
        decision = clf.decision_function(train[same])
        assert np.allclose(scores[row, same], decision - decision.min(), atol=1e-5)
        assert np.all(scores[row, ~same] == 0)
        assert np.argmax(scores[row]) == np.flatnonzero(same)[np.argmax(decision)]


def test_the_l2_variant_ranks_by_distance_within_the_class():
    test, test_labels, train, train_labels = labelled_embeddings(1)
    scores = exemplar_scores(test, test_labels, train, train_labels, "l2")
    for row, (e, label) in enumerate(zip(test, test_labels)):
        same = train_labels == label
        distance = np.sqrt(((train[same] - e) ** 2).sum(axis=1))
        assert np.allclose(scores[row, same], distance.max() - distance, atol=1e-5)
        assert np.all(scores[row, ~same] == 0)


@pytest.fixture(scope="module")
def run(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("ssl-esvm") / "run"
    shutil.copytree(tiny_run, out)
    return out


def test_ssl_esvm_end_to_end_stores_its_encoder_and_reuses_it(run):
    first = json.loads(run_cli("attribute", "--run", run, "--method", "ssl-esvm", "--ssl-epochs", "3",
                               "--block-rows", "200", "--json", in_process=True).stdout)
    assert first["models"]["trained"] == 1 and first["models"]["kind"] == "ssl-encoder"
    r = Run(run)
    n = r.n_train
    embeddings = np.load(run / "attribution" / "ssl-esvm" / "embeddings.npy")
    labels = np.load(run / "labels.npy")
    assert embeddings.shape == (r.n_targets, 128)
    scores = read_scores(r, "ssl-esvm")
    expected = exemplar_scores(embeddings[n:n + 20], labels[n:n + 20], embeddings[:n], labels[:n])
    assert np.allclose(scores[:20], expected, atol=1e-6)
    meta = read_meta(r, "ssl-esvm")
    assert meta["config"]["ssl"]["epochs"] == 3 and meta["config"]["C"] == DEFAULT_C
    np.testing.assert_array_equal(read_self_scores(r, "ssl-esvm"), knn_label_disagreement(embeddings[:n], labels[:n]))

    again = json.loads(run_cli("attribute", "--run", run, "--method", "ssl-esvm", "--ssl-epochs", "3",
                               "--esvm-score", "l2", "--json", in_process=True).stdout)
    assert again["models"]["trained"] == 0  # the stored encoder of the same settings is reused
    assert np.array_equal(np.load(run / "attribution" / "ssl-esvm" / "embeddings.npy"), embeddings)
    expected = exemplar_scores(embeddings[n:], labels[n:], embeddings[:n], labels[:n], "l2")
    assert np.allclose(read_scores(r, "ssl-esvm"), expected, atol=1e-5)
    assert "C" not in read_meta(r, "ssl-esvm")["config"]

    other = make("ssl-esvm", Run(run), device="cpu", epochs=2)
    other.prepare()
    assert other.models["trained"] == 1  # other settings retrain the encoder and replace its embeddings
    assert json.loads((run / "attribution" / "ssl-esvm" / "encoder.json").read_text())["config"]["epochs"] == 2
    assert not np.array_equal(np.load(run / "attribution" / "ssl-esvm" / "embeddings.npy"), embeddings)


@pytest.mark.parametrize("flags, message", [
    (["--method", "diff-of-means", "--esvm-c", "1"], "--esvm-c applies to --method ssl-esvm, not diff-of-means"),
    (["--method", "ssl-esvm", "--esvm-score", "l2", "--esvm-c", "1"], "--esvm-score l2 fits no SVM"),
    (["--method", "ssl-esvm", "--ssl-epochs", "0"], "outside 1..100,000"),
])
def test_flags_that_do_not_apply_are_one_line_and_exit_2(run, flags, message):
    result = run_cli("attribute", "--run", run, *flags, check=False)
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
