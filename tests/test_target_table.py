"""backend/target_table.py: the per-target table against the run's files, and its filters against brute force."""
from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest

from backend import target_table as tt
from backend.api import open_run

NAMES = ["zero", "one", "=two"]


def synthetic(n_train: int = 300, n_test: int = 200, seed: int = 0) -> tt.TargetTable:
    """A table of random fields with the module's dtypes and NaN/-1 where a split has no value."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    label, prediction = rng.integers(0, 3, n), rng.integers(0, 3, n)
    lds = rng.normal(size=n).astype(np.float32)
    lds[rng.random(n) < 0.1] = np.nan
    self_score = np.concatenate([rng.random(n_train).astype(np.float32), np.full(n_test, np.nan, np.float32)])
    leak = np.concatenate([np.full(n_train, np.nan, np.float32), rng.random(n_test).astype(np.float32)])
    cluster = np.concatenate([np.full(n_train, -1, np.int32), rng.integers(0, 4, n_test).astype(np.int32)])
    margin = np.round(rng.normal(size=n), 1).astype(np.float32)  # rounded: many ties, which sort by target
    return tt.TargetTable(n_train, NAMES, {
        "label": label, "prediction": prediction, "share": rng.random(n), "correct": prediction == label,
        "margin": margin, "accuracy": rng.random(n).astype(np.float32), "lds": lds, "self:trak": self_score,
        "leak": leak, "cluster": cluster})


def brute_force(table: tt.TargetTable, view: tt.View, tagged=()) -> list[int]:
    """The view's rows by a loop over the targets, each condition as the View docstring states it."""
    c, kept = table.columns, []
    for r in range(table.n_targets):
        is_test = r >= table.n_train
        if (view.split == "train" and is_test) or (view.split == "test" and not is_test):
            continue
        if view.labels and c["label"][r] not in view.labels:
            continue
        if view.predictions and c["prediction"][r] not in view.predictions:
            continue
        if view.correct != "all" and bool(c["correct"][r]) != (view.correct == "yes"):
            continue
        if view.clusters and c["cluster"][r] not in view.clusters:
            continue
        if view.tag is not None and r not in set(tagged):
            continue
        if view.range_field is not None:
            v = float(c[view.range_field][r])
            if math.isnan(v) or (view.low is not None and v < view.low) or (view.high is not None and v > view.high):
                continue
        kept.append(r)
    if view.sort == "target":
        return kept[::-1] if view.descending else kept
    value = lambda r: float(c[view.sort][r])
    finite = [r for r in kept if not math.isnan(value(r))]
    nan = [r for r in kept if math.isnan(value(r))]
    return sorted(finite, key=lambda r: (-value(r) if view.descending else value(r), r)) + nan


VIEWS = [
    tt.View(),
    tt.View(split="test", correct="no", sort="lds"),
    tt.View(split="train", labels=(0, 2), sort="self:trak", descending=True),
    tt.View(predictions=(1,), range_field="margin", low=-0.5, high=0.7, sort="margin", descending=True),
    tt.View(clusters=(1, 3), range_field="leak", low=0.2, sort="leak"),
    tt.View(tag="odd", correct="yes", sort="target", descending=True),
    tt.View(range_field="lds", high=0.0, sort="accuracy"),
]


@pytest.mark.parametrize("view", VIEWS, ids=range(len(VIEWS)))
def test_select_equals_a_loop_over_the_targets(view):
    table = synthetic()
    tagged = np.arange(1, table.n_targets, 2)
    assert tt.select(table, view, tagged).tolist() == brute_force(table, view, tagged.tolist())


def test_pages_cover_the_view_once_in_order():
    rows = np.arange(100)
    pages = [tt.page_of(rows, tt.View(page=p), page_size=48).tolist() for p in range(1, tt.n_pages(100, 48) + 1)]
    assert sum(pages, []) == list(range(100)) and [len(p) for p in pages] == [48, 48, 4]
    assert tt.page_of(rows, tt.View(page=99), page_size=48).tolist() == pages[-1]  # past the end: the last page


