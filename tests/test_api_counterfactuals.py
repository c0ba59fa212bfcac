"""What the CLI's query verbs ask of backend.api (issue 30): removal heuristics, the competing class a relabelling
uses, a verified relabelling, target lists, the control models' summary and certified supports, against the run's
files read directly, brute force and the retrain store's entries."""
from __future__ import annotations

import json

import numpy as np
import pytest

from backend.api import MissingArtifact, RemovalError, open_run
from backend.store.targets import TargetError
from backend.training import retrain_store


@pytest.fixture(scope="module")
def api(dashboard_data_dir):
    return open_run(dashboard_data_dir / "runs" / "digits-tiny")


def brute_top(scores, k, sign=1):
    return [f"train:{j}" for _, j in sorted((-sign * s, j) for j, s in enumerate(scores) if sign * s > 0)][:k]


def brute_competitor(weights, train_labels, label, n_classes):
    """The wrong class whose training images carry the most negative weight in total (ties: the lowest class)."""
    pull = {c: sum(min(float(w), 0.0) for w, y in zip(weights, train_labels) if y == c) for c in range(n_classes)}
    return min((pull[c], c) for c in range(n_classes) if c != label)[1]


def indices(names):
    return [int(n.split(":")[1]) for n in names]


def test_top_and_bottom_removals_are_the_sorted_signed_weights(api):
    weights = np.load(api.run.dir / "weights.npy").astype(np.float64)
    for name in ("test:3", "train:9"):
        row = weights[api.column(name)]
        assert api.removal(name, "top", 12) == brute_top(row, 12)
        assert api.removal(name, "bottom", 12) == brute_top(row, 12, -1)


def test_random_removals_are_seeded_by_target_and_seed(api):
    labels = np.load(api.run.dir / "labels.npy")
    n_train = api.run.n_train
    label = labels[api.column("test:7")]
    drawn = api.removal("test:7", "random-class", 6, seed=3)
    ids = indices(drawn)
    assert len(set(ids)) == 6 and ids == sorted(ids) and all(labels[i] == label for i in ids)
    assert api.removal("test:7", "random-class", 6, seed=3) == drawn  # the same target and seed: the same set
    assert api.removal("test:7", "random-class", 6, seed=4) != drawn
    # The seed contract of `counterfactual --seed`: SeedSequence([seed, margins column]) draws the class's pool.
    pool = np.flatnonzero(labels[:n_train] == label)
    rng = np.random.default_rng(np.random.SeedSequence([3, api.column("test:7")]))
    assert ids == sorted(rng.choice(pool, size=6, replace=False).tolist())
    whole = indices(api.removal("test:7", "random-class", n_train))  # more than the class holds: all of it
    assert whole == pool.tolist()
    anywhere = indices(api.removal("train:2", "random", 40, seed=0))
    assert len(set(anywhere)) == 40 and anywhere == sorted(anywhere) and max(anywhere) < n_train
    with pytest.raises(RemovalError, match="unknown removal heuristic 'best'"):
        api.removal("test:7", "best", 3)
    with pytest.raises(RemovalError, match="k must be 1.."):
        api.removal("test:7", "top", 0)
    with pytest.raises(RemovalError, match="k must be 1.."):
        api.removal("test:7", "random", n_train + 1)


def test_random_removals_need_no_datamodels_and_top_names_fit(tiny_run):
    bare = open_run(tiny_run)
    assert len(bare.removal("test:1", "random", 5)) == 5
    with pytest.raises(MissingArtifact, match=r"fit them first with `.*precompute fit --run"):
        bare.removal("test:1", "top", 5)


def test_competitor_is_the_class_of_the_most_negative_weight(api):
    weights = np.load(api.run.dir / "weights.npy")
    labels = np.load(api.run.dir / "labels.npy")
    n_train, names = api.run.n_train, api.run.class_names
    for name in ("test:0", "test:1", "test:5", "train:30"):
        column = api.column(name)
        expected = brute_competitor(weights[column], labels[:n_train], labels[column], len(names))
        assert api.competitor(name) == names[expected] != api.label(name)


def test_target_lists_and_labels_by_name(api):
    labels = np.load(api.run.dir / "labels.npy")
    assert api.target_list("test:3-5, train:2,test:0") == ["test:3", "test:4", "test:5", "train:2", "test:0"]
    assert api.label("test:4") == api.run.class_names[labels[api.run.n_train + 4]]
    assert api.label("train:4") == api.run.class_names[labels[4]]
    for bad, says in (("test:5-3", "end must not be below"), ("", "no targets"), ("test:99999", "out of range")):
        with pytest.raises(TargetError, match=says):
            api.target_list(bad)


def test_control_summary_reads_control_json_and_the_feature_file(api):
    meta = json.loads((api.run.dir / "control.json").read_text())
    features = np.load(api.run.dir / "control_features.npy")
    assert api.control_summary() == {"n_control": len(np.load(api.run.dir / "control_margins.npy")),
                                     "mean_test_accuracy": meta["mean_test_accuracy"], "features_dim": features.shape[1]}


