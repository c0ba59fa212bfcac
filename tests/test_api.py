"""backend.api by target names, against the stored arrays read directly and brute-force sorts; BatchedLasso
against scikit-learn; the README's notebook example run as written."""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from backend.api import RemovalError, MissingArtifact, leakage_scores, open_run
from backend.store.catalog import DATA_DIR_ENV
from backend.store.errors import RunError
from backend.store.targets import TargetError
from precompute.cli import build_parser
from tests.oracles import objective, random_problem, sklearn_lasso

README = Path(__file__).resolve().parents[1] / "README.md"
MAKEFILE_VENV = ".venv"


@pytest.fixture(scope="module")
def api(dashboard_data_dir):
    return open_run(dashboard_data_dir / "runs" / "digits-tiny")


def brute_top(scores, k, sign=1):
    return [f"train:{j}" for _, j in sorted((-sign * s, j) for j, s in enumerate(scores) if sign * s > 0)][:k]


def test_top_by_every_method_is_the_sorted_positive_scores(api):
    run = api.run
    weights = np.load(run.dir / "weights.npy")
    assert api.methods() == ["datamodels", "fixture-permuted"]
    for name in ("test:3", "train:9"):
        row = weights[api.column(name)].astype(np.float64)
        assert api.top(name, 10) == brute_top(row, 10)
        assert api.top(name, 10, side="negative") == brute_top(row, 10, -1)
    scores = np.load(run.dir / "attribution" / "fixture-permuted" / "scores.npy")[3]
    assert api.top("test:3", 7, method="fixture-permuted") == brute_top(scores.astype(np.float64), 7)
    np.testing.assert_array_equal(api.self_scores("fixture-permuted"),
                                  np.load(run.dir / "attribution" / "fixture-permuted" / "self_scores.npy"))
    with pytest.raises(TargetError, match="scores test targets only"):
        api.scores("train:9", "fixture-permuted")


def test_predicted_removal_is_control_minus_the_weights(api):
    run = api.run
    removed = api.top("test:3", 10)
    got = api.predict_removal("test:3", removed)
    column = run.n_train + 3
    ids = sorted(int(n.split(":")[1]) for n in removed)
    control = np.load(run.dir / "control_margins.npy").astype(np.float64).mean(0)
    weights = np.load(run.dir / "weights.npy").astype(np.float64)
    assert got.removed == [f"train:{i}" for i in ids]
    assert got.control_margin == pytest.approx(control[column])
    assert got.predicted_margin == pytest.approx(control[column] - weights[column, ids].sum())
    test_after = control[run.n_train:] - weights[run.n_train:, ids].sum(1)
    flipped = {f"test:{j}" for j in np.flatnonzero((control[run.n_train:] > 0) != (test_after > 0))}
    assert set(got.flipped_test) == flipped
    with pytest.raises(TargetError, match="test image"):
        api.predict_removal("test:3", ["test:1"])
    with pytest.raises(TypeError):
        api.predict_removal("test:3", "train:1")


def test_leak_candidates_similar_targets_and_stats_read_the_stored_arrays(api):
    run = api.run
    found = api.leak_candidates("test:4", n=3)
    top = np.load(run.dir / "leakage" / "weight_top.npy")[4]
    assert [c.train for c in found if c.source == "top weight"] == [f"train:{j}" for j in top[:3] if j >= 0]
    with pytest.raises(TargetError, match="test images"):
        api.leak_candidates("train:4")
    neighbours = np.load(run.dir / "structure" / "neighbors.npy")[run.n_train + 4]
    assert [n for n, _ in api.similar("test:4", 5)] == [api.name(c) for c in neighbours[:5]]
    stats = api.stats("test:4")
    column = run.n_train + 4
    assert stats["mean_margin"] == pytest.approx(np.load(run.dir / "margins.npy")[:, column].astype(np.float64).mean(), rel=1e-5)
    assert stats["nonzero_weights"] == int(np.count_nonzero(np.load(run.dir / "weights.npy")[column]))
    assert api.stats("train:0")["lam"] is None  # left unfitted by the fixture