def test_a_view_survives_its_url_and_bad_parameters_fall_back_with_a_warning():
    table = synthetic()
    view = tt.View(split="test", labels=(0, 2), predictions=(1,), correct="no", clusters=(3,), tag="needs review",
                   range_field="self:trak", low=-0.25, high=None, sort="lds", descending=True, page=3)
    assert tt.parse_view(tt.view_params(view), table) == view
    assert tt.view_params(tt.View()) == {}
    bad = tt.parse_view({"split": "val", "label": "1,seven,=two", "correct": "maybe", "cluster": "9,x", "tag": "<b>",
                         "range": "nope:1:2", "sort": "'; DROP TABLE tags", "page": "-3"}, table)
    assert bad == tt.View(labels=(1, 2))  # the class named "=two" is a class: the rest falls back
    assert len(bad.warnings) == 9 and all("\n" not in w for w in bad.warnings)
    huge = tt.parse_view({"label": "9" * 5000, "cluster": "\u00b2", "page": "9" * 5000}, table)
    assert huge == tt.View() and len(huge.warnings) == 3
    nan = tt.parse_view({"range": "margin:nan:inf"}, table)
    assert (nan.range_field, nan.low, nan.high) == ("margin", None, None) and len(nan.warnings) == 2


def test_exports_read_back_as_the_table_and_keep_formulas_inert():
    table = synthetic(20, 10)
    rows = np.array([25, 3, 12])
    records = tt.records(table, rows, {3: ["a", "b"]})
    back = json.loads(tt.to_json(records, "digits"))
    assert back["run"] == "digits" and [r["target"] for r in back["targets"]] == ["test:5", "train:3", "train:12"]
    for record, r in zip(back["targets"], rows):
        assert record["label"] == NAMES[table.columns["label"][r]] and record["correct"] == bool(table.columns["correct"][r])
        assert record["cluster"] == (int(table.columns["cluster"][r]) if r >= 20 else None)
        for name in ("margin", "lds", "self:trak", "leak"):
            value = float(table.columns[name][r])
            assert record[name] == (None if math.isnan(value) else pytest.approx(value))
    assert back["targets"][1]["tags"] == ["a", "b"]
    parsed = list(csv.DictReader(io.StringIO(tt.to_csv(records))))
    assert [r["target"] for r in parsed] == ["test:5", "train:3", "train:12"] and parsed[1]["tags"] == "a;b"
    assert all(not r["label"].startswith("=") for r in parsed)  # "=two" is written as "'=two"
    assert float(parsed[0]["margin"]) == pytest.approx(float(table.columns["margin"][25]))


def test_the_table_of_a_run_holds_its_files(dashboard_data_dir):
    run_dir = dashboard_data_dir / "runs" / "digits-tiny"
    table = open_run(run_dir).table()
    labels = np.load(run_dir / "labels.npy")
    counts = np.load(run_dir / "target_predictions.npy")
    n_train = table.n_train
    assert table.columns["label"].tolist() == labels.tolist()
    majority = [int(np.flatnonzero(row == row.max())[0]) for row in counts]  # ties: the lowest class
    assert table.columns["prediction"].tolist() == majority
    assert table.columns["correct"].tolist() == [m == y for m, y in zip(majority, labels)]
    margins = np.load(run_dir / "margins.npy").astype(np.float64)
    np.testing.assert_allclose(table.columns["margin"], margins.mean(axis=0), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(table.columns["lds"], np.load(run_dir / "lds.npy"))
    self_scores = np.load(run_dir / "attribution" / "datamodels" / "self_scores.npy")
    np.testing.assert_array_equal(table.columns["self:datamodels"][:n_train], self_scores)
    assert np.isnan(table.columns["self:datamodels"][n_train:]).all()
    np.testing.assert_array_equal(table.columns["leak"][n_train:], np.load(run_dir / "leakage" / "queue_score.npy"))
    np.testing.assert_array_equal(table.columns["cluster"][n_train:], np.load(run_dir / "structure" / "clusters_all.npy"))
    assert (table.columns["cluster"][:n_train] == -1).all() and np.isnan(table.columns["leak"][:n_train]).all()
