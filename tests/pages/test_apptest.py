"""The dashboard's pages under streamlit.testing.v1.AppTest, on the fixture runs of dashboard_data_dir."""
from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from backend.datamodels.queries import top_weights
from backend.store.catalog import DATA_DIR_ENV
from backend.store.run_dir import Run
from backend.store.schema import CLI
from widgets.run_context import CREATE_RUN
from tests.conftest import ROOT, click_image, image_grids, open_app, plotly_charts

RUN = "digits-tiny"


@pytest.fixture
def app(dashboard_data_dir, monkeypatch):
    """open(page=None, root=dashboard_data_dir, **query_params) -> an AppTest that has run the app (then `page`)."""

    def open_page(page: str | None = None, root=dashboard_data_dir, **params: str) -> AppTest:
        monkeypatch.setenv(DATA_DIR_ENV, str(root))
        return open_app(params, page)
    return open_page


@pytest.fixture(scope="module")
def fitted(dashboard_data_dir) -> Run:
    return Run(dashboard_data_dir / "runs" / RUN)


@pytest.fixture(scope="module")
def eval_variants(fitted, tmp_path_factory):
    """A data dir with copies of digits-tiny: `not-evaluated` (no metrics, lds or heldout/) and
    `with-curve` (metrics.json given a sample-complexity curve in the eval stage's format)."""
    root = tmp_path_factory.mktemp("eval-variants")
    bare = shutil.copytree(fitted.dir, root / "runs" / "not-evaluated", ignore=shutil.ignore_patterns("heldout"))
    for name in ("metrics.json", "lds.npy"):
        (bare / name).unlink()
    curve = shutil.copytree(fitted.dir, root / "runs" / "with-curve", symlinks=True)
    metrics = json.loads((curve / "metrics.json").read_text())
    points = [{"fraction": 0.125, "n_models": 8, "skipped": "8 models are too few to fit datamodels: train more models"}]
    points += [{"fraction": f, "n_models": int(60 * f), "n_heldout_models": 30, "lds": metrics["lds"], "mse": metrics["mse"]}
               for f in (0.25, 0.5, 1.0)]
    metrics["sample_complexity"] = {"targets": "500 test and 100 training targets", "points": points}
    (curve / "metrics.json").write_text(json.dumps(metrics))
    os.utime(curve / "lds.npy")  # copied after weights.npy: not stale
    return root


def grid(at: AppTest, name: str) -> list[str]:
    """Target names of the images of grid `name`, in reading order ([] when the page drew no such grid)."""
    return image_grids(at).get(name, (None, []))[1]


def title(at: AppTest) -> str:
    return at.title[0].value