def hinted_command(message: str) -> list[str]:
    """The command a one-line hint names (between backticks), checked to be one that runs after `make run`:
    the venv the Makefile makes, and arguments the CLI's own parser accepts."""
    (command,) = re.findall(r"`([^`]+)`", message)
    argv = shlex.split(command)
    assert argv[:3] == [f"{MAKEFILE_VENV}/bin/python", "-m", "precompute"], command
    build_parser().parse_args(argv[3:])  # argparse exits on an unknown verb or flag
    return argv


def test_missing_artifacts_name_a_runnable_command_in_one_line(api, tiny_run, tmp_path):
    bare = open_run(tiny_run)
    for call, command in ((lambda: bare.top("test:1"), f"fit --run {tiny_run}"),
                          (lambda: bare.leak_candidates("test:1"), f"analyze --run {tiny_run}"),
                          (lambda: bare.similar("test:1"), f"analyze --run {tiny_run}"),
                          (lambda: api.top("test:1", method="trak"), f"attribute --run {api.run.dir} --method trak"),
                          (lambda: api.self_scores("trak"), f"attribute --run {api.run.dir} --method trak"),
                          (lambda: open_run(tmp_path / "nowhere"), f"all --dataset digits --out {tmp_path / 'nowhere'}")):
        with pytest.raises(RunError) as info:
            call()
        assert "\n" not in str(info.value)
        assert hinted_command(str(info.value))[3:] == shlex.split(command), str(info.value)
    with pytest.raises(TargetError, match="out of range"):
        api.top("test:99999")
    with pytest.raises(ValueError, match="a method is a name"):
        api.top("test:1", method="../../datamodels")


def test_the_hints_venv_is_the_one_make_run_makes():
    makefile = (README.parent / "Makefile").read_text()
    assert re.search(rf"^VENV := {re.escape(MAKEFILE_VENV)}$", makefile, re.M)
    assert f"{MAKEFILE_VENV}/bin/python -m precompute" in README.read_text()


def test_verify_retrains_without_the_set_and_reuses_it(cf_run):
    api = open_run(cf_run)
    removed = api.top("test:2", 5)
    first = api.verify("test:2", removed, n_models=2, device="cpu")
    from backend.training import retrain_store
    (summary,) = retrain_store.summaries(api.run)
    stored = retrain_store.load(api.run, summary["key"])
    assert stored.request.remove.tolist() == sorted(int(n.split(":")[1]) for n in removed)
    assert first.actual_margin == pytest.approx(stored.margins[:, api.column("test:2")].astype(np.float64).mean())
    assert first.margins == tuple(stored.margins[:, api.column("test:2")].astype(float).tolist())
    assert (first.trained_now, first.reused) == (2, 0)
    again = api.verify("test:2", removed, n_models=2, device="cpu")
    assert again == first and (again.trained_now, again.reused) == (0, 2)  # from the store: nothing trained
    (logged,) = api.verified_removals()  # the Counterfactuals page's Fig. 8 record, by target name
    assert logged["target"] == "test:2" and logged["n_removed"] == len(removed)
    assert logged["predicted_delta"] == pytest.approx(first.prediction.delta)
    assert logged["actual_delta"] == pytest.approx(first.actual_delta)


def brute_ends(values, k, start=0, prefix="test"):
    """(k highest, highest first; k lowest, lowest first), ties to the lower index, as names."""
    order = sorted(range(len(values)), key=lambda j: (-values[j], j))
    low = sorted(range(len(values)), key=lambda j: (values[j], j))
    return [f"{prefix}:{start + j}" for j in order[:k]], [f"{prefix}:{start + j}" for j in low[:k]]


