"""The Embeddings map page, driven through the app shell with Streamlit's AppTest: every target drawn once, each
colouring, a click, a lasso and a hover set as the point map's state (tests/pages/test_map_browser.py does it live)."""
from __future__ import annotations

import base64
import io
import json
import shutil

import numpy as np
import PIL.Image
import pytest

from backend.store.catalog import DATA_DIR_ENV
from backend.store.run_dir import Run
from backend.store.schema import MAP_LAYOUT
from tests.conftest import image_grids, open_app


@pytest.fixture(scope="module")
def data_dir(structure_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("map_pages")
    shutil.copytree(structure_run, root / "runs" / "small")
    shutil.copytree(structure_run, root / "runs" / "no-map")
    MAP_LAYOUT.path(root / "runs" / "no-map").unlink()
    shutil.copytree(structure_run, root / "runs" / "test-only")  # as analyze maps a `fit --targets test` run
    layout = np.load(MAP_LAYOUT.path(root / "runs" / "test-only"))
    layout[:Run(structure_run).n_train] = np.nan
    np.save(MAP_LAYOUT.path(root / "runs" / "test-only"), layout)
    return root


@pytest.fixture
def app(data_dir, monkeypatch):
    """open(run, **query) -> an AppTest of the page, every script run through the shell as a server runs it (as
    tests/conftest.py's pages_run_through_the_shell), so a page's RunError is the shell's one st.error."""
    monkeypatch.setenv(DATA_DIR_ENV, str(data_dir))
    return lambda run="small", **query: open_app({"run": run, **query}, "embeddings_map", timeout=300)


def drawn(at) -> tuple[dict, np.ndarray, np.ndarray, dict]:
    """The point map's payload as the browser gets it (widgets/point_map.js reads it so): (header, xy (n, 2),
    codes (n,), the view's JSON)."""
    (element,) = at.get("bidi_component")
    data = element.proto.bytes
    length = int.from_bytes(data[:4], "little")
    header = json.loads(data[4:4 + length])
    n, start = header["n"], 4 + length
    xy = np.frombuffer(data[start:start + 8 * n], dtype=np.float32).reshape(n, 2)
    codes = np.frombuffer(data[start + 8 * n:start + 10 * n], dtype=np.uint16)
    return header, xy, codes, json.loads(data[start + 10 * n:])


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
        header, xy, codes, view = drawn(at)
        assert header["n"] == run.n_targets and header["n_train"] == run.n_train, by  # none dropped
        np.testing.assert_array_equal(xy, layout)  # row = margins column
        assert codes.max() < len(header["names"]) == len(header["colours"]), by
        assert header["counts"] == np.bincount(codes, minlength=len(header["names"])).tolist(), by
        assert view == {"hover": {}, "lasso": None}
        if by == "label":
            np.testing.assert_array_equal(codes, run.labels)
            assert header["names"] == list(run.class_names)
        if by == "split":
            np.testing.assert_array_equal(codes, np.arange(run.n_targets) >= run.n_train)
    assert at.query_params["colour"] == options[-1]


def test_a_lasso_fills_the_grid_a_click_shows_the_image_and_a_hover_sends_it(app, data_dir):
    run = Run(data_dir / "runs" / "small")
    layout = np.load(MAP_LAYOUT.path(run.dir)).astype(np.float64)
    at = app()
    assert [i.value for i in at.info][0].startswith("Hover a point")
    # A box drawn as a lasso round the lower-left quarter of the map: inside it is the closed form of a box.
    (x0, y0), (x1, y1) = layout.min(axis=0), np.median(layout, axis=0)
    at.session_state["map-label"] = {"selection": {"lasso": [[x0 - 1, y0 - 1], [x1, y0 - 1], [x1, y1], [x0 - 1, y1]]},
                                     "hover": None}
    at.run()
    assert not at.exception and not at.error
    inside = np.flatnonzero((layout[:, 0] < x1) & (layout[:, 1] < y1))
    assert 10 < len(inside) < run.n_targets
    assert f"Selected targets ({len(inside)})" in [s.value for s in at.subheader]
    names = [f"train:{c}" if c < run.n_train else f"test:{c - run.n_train}" for c in inside[:24]]
    assert image_grids(at)["map-selected"][1] == names
    assert drawn(at)[3]["lasso"][1] == [x1, y0 - 1]  # drawn again if the map is drawn afresh
    column = run.n_train + 5
    at.session_state["map-label"] = {"selection": {"point": column}, "hover": 7}
    at.run()
    assert "test:5" in [s.value for s in at.subheader]
    caption = at.get("image")[-1].proto.imgs[0].caption
    assert caption.startswith(f"label {run.class_names[int(run.labels[column])]}")
    link = next(p.proto for p in at.get("page_link") if p.proto.label.startswith("Open "))  # (not the sidebar's)
    assert link.label == "Open test:5 on Neighbours" and link.page == "neighbours"
    assert link.query_string == "run=small&target=test%3A5"
    hover = drawn(at)[3]["hover"]  # the tooltip's image of the point the pointer rests on: its own pixels
    assert hover["column"] == 7
    shown = np.asarray(PIL.Image.open(io.BytesIO(base64.b64decode(hover["uri"].split(",", 1)[1]))))
    own = np.asarray(run.images[7])[..., 0]
    factor = shown.shape[0] // own.shape[0]
    np.testing.assert_array_equal(shown[::factor, ::factor], own)


def test_a_state_the_browser_should_not_send_selects_nothing(app):
    """The component's state comes from the browser: a column out of range or a malformed polygon selects nothing."""
    at = app()
    for selection, hover in [({"point": 10**9}, -1), ({"point": "3"}, "x"), ({"point": True}, True),
                             ({"lasso": "x"}, None), ({"lasso": [[0, 0], [1, 1]]}, None),
                             ({"lasso": [[0, 0], [1, "nan"], [2, 0]]}, None), ({"lasso": [[0, 0, 0]] * 3}, None),
                             ({"lasso": [[0, 0]] * 1001}, None), ("lasso", 10**9)]:
        at.session_state["map-label"] = {"selection": selection, "hover": hover}
        at.run()
        assert not at.exception and not at.error, selection
        assert [i.value for i in at.info][0].startswith("Hover a point"), selection
        assert drawn(at)[3] == {"hover": {}, "lasso": None}, selection
    at.session_state["map-label"] = {"selection": {"point": 0}, "hover": None}  # the same key, a good state: shown
    at.run()
    assert "train:0" in [s.value for s in at.subheader]


def test_a_tag_colours_the_map_and_filters_the_lasso(app, data_dir, tmp_path, monkeypatch):
    """With ?tag= the map can be coloured by the tag (its targets against the rest) and a lasso's grid holds only the
    tagged targets inside it."""
    from backend.leakage.annotations import ENV_VAR, AnnotationStore

    run = Run(data_dir / "runs" / "small")
    (tmp_path / "tags.db").touch()
    monkeypatch.setenv(ENV_VAR, f"sqlite:///{tmp_path / 'tags.db'}")
    tagged = np.array([1, 5, 8, run.n_train + 2, run.n_train + 3])
    AnnotationStore(f"sqlite:///{tmp_path / 'tags.db'}").add_tag("small", "seen", tagged, "rita")
    at = app(tag="seen")
    assert "tag" not in app().selectbox(key="map_colour").options  # no tag chosen: nothing to colour by
    at.selectbox(key="map_colour").set_value("tag").run()
    assert not at.exception and not at.error
    header, _, codes, _ = drawn(at)
    assert header["names"] == ["other", "tagged"]
    np.testing.assert_array_equal(np.flatnonzero(codes), tagged)
    at.session_state["map-tag-seen"] = {"selection": {"lasso": [[-1e6, -1e6], [1e6, -1e6], [1e6, 1e6], [-1e6, 1e6]]},
                                        "hover": None}
    at.run()
    assert "Selected targets (5)" in [s.value for s in at.subheader]
    assert image_grids(at)["map-selected"][1] == ["train:1", "train:5", "train:8", "test:2", "test:3"]


def test_a_run_without_a_map_names_the_command(app):
    at = app("no-map")
    assert len(at.error) == 1 and "map_layout.npy is missing" in at.error[0].value
    assert "python -m precompute analyze --run" in at.error[0].value


def test_unfitted_targets_are_left_off_the_map_its_legend_and_its_lasso(app, data_dir):
    """An unfitted target's point is NaN (analyze after `fit --targets test`): the caption counts the drawn targets,
    the legend counts only them, the view's bounds are finite and a lasso round everything selects only them."""
    run = Run(data_dir / "runs" / "test-only")
    at = app("test-only")
    assert not at.exception and not at.error
    assert at.caption[0].value.startswith(f"{run.n_test:,} targets (0 train, {run.n_test:,} test; the unfitted ones")
    at.selectbox(key="map_colour").set_value("split").run()
    header, xy, codes, _ = drawn(at)
    assert header["counts"] == [0, run.n_test] and np.isfinite(header["bounds"]).all()
    at.session_state["map-split"] = {"selection": {"lasso": [[-1e6, -1e6], [1e6, -1e6], [1e6, 1e6], [-1e6, 1e6]]},
                                     "hover": None}
    at.run()
    assert f"Selected targets ({run.n_test})" in [s.value for s in at.subheader]