def test_without_runs_the_app_shows_the_commands_that_create_one(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception and not at.error
    assert "No run found" in at.info[0].value
    assert [c.value for c in at.code] == CREATE_RUN


def test_run_picker_lists_the_runs_and_keeps_the_choice_in_the_url(app):
    at = app(run=RUN)
    picker = at.selectbox(key="run_picker")
    assert picker.options == ["bad-manifest", RUN, "no-datamodels", "truncated"]
    assert picker.value == RUN and at.query_params["run"] == RUN
    at.query_params["target"] = "test:3"
    picker.set_value("no-datamodels").run()
    assert at.query_params["run"] == "no-datamodels" and "target" not in at.query_params
    assert title(at) == "Run no-datamodels"


def test_unknown_run_in_the_url_warns_and_falls_back(app):
    at = app(run="nope")
    assert "'nope'" in at.sidebar.warning[0].value
    assert at.query_params["run"] == at.selectbox(key="run_picker").value


def vega_data(at: AppTest) -> list:
    """The data of each Vega-Lite chart an AppTest drew, as DataFrames (Streamlit sends them as Arrow IPC)."""
    import pyarrow as pa

    return [pa.ipc.open_stream(c.proto.data.data).read_all().to_pandas() for c in at.get("vega_lite_chart")]


def test_overview_shows_the_manifest_and_the_eval_stage_results(app, fitted):
    at = app(run=RUN)
    shown = {m.label: m.value for m in at.metric}
    assert at.markdown[0].value.startswith("Dataset `digits`") and shown["Models"] == "60"
    assert shown["Train images"] == f"{fitted.n_train:,}" and shown["Test images"] == f"{fitted.n_test:,}"
    assert shown["Test accuracy"] == f"{fitted.manifest['mean_test_accuracy']:.1%}"
    metrics = json.loads((fitted.dir / "metrics.json").read_text())
    assert shown["Mean test LDS"] == f"{metrics['lds']['test']['mean']:.3f}" and shown["Held-out models"] == "30"
    table5 = at.table[0].value
    assert table5["estimator"].tolist() == ["Empirical influence", "Difference of means", "Datamodel (LASSO)"]
    assert table5["Spearman (margin)"].iloc[2] == f"{metrics['table5']['datamodel']['spearman_margin']['test']['mean']:.3f}"
    at.radio(key="table5_split").set_value("train").run()
    assert at.table[0].value["AUC (correct)"].iloc[0] == f"{metrics['table5']['empirical_influence']['auc']['train']['mean']:.3f}"
    assert {"Overview", "Neighbours", "Quality"} <= {p.proto.label for p in at.get("page_link")}


def test_overview_of_an_evaluation_without_training_targets_shows_a_dash_not_nan(app, fitted, tmp_path):
    """`fit --targets test` then `eval` (the Fashion-MNIST run): metrics.json's train LDS has no targets and no mean.
    The page must say "—" and why, not "nan"; counts carry thousands separators like every other count."""
    run = shutil.copytree(fitted.dir, tmp_path / "runs" / RUN, symlinks=True)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["lds"]["train"] = {"n_targets": 0, "n_undefined": 0}  # as eval writes it with no training target fitted
    metrics["lds"]["test"].update(n_targets=10000, n_undefined=1234)
    (run / "metrics.json").write_text(json.dumps(metrics))
    at = app(root=tmp_path, run=RUN)
    shown = {m.label: m for m in at.metric}
    assert shown["Mean train LDS"].value == "—" and "none is fitted yet" in shown["Mean train LDS"].help
    assert shown["Mean test LDS"].value == f"{metrics['lds']['test']['mean']:.3f}" and not at.error
    assert any(c.value.startswith("1,234 of 10,000 test targets have no LDS") for c in at.caption)


def test_overview_charts_plot_the_stored_lds_and_the_held_out_margins(app, fitted):
    """One chart at a time, in the URL's tab. The histogram bins the stored test LDS; the scatter pairs each
    held-out model's real margin with the datamodel's prediction for it (x·w + b), one point per (model, target);
    the curve's tab names the flag that left it out."""
    at = app(run=RUN)
    (histogram,) = vega_data(at)  # the first tab alone is drawn
    (scatter,) = vega_data(app(run=RUN, overview_chart="Predicted vs actual"))
    at = app(run=RUN, overview_chart="Sample complexity")
    assert not vega_data(at) and any("--no-complexity" in c.value for c in at.caption)
    lds = np.load(fitted.dir / "lds.npy")[fitted.n_train:]
    np.testing.assert_allclose(np.sort(histogram["LDS"]), np.sort(lds[np.isfinite(lds)]))
    heldout = Run(fitted.dir / "heldout")
    weights, bias = np.load(fitted.dir / "weights.npy"), np.load(fitted.dir / "bias.npy")
    for _, point in scatter.sample(20, random_state=0).iterrows():
        column = fitted.n_train + int(point["target"].split(":")[1])
        model = np.flatnonzero(np.isclose(np.asarray(heldout.margins)[:, column], point["actual"], atol=1e-6))
        assert len(model) >= 1
        predicted = heldout.masks[model].astype(np.float64) @ weights[column] + bias[column]
        assert np.isclose(predicted, point["predicted"]).any()


def test_overview_draws_the_sample_complexity_curve(app, eval_variants):
    at = app(root=eval_variants, run="with-curve", overview_chart="Sample complexity")
    (curve,) = vega_data(at)
    assert not at.warning and any("8 models: skipped" in c.value for c in at.caption)
    metrics = json.loads((eval_variants / "runs" / "with-curve" / "metrics.json").read_text())
    assert curve["n_models"].tolist() == [15, 30, 60]  # the 8-model point was skipped
    assert curve["mean"].tolist() == pytest.approx([metrics["lds"]["test"]["mean"]] * 3)


@pytest.mark.parametrize("page", ["overview", "quality"])
def test_before_the_eval_stage_the_pages_show_its_commands(app, eval_variants, page):
    at = app(page, root=eval_variants, run="not-evaluated")
    assert "lds.npy" in at.info[0].value and not at.error
    commands = [c.value for c in at.code]
    assert commands[-1].startswith(f"{CLI} eval --run") and commands[-1].endswith("/heldout")
    if page == "overview":
        assert commands[0].startswith(f"{CLI} train") and "--seed 1" in commands[0]


def test_neighbours_shows_the_target_and_its_top_weights(app, fitted):
    at = app("neighbours", run=RUN, target="test:7")
    assert title(at) == "Neighbours of test:7" and at.query_params["target"] == "test:7"
    column = fitted.n_train + 7
    weights = np.load(fitted.dir / "weights.npy")[column]
    positive, negative = top_weights(weights, 12)
    assert grid(at, "positive") == [f"train:{j}" for j in positive]  # reading order is rank order
    assert grid(at, "negative") == [f"train:{j}" for j in negative]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Label"] == fitted.class_names[fitted.labels[column]]
    assert metrics["Mean margin over models"] == f"{np.asarray(fitted.margins)[:, column].mean():+.3f}"
    assert metrics["Nonzero weights"] == f"{np.count_nonzero(weights)} / {fitted.n_train}"
    counts = np.load(fitted.dir / "target_predictions.npy")[column]  # models predicting each class
    majority = next(m for m in at.metric if m.label == "Majority prediction")
    assert majority.value == fitted.class_names[counts.argmax()]
    assert majority.delta == f"{counts.max() / counts.sum():.0%} of models"
    assert len(plotly_charts(at)) == 1  # the weight profile
    at.slider(key="k").set_value(3).run()
    assert grid(at, "positive") == [f"train:{j}" for j in positive[:3]]


def test_a_tag_keeps_neighbours_and_similar_images_to_its_targets(app, fitted, tmp_path, monkeypatch):
    """?tag=: the top weights are the tagged training images' strongest nonzero weights (brute force over the
    weight row), and the similar images the tagged ones of the unfiltered list, in its order."""
    from backend.api import open_run
    from backend.leakage.annotations import ENV_VAR, AnnotationStore

    (tmp_path / "tags.db").touch()
    monkeypatch.setenv(ENV_VAR, f"sqlite:///{tmp_path / 'tags.db'}")
    column = fitted.n_train + 7
    weights = np.load(fitted.dir / "weights.npy")[column]
    tagged = np.arange(0, fitted.n_train + fitted.n_test, 2)  # every even column, train and test
    AnnotationStore(os.environ[ENV_VAR]).add_tag(RUN, "even", tagged, "rita")
    at = app("neighbours", run=RUN, target="test:7", tag="even")
    assert not at.exception and not at.error
    even = np.arange(0, fitted.n_train, 2)
    order = even[np.argsort(-weights[even], kind="stable")]
    assert grid(at, "positive") == [f"train:{j}" for j in order[weights[order] > 0][:12]]
    order = even[np.argsort(weights[even], kind="stable")]
    assert grid(at, "negative") == [f"train:{j}" for j in order[weights[order] < 0][:12]]
    every = open_run(fitted.dir).similar("test:7", None, "datamodels")
    shown = [g for g in grid(at, "similar-datamodels")]
    assert shown and shown == [n for n, _ in every if open_run(fitted.dir).column(n) % 2 == 0][:12]


def test_clicking_a_neighbour_makes_it_the_target(app, fitted):
    at = app("neighbours", run=RUN, target="test:7")
    second = grid(at, "positive")[1]
    click_image(at, "positive", second, fitted.n_train)
    assert not at.exception
    assert at.query_params["target"] == second and title(at) == f"Neighbours of {second}"
    assert at.query_params["run"] == RUN and grid(at, "positive") and second not in grid(at, "positive")


def test_target_picker_by_index_class_mistakes_hardest_unstable_and_random(app, fitted):
    at = app("neighbours", run=RUN)
    assert title(at) == "Neighbours of test:0"
    at.number_input(key="pick_index").set_value(9).run()
    assert at.query_params["target"] == "test:9"
    at.radio(key="pick_split").set_value("train").run()
    assert at.query_params["target"] == "train:9" and at.number_input(key="pick_index").value == 9
    assert grid(at, "pick-hardest") == []  # only the open tab runs
    at.session_state["pick"] = "By class"
    members = at.run().selectbox(key="class_member")
    assert all(fitted.labels[fitted.n_train + int(n.split(":")[1])] == 0 for n in members.options)
    members.set_value(members.options[2]).run()
    assert at.query_params["target"] == members.options[2]
    at.session_state["pick"] = "Mistakes · Hardest · Most unstable"
    at.run()
    margins = np.asarray(fitted.margins)[:, fitted.n_train:]
    counts = np.load(fitted.dir / "target_predictions.npy")[fitted.n_train:]
    wrong = set(np.flatnonzero(counts.argmax(axis=1) != np.asarray(fitted.labels)[fitted.n_train:]).tolist())
    mistakes = [int(n.split(":")[1]) for n in grid(at, "pick-mistakes")]
    assert set(mistakes) <= wrong and len(mistakes) == min(12, len(wrong)) > 0
    assert grid(at, "pick-hardest") == []
    at.session_state["pick_list"] = "Most unstable"
    unstable = grid(at.run(), "pick-unstable")
    accuracy = (margins > 0).mean(axis=0)
    assert abs(accuracy[int(unstable[0].split(":")[1])] - 0.5) == np.abs(accuracy - 0.5).min()
    at.session_state["pick_list"] = "Hardest"
    hardest = grid(at.run(), "pick-hardest")
    assert hardest[0] == f"test:{int(np.argmin(margins.mean(axis=0)))}"
    click_image(at, "pick-hardest", hardest[1], fitted.n_train)
    assert at.query_params["target"] == hardest[1] and title(at) == f"Neighbours of {hardest[1]}"
    at.session_state["pick"] = "Random"
    at.run()
    at.button(key="random-train").click().run()
    assert re.fullmatch(r"train:\d+", at.query_params["target"])
    assert title(at) == f"Neighbours of {at.query_params['target']}"


def test_bad_target_in_the_url_warns_and_shows_the_default(app):
    at = app("neighbours", run=RUN, target="test:99999")
    assert "out of range" in at.warning[0].value
    assert title(at) == "Neighbours of test:0" and at.query_params["target"] == "test:0"


def test_unfitted_target_says_it_has_no_datamodel(app):
    at = app("neighbours", run=RUN, target="train:2")
    assert "has no datamodel" in at.info[0].value and not at.error
    assert "python -m precompute fit --run" in at.info[0].value and "--targets train:2" in at.info[0].value
    assert grid(at, "positive") == []


def test_pages_over_all_targets_name_the_unfitted_ones(app):
    for page in ("overview", "quality"):
        at = app(page, run=RUN)
        notes = [i.value for i in at.info if "no datamodel yet" in i.value]
        assert len(notes) == 1 and "(train:0-4)" in notes[0] and not at.error, page


def test_quality_lists_worst_predicted_and_opens_their_neighbours(app, fitted):
    at = app("quality", run=RUN)
    assert title(at) == "Datamodel quality"
    assert len(at.dataframe) == 1 and len(at.dataframe[0].value) == 500
    worst = grid(at, "worst")
    lds = np.load(fitted.dir / "lds.npy")[fitted.n_train:]
    assert worst[0] == f"test:{np.nanargmin(lds)}" and len(worst) == 12
    np.testing.assert_array_equal(at.dataframe[0].value["LDS"].to_numpy(), lds)
    click_image(at, "worst", worst[0], fitted.n_train)
    assert title(at) == f"Neighbours of {worst[0]}" and at.query_params["target"] == worst[0]


def test_quality_filters_its_lists_by_a_tag_from_the_url(app, fitted, tmp_path, monkeypatch):
    """?tag= (the Dataset page's parameter) keeps Quality's worst list and table to the tag's targets: the worst
    list is the brute-force argsort of the tagged targets' LDS; choosing "any" drops the parameter."""
    from backend.leakage.annotations import ENV_VAR, AnnotationStore

    (tmp_path / "tags.db").touch()
    monkeypatch.setenv(ENV_VAR, f"sqlite:///{tmp_path / 'tags.db'}")
    tagged = np.array([fitted.n_train + j for j in (4, 9, 40, 77, 120, 301)] + [2, 7])  # six test, two train
    AnnotationStore(os.environ[ENV_VAR]).add_tag(RUN, "odd", tagged, "rita")
    at = app("quality", run=RUN, tag="odd")
    assert not at.exception and not at.error
    assert at.selectbox(key="quality_tag").value == "odd"
    lds = np.load(fitted.dir / "lds.npy")
    test_tagged = tagged[tagged >= fitted.n_train]
    order = test_tagged[np.argsort(lds[test_tagged], kind="stable")]
    expected = [f"test:{c - fitted.n_train}" for c in order if not np.isnan(lds[c])]
    assert grid(at, "worst") == expected
    assert at.dataframe[0].value["target"].tolist() == [f"test:{c - fitted.n_train}" for c in test_tagged]
    at.selectbox(key="quality_tag").set_value(None).run()
    assert "tag" not in at.query_params and len(at.dataframe[0].value) == 500


@pytest.mark.parametrize("page", ["overview", "neighbours", "quality"])
@pytest.mark.parametrize("run, says", [
    ("no-datamodels", ["weights.npy is missing", "python -m precompute fit --run"]),
    ("truncated", ["weights.npy is corrupt or truncated"]),
    ("bad-manifest", ["manifest.json is corrupt"]),
])
def test_broken_runs_show_an_error_naming_the_file_not_a_traceback(app, page, run, says):
    at = app(page, run=run)
    assert not at.exception and len(at.error) == 1
    for text in says:
        assert text in at.error[0].value