def test_a_removal_cap_may_be_raised(api):
    names = [f"train:{i}" for i in range(1, 701)]
    with pytest.raises(RemovalError, match="cap of 648"):
        api.check_removal(names)
    assert api.check_removal(names, max_remove=800) == names
    weights = np.load(api.run.dir / "weights.npy").astype(np.float64)
    np.testing.assert_allclose(api.removal_deltas(names, max_remove=800),
                               -weights[api.run.n_train:, 1:701].sum(1), atol=1e-5)


def test_verify_relabels_to_the_competitor_and_counts_test_flips(cf_run):
    api = open_run(cf_run)
    changed = api.removal("test:5", "top", 4)
    found = api.verify("test:5", changed, n_models=1, device="cpu", relabel=True)
    (entry,) = retrain_store.summaries(api.run)
    stored = retrain_store.load(api.run, entry["key"])
    competitor = api.run.class_names.index(api.competitor("test:5"))
    assert found.key == entry["key"] and found.relabelled_to == api.competitor("test:5")
    assert stored.request.remove.tolist() == sorted(indices(changed))
    assert stored.request.relabel.tolist() == [competitor] * 4
    margins = stored.margins.astype(np.float64)
    control = np.load(cf_run / "control_margins.npy").astype(np.float64).mean(0)
    n_train = api.run.n_train
    brute_flips = sum((control[c] > 0) != (margins[:, c].mean() > 0) for c in range(n_train, api.run.n_targets))
    assert found.test_flips == brute_flips
    assert found.actual_margin == pytest.approx(margins[:, api.column("test:5")].mean())
    removed = api.verify("test:5", changed, n_models=1, device="cpu")  # removing the same set: another entry
    assert removed.relabelled_to is None and removed.key != found.key


def test_certify_supports_mislabels_to_the_competitor(cf_run):
    api = open_run(cf_run)
    records = api.certify_supports(["test:1", "test:2"], 1, mislabel=True, budget=1, k_max=40, device="cpu")
    assert [r["name"] for r in records] == ["test:1", "test:2"]
    for record in records:
        assert record["mode"] == "mislabel" and record["k_max"] == 40 and record["budget"] == 1
        if record["support"] != 0:  # a target the controls already misclassify is not searched
            assert api.run.class_names[record["relabel_to"]] == api.competitor(record["name"])
    summary, path = api.write_support_summary(records, "test:1-2", mislabel=True)
    assert path == cf_run / "support" / "summary-mislabel.json" and summary["search"]["targets"] == 2
    assert json.loads(path.read_text())["targets"] == "test:1-2"


def test_vote_exports_keep_positions_and_add_names(api, tmp_path, monkeypatch):
    """The Leakage results page's exports through the API: votes and scores by target names, beside the integer
    positions the exports always wrote (their columns kept, in order); a vote on images the run lacks is named
    and told apart. Against the database's own rows and a hand count."""
    from backend.api import VOTE_EXPORT_COLUMNS, leakage_scores
    from backend.leakage import annotations as annotation_db

    db = tmp_path / "votes.db"
    db.touch()
    monkeypatch.setenv("DATAMODELS_DATABASE_URL", f"sqlite:///{db}")
    store = api.annotations()
    store.sign_in("ann"), store.sign_in("bob")
    store.submit("test:4", "ann", {"train:7": True, "train:2": False})
    store.submit("test:4", "bob", {"train:7": False})
    raw = annotation_db.shared_store()
    raw.submit(api.run.name, api.run.n_test + 3, "bob", {1: True})  # as another run of the same name could
    votes = store.votes()
    rows = {(v.annotator, v.test, v.train, v.is_leak, v.voted_at) for v in raw.votes(api.run.name)}
    records = [v.record(api.run.name) for v in votes]
    assert list(VOTE_EXPORT_COLUMNS[:6]) == ["run", "annotator", "test", "train", "is_leak", "voted_at"]
    assert all(list(r) == list(VOTE_EXPORT_COLUMNS) for r in records)
    assert {(r["annotator"], r["test"], r["train"], r["is_leak"]) for r in records} == {row[:4] for row in rows}
    assert all(r["test_name"] == f"test:{r['test']}" and r["train_name"] == f"train:{r['train']}" for r in records)
    stray = [v for v in votes if not store.in_run(v)]
    assert [(v.test, v.train) for v in stray] == [(f"test:{api.run.n_test + 3}", "train:1")]
    found = leakage_scores([v for v in votes if store.in_run(v)])
    assert found.records() == [
        {"test": 4, "train": 2, "annotators": 1, "marked": 0, "annotation_score": 0.0, "conflict": False,
         "leakage_score": 0.5, "test_name": "test:4", "train_name": "train:2"},
        {"test": 4, "train": 7, "annotators": 2, "marked": 1, "annotation_score": 0.5, "conflict": True,
         "leakage_score": 0.5, "test_name": "test:4", "train_name": "train:7"}]
    assert found.image_records() == [{"test": 4, "leakage_score": 0.5, "test_name": "test:4"}]
    json.dumps(records), json.dumps(found.records())  # plain Python values: the JSON exports need no converter