def test_pca_ends_are_the_sorted_projections_and_coordinates(api):
    """The PCA page's grids: the two ends of a component among test targets, training targets and coordinates."""
    run = api.run
    components = np.load(run.dir / "structure" / "pca_components.npy")
    projections = np.load(run.dir / "structure" / "pca_projections.npy")
    got_components, got_projections = api.pca()
    np.testing.assert_array_equal(got_components, components)
    np.testing.assert_array_equal(got_projections, projections)
    for pc in (0, len(components) - 1):
        assert api.pc_extremes(pc, 4, "test") == brute_ends(projections[run.n_train:, pc].tolist(), 4)
        assert api.pc_extremes(pc, 4, "train") == brute_ends(projections[:run.n_train, pc].tolist(), 4, prefix="train")
        assert api.pc_extremes(pc, 6, "coordinates") == brute_ends(components[pc].tolist(), 6, prefix="train")
    with pytest.raises(ValueError, match="among"):
        api.pc_extremes(0, 4, "everything")


def test_pca_ends_among_a_tag_rank_only_its_targets_or_training_images(api):
    """The PCA page's tag filter: every third target (a tag's margins columns, train and test mixed) ranks alone."""
    run = api.run
    components = np.load(run.dir / "structure" / "pca_components.npy")
    projections = np.load(run.dir / "structure" / "pca_projections.npy")
    tagged = np.arange(1, run.n_targets, 3)
    train, test = tagged[tagged < run.n_train], tagged[tagged >= run.n_train] - run.n_train

    def ends(values, kept, k, start, prefix):
        sub = brute_ends([values[j] for j in kept], k)
        return tuple([f"{prefix}:{start + kept[int(n.split(':')[1])]}" for n in side] for side in sub)

    pc = 1
    assert api.pc_extremes(pc, 5, "test", tagged=tagged) == ends(projections[run.n_train:, pc], test, 5, 0, "test")
    assert api.pc_extremes(pc, 5, "train", tagged=tagged) == ends(projections[:run.n_train, pc], train, 5, 0, "train")
    assert api.pc_extremes(pc, 5, "coordinates", tagged=tagged) == ends(components[pc], train, 5, 0, "train")
    assert api.pc_extremes(pc, 5, "test", tagged=np.arange(run.n_train)) == ([], [])  # a tag of training images only


def brute_support(weights, margin):
    if margin <= 0:
        return 0.0
    total = 0.0
    for k, w in enumerate(sorted((w for w in weights if w > 0), reverse=True), start=1):
        total += w
        if total > margin:
            return float(k)
    return float("inf")


def test_what_the_counterfactuals_page_reads_is_the_stored_arrays(api):
    """Removal deltas −Σ w, heuristic supports (App. F.3.2), the class's top weights, the basket's text and the
    brittleness curve, against weights.npy and control_margins.npy read directly and brute force."""
    run = api.run
    weights = np.load(run.dir / "weights.npy").astype(np.float64)
    control = np.load(run.dir / "control_margins.npy").astype(np.float64).mean(0)
    np.testing.assert_allclose(api.control_margins(), control)
    removed = api.check_removal(["train:9", "train:3", "train:9", "train:40"])
    assert removed == ["train:3", "train:9", "train:40"]
    deltas = api.removal_deltas(removed)
    np.testing.assert_allclose(deltas, -weights[run.n_train:, [3, 9, 40]].sum(1), atol=1e-6)
    assert api.predict_removal("test:5", removed, deltas=deltas) == api.predict_removal("test:5", removed)
    with pytest.raises(RemovalError, match="empty"):
        api.check_removal([])
    supports = api.heuristic_supports()
    brute = [brute_support(weights[run.n_train + j], control[run.n_train + j]) for j in range(run.n_test)]
    np.testing.assert_array_equal(supports, brute)
    assert api.heuristic_support("test:7") == brute[7]
    labels = np.asarray(run.labels)
    row = weights[run.n_train + 5]
    members = [j for j in range(run.n_train) if labels[j] == 3]
    assert api.top_in_class("test:5", 3, 4) == [f"train:{j}" for j in sorted(members, key=lambda j: (-row[j], j))[:4]]
    ids = [3, 10, 11, 12, 7]
    assert api.train_list(api.train_list_text(ids)) == ids
    ks = np.array([0.0, 1.0, 3.0, 10.0])
    finite = np.array(brute)
    np.testing.assert_array_equal(api.brittleness_cdf(finite, ks), [np.mean(finite <= k) for k in ks])
    assert api.certified_supports().shape == (0,) and api.support_k_max() == min(1280, run.n_train - 1)


