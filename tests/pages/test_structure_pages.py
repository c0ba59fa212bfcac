"""The PCA and Clusters pages, driven through the app shell with Streamlit's AppTest."""
from __future__ import annotations

import os
import re
import shutil

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from backend.structure import clusters

from backend.structure import faithfulness

from backend.structure import similar_targets
from backend.leakage.annotations import ENV_VAR, AnnotationStore
from backend.store.catalog import DATA_DIR_ENV
from backend.store.run_dir import Run
from tests.conftest import click_image, image_grids, open_app, plotly_charts, recorded_selection


@pytest.fixture(scope="module")
def data_dir(structure_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("pages_data")
    shutil.copytree(structure_run, root / "runs" / "small")
    return root


@pytest.fixture
def app(data_dir, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(data_dir))

    def open_page(page: str, **query) -> AppTest:
        return open_app({"run": "small", **query}, page, timeout=300)
    return open_page


def run_of(data_dir) -> Run:
    return Run(data_dir / "runs" / "small")


def no_errors(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def test_pca_page_shows_chart_and_grids_for_first_and_last_component(app, data_dir):
    at = app("pca")
    no_errors(at)
    assert at.title[0].value == "Principal components of datamodel embeddings"
    assert at.get("plotly_chart")  # explained variance, datamodels vs representation
    assert "Test targets projecting most positively onto PC 0" in [s.value for s in at.subheader]
    assert "Train targets projecting most negatively onto PC 0" not in [s.value for s in at.subheader]  # a closed tab
    for tab, text in (("Training targets", "Train targets projecting most negatively onto PC 0"),
                      ("Training-image coordinates", "Training images with the largest coordinates of PC 0")):
        at.session_state["pca_tab"] = tab
        assert text in [s.value for s in at.run().subheader]
    at.session_state["pca_tab"] = "Test targets"
    last = len(np.load(data_dir / "runs" / "small" / "structure" / "pca_components.npy", mmap_mode="r")) - 1
    at.selectbox(key="pca_component").set_value(last).run()
    no_errors(at)
    assert f"Test targets projecting most positively onto PC {last}" in [s.value for s in at.subheader]


def test_pca_tab_comes_from_the_url_and_an_unknown_one_leaves_it(app):
    at = app("pca", pca_tab="Training targets")  # a link (or the back button) opens the tab it names
    no_errors(at)
    assert "Train targets projecting most negatively onto PC 0" in [s.value for s in at.subheader]
    assert at.query_params["pca_tab"] == "Training targets"
    at = app("pca", pca_tab="Cluster 7")  # (a stale label: the first tab opens)
    no_errors(at)
    assert "Test targets projecting most positively onto PC 0" in [s.value for s in at.subheader]
    assert "pca_tab" not in at.query_params


def test_pca_grid_buttons_are_the_extreme_test_targets(app, data_dir):
    at = app("pca")
    run = run_of(data_dir)
    projection = np.load(data_dir / "runs" / "small" / "structure" / "pca_projections.npy")[run.n_train:, 0]
    want = {f"test:{j}" for j in np.argsort(-projection)[:12]}
    assert set(image_grids(at)["test-top"][1]) == want


def test_a_tag_keeps_the_pca_grids_to_its_targets(app, data_dir, tmp_path, monkeypatch):
    """?tag=: the ends of a component among the tagged test targets only (brute force over the stored projections)."""
    (tmp_path / "tags.db").touch()
    monkeypatch.setenv(ENV_VAR, f"sqlite:///{tmp_path / 'tags.db'}")
    run = run_of(data_dir)
    tagged = run.n_train + np.arange(0, run.n_test, 4)
    AnnotationStore(os.environ[ENV_VAR]).add_tag(run.name, "every fourth", tagged, "rita")
    at = app("pca", tag="every fourth")
    no_errors(at)
    projection = np.load(data_dir / "runs" / "small" / "structure" / "pca_projections.npy")[tagged, 0]
    order = sorted(range(len(tagged)), key=lambda i: (-projection[i], i))[:12]
    assert image_grids(at)["test-top"][1] == [f"test:{tagged[i] - run.n_train}" for i in order]


def test_clusters_page_renders_every_class_and_the_whole_test_set(app, data_dir):
    at = app("clusters")
    no_errors(at)
    run = run_of(data_dir)
    for choice in [*range(len(run.class_names)), -1]:
        at.selectbox(key="clusters_class").set_value(choice).run()
        no_errors(at)
        quality = clusters.load_quality(run)
        info = quality["whole"] if choice == -1 else quality["per_class"][choice]
        sizes = next(c.value for c in at.caption if c.value.startswith("Sizes: "))
        assert [int(n) for n in re.findall(r"cluster \d+ (\d+) images", sizes)] == info["sizes"]
        titles = [s.value for s in at.subheader if s.value.startswith("Cluster ")]  # the open tab only
        assert [int(t.split(" · ")[1].split()[0]) for t in titles] == info["sizes"][:1]
    assert any(m.label == "NMI with the labels" for m in at.metric)


def test_a_box_selection_on_the_layout_shows_the_selected_targets(app, data_dir, tmp_path, monkeypatch):
    (tmp_path / "tags.db").touch()
    monkeypatch.setenv(ENV_VAR, f"sqlite:///{tmp_path / 'tags.db'}")
    at = app("clusters")
    at.selectbox(key="clusters_class").set_value(3).run()
    run = run_of(data_dir)
    members, _ = clusters.class_clustering(run, 3)
    picked = [run.n_train + int(j) for j in members[:2]]
    selection = recorded_selection([(c, i) for i, c in enumerate(picked)])
    at.session_state["layout-3"] = selection
    at.run()
    no_errors(at)
    assert "Selected targets (2)" in [s.value for s in at.subheader]
    assert image_grids(at)["selected"][1] == [f"test:{c - run.n_train}" for c in picked]
    # The selection can be tagged (the local user is an admin), in the annotation database the Dataset page filters by.
    at.text_input(key="clusters_tag_name").input("lasso")
    at.button(key="clusters_add_tag").click().run()
    assert AnnotationStore(os.environ[ENV_VAR]).tags(run.name) == {"lasso": sorted(picked)}


def test_a_tag_keeps_the_cluster_grids_and_the_selection_to_its_targets(app, data_dir, tmp_path, monkeypatch):
    """?tag=: a cluster's grid lists its tagged members by silhouette, most typical first (brute force), and a box
    selection on the layout keeps its tagged targets only."""
    (tmp_path / "tags.db").touch()
    monkeypatch.setenv(ENV_VAR, f"sqlite:///{tmp_path / 'tags.db'}")
    run = run_of(data_dir)
    members, clustering = clusters.class_clustering(run, 3)
    columns = run.n_train + np.asarray(members)
    tagged = columns[::3]
    AnnotationStore(os.environ[ENV_VAR]).add_tag(run.name, "every third", tagged, "rita")
    at = app("clusters", tag="every third")
    at.selectbox(key="clusters_class").set_value(3).run()
    no_errors(at)
    inside = np.flatnonzero((clustering.labels == 0) & np.isin(columns, tagged))
    order = inside[np.argsort(-np.nan_to_num(clustering.silhouette[inside]), kind="stable")][:12]
    assert image_grids(at)["cluster-0"][1] == [f"test:{c - run.n_train}" for c in columns[order]]
    at.session_state["layout-3"] = recorded_selection([(int(c), i) for i, c in enumerate(columns[:6])])
    at.run()
    kept = [c for c in columns[:6] if c in tagged]
    assert f"Selected targets ({len(kept)})" in [s.value for s in at.subheader]
    assert image_grids(at)["selected"][1] == [f"test:{c - run.n_train}" for c in kept]


def test_clicking_a_cluster_image_makes_it_the_target_and_lists_its_similar_targets(app, data_dir):
    at = app("clusters", target="test:0")
    run = run_of(data_dir)
    want = {f"{'train' if c < run.n_train else 'test'}:{c if c < run.n_train else c - run.n_train}"
            for c in similar_targets.similar_to(run, run.n_train)[0]}
    assert set(image_grids(at)["similar"][1]) == want
    name = image_grids(at)["cluster-0"][1][1]
    click_image(at, "cluster-0", name, run.n_train)
    no_errors(at)
    assert at.query_params["target"] == [name] or at.query_params["target"] == name
    assert at.header[-1].value == f"Targets most similar to {name}"


def test_faithfulness_retrains_on_click_then_answers_from_the_run(app, data_dir):
    at = app("pca")
    at.number_input(key="faith_k").set_value(10)
    at.number_input(key="faith_models").set_value(1).run()
    run = run_of(data_dir)
    todo = faithfulness.models_to_train(run, 0, 10, n_models=1)
    button = at.button(key="faith_run")
    assert button.label == f"Retrain {todo} models"
    button.click().run()
    no_errors(at)
    assert faithfulness.models_to_train(run, 0, 10, n_models=1) == 0
    assert len(plotly_charts(at)) == 2  # explained variance and the margin changes
    at.run()  # an identical request: no button, the stored result at once
    assert not [b for b in at.button if b.key == "faith_run"] and len(plotly_charts(at)) == 2


def test_pages_tell_how_to_build_the_analysis_when_it_is_missing(tiny_run, tmp_path, monkeypatch):
    shutil.copytree(tiny_run, tmp_path / "runs" / "bare")
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    for page in ("pca", "clusters"):
        at = open_app({"run": "bare"}, page, timeout=120, check=False)
        # app.py shows a RunError with st.error; AppTest may run a page outside app.py, where it is an exception.
        messages = [e.value for e in at.error] + [e.message for e in at.exception]
        assert any("has no" in m and "precompute analyze" in m for m in messages), (page, messages)
