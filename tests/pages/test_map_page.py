"""The Embeddings map page, driven through the app shell with Streamlit's AppTest: every target drawn once, each
colouring, a click and a lasso replayed as Chromium sends them (tests/pages/test_map_browser.py does it live)."""
from __future__ import annotations

import base64
import json
import shutil

import numpy as np
import pytest

from backend.store.catalog import DATA_DIR_ENV
from backend.store.run_dir import Run
from backend.store.schema import MAP_LAYOUT
from tests.conftest import image_grids, open_app, plotly_charts, recorded_selection


@pytest.fixture(scope="module")
def data_dir(structure_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("map_pages")
    shutil.copytree(structure_run, root / "runs" / "small")
    shutil.copytree(structure_run, root / "runs" / "no-map")
    MAP_LAYOUT.path(root / "runs" / "no-map").unlink()
    return root


@pytest.fixture
def app(data_dir, monkeypatch):
    """open(run, **query) -> an AppTest of the page, every script run through the shell as a server runs it (as
    tests/conftest.py's pages_run_through_the_shell), so a page's RunError is the shell's one st.error."""
    monkeypatch.setenv(DATA_DIR_ENV, str(data_dir))
    return lambda run="small", **query: open_app({"run": run, **query}, "embeddings_map", timeout=300)


def typed(value) -> np.ndarray:
    """A figure array as the browser gets it: a plain list, or plotly's typed array {"dtype", "bdata"}."""
    if isinstance(value, dict):
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
    return np.asarray(value)


def drawn(at) -> list[dict]:
    return json.loads(plotly_charts(at)[0].proto.spec)["data"]


def test_every_target_is_drawn_once_where_the_map_puts_it_in_every_colouring(app, data_dir):
    run = Run(data_dir / "runs" / "small")
    layout = np.load(MAP_LAYOUT.path(run.dir))
    at = app()
    assert not at.exception and not at.error
    assert at.title[0].value == "Embeddings map"
    options = at.selectbox(key="map_colour").options
    assert {"label", "cluster", "split"} <= set(options)
    for by in options:
        at.selectbox(key="map_colour").set_value(by).run()
        assert not at.exception and not at.error, by
        traces = drawn(at)
        assert all(t["type"] == "scattergl" for t in traces)
        columns = np.concatenate([typed(t["customdata"]) for t in traces])
        assert sorted(columns) == list(range(run.n_targets)), by  # none dropped, none twice
        x = np.concatenate([typed(t["x"]) for t in traces])
        np.testing.assert_array_equal(x, layout[columns, 0])
    assert at.query_params["colour"] == options[-1]
    at.selectbox(key="map_colour").set_value("label").run()
    labels = np.asarray(run.labels)
    for trace in drawn(at):  # a label's traces hold that label's targets only
        label = run.class_names.index(trace["legendgroup"])
        assert (labels[typed(trace["customdata"])] == label).all()


def test_a_lasso_fills_the_grid_and_a_click_shows_the_image(app, data_dir):
    run = Run(data_dir / "runs" / "small")
    at = app()
    assert [i.value for i in at.info][0].startswith("Click a point")
    chosen = [3, run.n_train + 5, 17, run.n_train + 40]
    at.session_state["map-label"] = recorded_selection([(c, i) for i, c in enumerate(chosen)])
    at.run()
    assert not at.exception and not at.error
    assert "Selected targets (4)" in [s.value for s in at.subheader]
    assert image_grids(at)["map-selected"][1] == ["train:3", "test:5", "train:17", "test:40"]
    at.session_state["map-label"] = recorded_selection([(run.n_train + 5, 0)])
    at.run()
    assert "test:5" in [s.value for s in at.subheader]
    caption = at.get("image")[-1].proto.imgs[0].caption
    assert caption.startswith(f"label {run.class_names[int(run.labels[run.n_train + 5])]}")
    link = next(p.proto for p in at.get("page_link") if p.proto.label.startswith("Open "))  # (not the sidebar's)
    assert link.label == "Open test:5 on Neighbours" and link.page == "neighbours"
    assert link.query_string == "run=small&target=test%3A5"


def test_a_run_without_a_map_names_the_command(app):
    at = app("no-map")
    assert len(at.error) == 1 and "map_layout.npy is missing" in at.error[0].value
    assert "python -m precompute analyze --run" in at.error[0].value