def test_leak_queue_and_annotations_by_target_name(api, tmp_path, monkeypatch):
    """The Review page's queue and votes through the API, against leakage/queue*.npy and the database's rows;
    the Leakage results page's scores against a hand count."""
    run = api.run
    queue, score = np.load(run.dir / "leakage" / "queue.npy"), np.load(run.dir / "leakage" / "queue_score.npy")
    assert api.leak_queue() == [(f"test:{j}", pytest.approx(float(score[j]))) for j in queue]
    db = tmp_path / "votes.db"
    db.touch()
    monkeypatch.setenv("DATAMODELS_DATABASE_URL", f"sqlite:///{db}")
    store = api.annotations()
    assert store.sign_in("ann") == "ann" and store.sign_in("bob") == "bob"
    assert store.submit("test:4", "ann", {"train:7": True, "train:2": False}) == 2
    store.submit("test:4", "bob", {"train:7": False})
    store.submit("test:1", "bob", {"train:5": True})
    store.skip("test:9", "ann")
    assert store.reviewed("ann") == {"test:4"} and store.skipped("ann") == {"test:9"}
    assert store.skip_counts() == {"ann": 1}
    assert {(v.annotator, v.test, v.train, v.is_leak) for v in store.votes()} == {
        ("ann", "test:4", "train:7", True), ("ann", "test:4", "train:2", False), ("bob", "test:4", "train:7", False),
        ("bob", "test:1", "train:5", True)}
    found = leakage_scores(store.votes())
    assert list(zip(found.pairs.test, found.pairs.train, found.pairs.score)) == [(1, 5, 1.0), (4, 2, 0.0), (4, 7, 0.5)]
    assert found.pair_names == [("test:1", "train:5"), ("test:4", "train:2"), ("test:4", "train:7")]
    assert found.tests == ["test:1", "test:4"] and found.leakage.tolist() == [1.0, 0.5]
    assert found.annotators == ["ann", "bob"] and found.overlap[0, 1] == 1
    assert store.undo_last("ann") == ("test:9", {})
    assert store.undo_last("ann") == ("test:4", {"train:7": True, "train:2": False})
    with pytest.raises(TargetError, match="training image"):
        store.skip("train:3", "ann")


def test_what_the_pages_read_is_the_stored_arrays(api, monkeypatch, dashboard_data_dir):
    """The methods the Overview, Quality, Neighbours and Methods pages call, against the run's files read directly
    and brute force: LDS order, lowest targets, held-out predictions w·1_S + b, the datamodel's profile."""
    run = api.run
    lds = np.load(run.dir / "lds.npy")
    np.testing.assert_array_equal(api.lds(), lds)
    assert api.metrics() == json.loads((run.dir / "metrics.json").read_text()) and not api.lds_is_stale()
    assert api.targets("test") == [f"test:{j}" for j in range(run.n_test)]
    finite = [(float(v), j) for j, v in enumerate(lds[run.n_train:]) if np.isfinite(v)]
    assert api.lowest(lds, "test", 5) == [f"test:{j}" for _, j in sorted(finite)[:5]]
    monkeypatch.setenv(DATA_DIR_ENV, str(dashboard_data_dir))
    heldout = api.heldout()
    masks, margins = np.load(run.dir / "heldout" / "masks.npy"), np.load(run.dir / "heldout" / "margins.npy")
    assert heldout.n_models == len(masks)
    models, names = np.array([0, 3, 7]), ["test:2", "train:9"]
    predicted, actual = api.heldout_predictions(heldout, names, models)
    weights, bias = np.load(run.dir / "weights.npy").astype(np.float64), np.load(run.dir / "bias.npy").astype(np.float64)
    columns = [api.column(n) for n in names]
    np.testing.assert_allclose(predicted, masks[models].astype(np.float64) @ weights[columns].T + bias[columns], rtol=1e-5)
    np.testing.assert_array_equal(actual, margins[np.ix_(models, columns)])
    row = weights[api.column("test:2")]
    images, values = api.weight_profile("test:2")
    assert sorted(images, key=lambda n: -row[int(n[6:])]) == images and len(images) == np.count_nonzero(row)
    np.testing.assert_array_equal(values, [row[int(n[6:])] for n in images])
    assert api.nonzero_weights("test:2") == np.count_nonzero(row)
    assert api.is_fitted("test:2") and not api.is_fitted("train:0")  # train:0-4 are left unfitted
    assert set(api.stored_methods()) == {"datamodels", "fixture-permuted"} and api.methods_eval()["methods"]


