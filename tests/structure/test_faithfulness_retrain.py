"""App. J retraining: removal sets, stored results that are reused and topped up, and the reported shifts."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from backend.structure import faithfulness as fa
from backend.training import retrain_store
from backend.training.control import control_mean
from backend.structure.embeddings import pca_components, pca_projections
from backend.training.retraining import train_sets, training_data
from backend.training.seeds import FAITHFULNESS_STREAM, stream_seeds
from backend.store.errors import RunError
from backend.store.run_dir import Run
from tests.conftest import run_cli


def stored_margins(run, removed: np.ndarray) -> np.ndarray:
    """Margins of the models the retrain store holds trained without `removed`, shape (n_done, n_targets)."""
    found = retrain_store.load(run, fa.removal_request(run, removed, 0).key)
    return np.zeros((0, run.n_targets), dtype=np.float32) if found is None else found.margins


@pytest.fixture(scope="module")
def run(structure_run, tmp_path_factory):
    copy = tmp_path_factory.mktemp("faith") / "run"
    shutil.copytree(structure_run, copy)
    return Run(copy)


def test_removal_set_is_the_top_k_of_each_side():
    component = np.array([0.3, -0.9, 0.1, 0.8, -0.2, 0.0])
    np.testing.assert_array_equal(fa.component_extremes(component, 2, "positive"), [0, 3])
    np.testing.assert_array_equal(fa.component_extremes(component, 2, "negative"), [1, 4])


def test_groups_and_shifts_are_plain_means():
    projection = np.array([5.0, -1.0, 2.0, -7.0, 0.0, 3.0])
    groups = fa.target_groups(projection, 2)
    assert sorted(groups["positive"]) == [0, 5] and sorted(groups["negative"]) == [1, 3]
    shift = np.arange(6.0)
    assert fa.group_shifts(shift, groups) == {"positive": 2.5, "negative": 2.0, "all": 2.5}


def test_check_retrains_stores_reuses_and_tops_up(run):
    starts, ticks = [], []

    def progress(done, total, unit):
        ticks.append(done)
        if done == 0:
            starts.append(total)
    first = fa.faithfulness_check(run, 0, 10, n_models=2, n_group=20, n_control=4, device="cpu", progress=progress)
    assert starts[0] == 4 - 1 + 2 * 2  # the run had one control model: 3 more controls, then 2 per side
    assert ticks[-1] == pytest.approx(starts[0]) and ticks == sorted(ticks)
    starts.clear()
    again = fa.faithfulness_check(run, 0, 10, n_models=2, n_group=20, n_control=4, device="cpu", progress=progress)
    assert starts[0] == 0 and again == first  # an identical request trains nothing
    before = {side: stored_margins(run, np.array(first["sides"][side]["removed"])) for side in fa.SIDES}
    starts.clear()
    fa.faithfulness_check(run, 0, 10, n_models=3, n_group=20, n_control=4, device="cpu", progress=progress)
    assert starts[0] == 2
    for side in fa.SIDES:
        after = stored_margins(run, np.array(first["sides"][side]["removed"]))
        assert len(after) == 3
        np.testing.assert_array_equal(after[:2], before[side])
    assert fa.models_to_train(run, 0, 10, n_models=3, n_control=4) == 0
    assert fa.models_to_train(run, 0, 10, n_models=5, n_control=6) == 2 + 2 * 2
    listed = fa.stored_checks(run)
    assert sorted((c["side"], c["n_models"], c["current"]) for c in listed) == [("negative", 3, True), ("positive", 3, True)]


def test_stored_models_are_the_models_trained_without_the_removed_examples(run):
    result = fa.faithfulness_check(run, 1, 15, n_models=2, sides=("positive",), n_group=20, n_control=4, device="cpu")
    removed = np.array(result["sides"]["positive"]["removed"])
    np.testing.assert_array_equal(removed, fa.component_extremes(np.asarray(pca_components(run)[1]), 15, "positive"))
    keep = np.setdiff1d(np.arange(run.n_train), removed)
    seeds = stream_seeds(int(run.manifest["seed"]), FAITHFULNESS_STREAM, 0, 2)
    independent, _ = train_sets(run, training_data(run, "cpu"), np.tile(keep, (2, 1)), seeds)
    stored = stored_margins(run, removed)
    np.testing.assert_allclose(stored, independent, atol=1e-4)
    # The reported shifts, recomputed from the stored margins and the control margins.
    shift = stored.mean(0, dtype=np.float64)[run.n_train:] - control_mean(run)[run.n_train:]
    projection = np.asarray(pca_projections(run)[run.n_train:, 1])
    top = np.argsort(projection)[::-1][:20]
    assert np.isclose(result["sides"]["positive"]["shift"]["positive"], shift[top].mean())
    assert np.isclose(result["sides"]["positive"]["shift"]["all"], shift.mean())


@pytest.mark.parametrize("kwargs, message", [
    (dict(pc=10, k=5), "component 10 does not exist"),
    (dict(pc=0, k=0), "k=0 is out of range"),
    (dict(pc=0, k=5, sides=("up",)), "unknown side"),
])
def test_bad_requests_name_the_problem(run, kwargs, message):
    with pytest.raises(fa.FaithfulnessError, match=message):
        fa.faithfulness_check(run, n_control=4, device="cpu", **kwargs)


def test_cli_answers_a_stored_request_and_refuses_a_bad_component(run):
    proc = run_cli("faithfulness", "--run", run.dir, "--pc", "0", "--k", "10", "--models", "2", "--group", "20",
                   "--controls", "4", "--device", "cpu", "--json", in_process=True)
    result = json.loads(proc.stdout)
    assert set(result["sides"]) == {"positive", "negative"}
    assert set(result["sides"]["positive"]["shift"]) == {"positive", "negative", "all"}
    bad = run_cli("faithfulness", "--run", run.dir, "--pc", "99", "--k", "10", check=False)
    assert bad.returncode == 2 and "component 99 does not exist" in bad.stderr and "Traceback" not in bad.stderr


def test_a_corrupt_stored_result_is_reported_not_retrained_over(run):
    removed = np.array([0, 1, 2])
    fa.retrain_without(run, removed, 1, device="cpu")
    path = run.dir / "counterfactuals" / f"{fa.removal_request(run, removed, 1).key}.npz"
    intact = path.read_bytes()
    path.write_bytes(b"not an npz")
    with pytest.raises(RunError, match="is corrupt"):
        stored_margins(run, removed)
    path.write_bytes(intact)
