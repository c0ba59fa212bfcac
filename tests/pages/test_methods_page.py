"""The Methods page and the Neighbours method picker (AppTest), on digits-tiny's two stored methods."""
from __future__ import annotations

import shutil

import numpy as np

from backend.attribution import store
from backend.datamodels.queries import top_weights
from backend.store.run_dir import Run
from tests.conftest import image_grids
from tests.pages import test_apptest

RUN, app = test_apptest.RUN, test_apptest.app  # the pages' AppTest fixture, shared


def test_the_methods_page_shows_every_method_on_every_yardstick(app):
    at = app("methods", run=RUN)
    table = at.dataframe[0].value
    assert sorted(table["method"]) == ["datamodels", "fixture-permuted"]
    assert {"LDS", "median remove support", "median mislabel support", "mislabel AUC", "seconds", "models used",
            "MB stored"} <= set(table.columns)
    assert list(table["mislabel AUC"]) == ["—", "—"]  # the fixture run has no planted label noise
    assert "plant-label-noise" in at.code[-1].value and not at.error


def test_only_the_open_tab_of_the_methods_page_is_drawn_and_the_url_opens_one(app, dashboard_data_dir):
    from backend.store.artifacts import read_json
    from backend.store.schema import METHODS_EVAL

    report = read_json(dashboard_data_dir / "runs" / RUN, METHODS_EVAL)
    at = app("methods", run=RUN)  # the support CDFs: one chart per support mode, and the results table alone
    assert len(at.get("plotly_chart")) == len(report["modes"]) and len(at.dataframe) == 1
    at = app("methods", run=RUN, methods_tab="Who finds smaller support")
    assert not at.get("plotly_chart") and len(at.dataframe) == 1 + len(report["modes"])
    mode = report["modes"][0]
    pairs = at.dataframe[1].value
    names = list(report["smaller_support"][mode])
    assert pairs.loc[names[0], names[1]] == report["smaller_support"][mode][names[0]][names[1]]


def test_the_methods_page_of_a_run_without_scores_says_which_commands_fill_it(app):
    at = app("methods", run="no-datamodels")
    assert not at.error and "no attribution scores" in at.info[0].value
    assert "attribute --run" in at.code[0].value and "--method datamodels" in at.code[0].value


def test_a_corrupt_methods_eval_is_an_error_naming_the_file(app, dashboard_data_dir, tmp_path):
    run = shutil.copytree(dashboard_data_dir / "runs" / RUN, tmp_path / "runs" / RUN, symlinks=True)
    (run / "attribution" / "methods_eval.json").write_text("[]")
    at = app("methods", root=tmp_path, run=RUN)
    assert any("methods_eval.json" in e.value for e in at.error), [e.value for e in at.error]


def captions(at, grid: str) -> set[str]:
    """The target names of the images of one image grid."""
    return set(image_grids(at).get(grid, (None, []))[1])


def test_the_neighbours_method_picker_follows_the_url_and_shows_each_methods_top_images(app, dashboard_data_dir):
    run = Run(dashboard_data_dir / "runs" / RUN)
    expected = {name: {f"train:{i}" for i in top_weights(np.asarray(store.read_scores(run, name)[3]), 12)[0]}
                for name in ("datamodels", "fixture-permuted")}
    assert expected["datamodels"] != expected["fixture-permuted"]
    at = app("neighbours", run=RUN, target="test:3")
    picker = at.selectbox(key="method")
    assert picker.options == ["datamodels", "fixture-permuted"] and picker.value == "datamodels"
    assert captions(at, "method-datamodels") == expected["datamodels"]
    picker.set_value("fixture-permuted").run()
    assert at.query_params["method"] in ("fixture-permuted", ["fixture-permuted"])
    assert captions(at, "method-fixture-permuted") == expected["fixture-permuted"]
    assert not captions(at, "side-datamodels")  # only the open tab is drawn
    at = app("neighbours", run=RUN, target="test:3", methods_view="Every method side by side")
    assert captions(at, "side-datamodels") == expected["datamodels"]  # side by side: every method
    assert captions(at, "side-fixture-permuted") == expected["fixture-permuted"]
    assert not captions(at, "method-datamodels")


def test_a_method_not_in_the_run_falls_back_to_datamodels_with_a_warning(app):
    at = app("neighbours", run=RUN, target="test:3", method="nonsense")
    assert at.selectbox(key="method").value == "datamodels"
    assert any("nonsense" in w.value for w in at.warning)


def test_the_methods_table_shows_each_methods_chosen_setting_beside_both_lds_values(app, dashboard_data_dir, tmp_path):
    import json

    run = shutil.copytree(dashboard_data_dir / "runs" / RUN, tmp_path / "runs" / RUN, symlinks=True)
    path = run / "attribution" / "methods_eval.json"
    report = json.loads(path.read_text())
    report["validation_models"] = 12
    for name, entry in report["methods"].items():
        entry["lds_validation"] = {"mean": 0.25, "n_targets": 500}
    report["methods"]["fixture-permuted"]["selection"] = {
        "grid": [{"setting": {"noise": 0.5}, "lds_validation": 0.2}, {"setting": {"noise": 0.0}, "lds_validation": 0.25}],
        "chosen": {"noise": 0.0}, "validation_models": [0, 12]}
    path.write_text(json.dumps(report))
    at = app("methods", root=tmp_path, run=RUN)
    table = at.dataframe[0].value
    assert list(table.columns[:4]) == ["method", "setting", "LDS", "validation LDS"] and not at.error
    settings = dict(zip(table["method"], table["setting"]))
    assert settings == {"datamodels": "—", "fixture-permuted": "noise 0 (chosen on validation)"}
    assert "--select" in at.caption[0].value


def test_the_support_tabs_of_an_evaluation_without_supports_say_so(app, dashboard_data_dir, tmp_path):
    """`make run` evaluates with `--modes none`: both support tabs must say why they are empty and what fills them."""
    import json

    run = shutil.copytree(dashboard_data_dir / "runs" / RUN, tmp_path / "runs" / RUN, symlinks=True)
    path = run / "attribution" / "methods_eval.json"
    report = json.loads(path.read_text())
    report.update(modes=[], smaller_support={})
    for entry in report["methods"].values():
        entry["support"] = {}
    path.write_text(json.dumps(report))
    for tab in ("Support CDFs", "Who finds smaller support"):
        at = app("methods", root=tmp_path, run=RUN, methods_tab=tab)
        assert not at.error and not at.get("plotly_chart") and len(at.dataframe) == 1
        assert any("No supports certified yet" in c.value and "--modes none" in c.value for c in at.caption)
        assert "none certified" in at.caption[0].value and "bisection" not in at.caption[0].value
    at = app("methods", run=RUN)  # the fixture's evaluation has supports: no such line
    assert not any("No supports certified yet" in c.value for c in at.caption) and "bisection" in at.caption[0].value