def test_clusterings_are_named_and_typical_members_are_the_highest_silhouettes(api):
    run = api.run
    labels = np.load(run.dir / "labels.npy")[run.n_train:]
    targets, whole = api.clustering()
    assert targets == [f"test:{j}" for j in range(run.n_test)]
    np.testing.assert_array_equal(whole.labels, np.load(run.dir / "structure" / "clusters_all.npy"))
    label = int(labels[0])
    targets, by_class = api.clustering(label)
    assert targets == [f"test:{j}" for j in np.flatnonzero(labels == label)] and len(by_class.labels) == len(targets)
    silhouette = np.nan_to_num(by_class.silhouette)
    for cluster in range(by_class.k):
        members = [(-silhouette[j], j) for j in range(len(targets)) if by_class.labels[j] == cluster]
        assert api.typical(targets, by_class, cluster, 4) == [targets[j] for _, j in sorted(members)[:4]]
    assert api.cluster_quality()["whole"]["k"] == whole.k


@pytest.mark.parametrize("dtype, tol", [("float64", 1e-9), ("float32", 1e-5)])
def test_batched_lasso_matches_sklearn(dtype, tol):
    from backend.api import BatchedLasso

    masks, margins = random_problem()
    y = margins[:, -6:].astype(np.float64)
    x = masks.astype(np.float64)
    for alpha in (0.003, 0.03):
        est = BatchedLasso(alpha, tol=1e-12 if dtype == "float64" else 1e-7, dtype=dtype).fit(masks, y)
        assert est.coef_.shape == (6, masks.shape[1]) and est.intercept_.shape == (6,)
        for j in range(6):
            sk = sklearn_lasso(x, y[:, j], alpha)
            ours, ref = objective(x, y[:, j], est.coef_[j], est.intercept_[j], alpha), objective(x, y[:, j], sk.coef_, sk.intercept_, alpha)
            assert abs(ours - ref) / ref <= tol
        np.testing.assert_allclose(est.predict(x), x @ est.coef_.T + est.intercept_)
    one = BatchedLasso(0.01, tol=1e-12).fit(masks, y[:, 0])
    assert one.coef_.shape == (masks.shape[1],) and isinstance(one.intercept_, float)
    with pytest.raises(ValueError, match="masks must be"):
        BatchedLasso(0.01).fit(np.full((4, 3), 0.5), y[:4, 0])


def test_readme_notebook_example_runs(dashboard_data_dir, monkeypatch):
    """The README's API example, at most six lines, run as written on the fixture run in place of the digits run."""
    section = README.read_text().split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) <= 6
    assert '"data/runs/digits"' in code
    namespace: dict = {}
    exec(code.replace('"data/runs/digits"', repr(str(dashboard_data_dir / "runs" / "digits-tiny"))), namespace)
    assert namespace["top"] and all(n.startswith("train:") for n in namespace["top"])
    assert namespace["leaks"] and namespace["predicted"].removed == sorted(namespace["top"], key=lambda n: int(n[6:]))
