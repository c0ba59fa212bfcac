"""The Dataset page under AppTest on digits-tiny: the URL's view drives the grid, the filters write the URL, a click
opens Neighbours, and tags follow the roles (reviewers and admins tag, viewers read)."""
from __future__ import annotations

import os

import pytest

from backend import target_table as tt
from backend.access.auth import AUTH_ENV, ROLES_ENV
from backend.api import open_run
from backend.leakage.annotations import ENV_VAR, AnnotationStore
from backend.store.catalog import DATA_DIR_ENV
from tests.conftest import click_image, image_grids, open_app

RUN = "digits-tiny"


@pytest.fixture
def dataset(dashboard_data_dir, tmp_path, monkeypatch):
    """open(user=None, **params) -> the Dataset page's AppTest, with an empty tag database of this test's own."""
    monkeypatch.setenv(DATA_DIR_ENV, str(dashboard_data_dir))
    (tmp_path / "tags.db").touch()
    monkeypatch.setenv(ENV_VAR, f"sqlite:///{tmp_path / 'tags.db'}")
    return lambda user=None, **params: open_app({"run": RUN, **params}, "dataset", user=user)


def shown(at) -> list[str]:
    return image_grids(at)["dataset"][1]


def expected(dashboard_data_dir, **params) -> list[str]:
    """The first page of the view, by the table and its filter (tests/test_target_table.py checks those)."""
    table = open_run(dashboard_data_dir / "runs" / RUN).table()
    rows = tt.page_of(tt.select(table, tt.parse_view(params, table)), tt.View())
    return [f"train:{r}" if r < table.n_train else f"test:{r - table.n_train}" for r in rows]


def test_the_url_view_is_the_grid_and_a_filter_writes_the_url(dataset, dashboard_data_dir):
    at = dataset(split="test", correct="no", sort="lds")
    assert not at.warning and shown(at) == expected(dashboard_data_dir, split="test", correct="no", sort="lds")
    assert shown(at) and all(name.startswith("test:") for name in shown(at))
    at.sidebar.radio(key="ds_split").set_value("train").run()
    assert at.query_params["split"] == "train" and at.query_params["sort"] == "lds"
    assert shown(at) == expected(dashboard_data_dir, split="train", correct="no", sort="lds")
    at.sidebar.radio(key="ds_correct").set_value("all").run()
    at.sidebar.selectbox(key="ds_range").set_value("margin").run()
    at.sidebar.number_input(key="ds_low").set_value(0.5).run()
    assert at.query_params["range"] == "margin:0.5:" and "correct" not in at.query_params
    view = expected(dashboard_data_dir, split="train", sort="lds", range="margin:0.5:")
    assert shown(at) == view and view != expected(dashboard_data_dir, split="train", sort="lds")
    at.sidebar.selectbox(key="ds_range").set_value("lds").run()  # another field: its range starts open
    assert at.query_params["range"] == "lds::" and at.sidebar.number_input(key="ds_low").value is None


def test_bad_url_values_warn_and_fall_back(dataset, dashboard_data_dir):
    at = dataset(split="valid", label="7,x", page="zz", sort="nope")
    assert len(at.warning) == 4 and not at.exception
    assert shown(at) == expected(dashboard_data_dir, label="7")


def test_pages_and_a_click_opening_neighbours(dataset, dashboard_data_dir):
    at = dataset(page="2")
    names = shown(at)
    assert names == [f"train:{i}" for i in range(48, 96)]
    at = click_image(at, "dataset", names[3], open_run(dashboard_data_dir / "runs" / RUN).run.n_train)
    assert not at.exception and at.query_params["target"] == "train:51"
    assert any(h.value.startswith("Neighbours of train:51") for h in at.title)


def test_tag_the_page_then_filter_by_the_tag_and_export(dataset, dashboard_data_dir):
    at = dataset(split="test", sort="margin")
    page = shown(at)
    at.text_input(key="ds_tag_name").input("hard ones").run()
    at.button(key="ds_add_tag").click().run()
    assert at.success and "Tagged 48 targets with hard ones" in at.success[0].value
    at = dataset(tag="hard ones")
    assert sorted(shown(at)) == sorted(page)
    bad = at.text_input(key="ds_tag_name").input("[x](https://evil.example)")
    at = bad.run().button(key="ds_add_tag").click().run()
    assert at.error and "is not a tag name" in at.error[0].value and at.error[0].value.startswith("`")  # plain text
    at = dataset(basket="12,3,10-11")  # the Counterfactuals basket, kept in the URL
    next(r for r in at.radio if r.label == "Selection").set_value("The basket (4)").run()
    at.text_input(key="ds_tag_name").input("basket").run()
    at.button(key="ds_add_tag").click().run()
    assert AnnotationStore(os.environ[ENV_VAR]).tags(RUN)["basket"] == [3, 10, 11, 12]


def test_viewers_read_tags_but_cannot_tag(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv(AUTH_ENV, "oidc")
    monkeypatch.setenv(ROLES_ENV, "rita=reviewer, *=viewer")
    AnnotationStore(f"sqlite:///{tmp_path / 'tags.db'}").add_tag(RUN, "seen", [3, 4], "rita")
    viewer = dataset(user="vic", tag="seen")
    assert shown(viewer) == ["train:3", "train:4"]
    assert viewer.button(key="ds_add_tag").disabled and viewer.text_input(key="ds_tag_name").disabled
    assert any("needs the reviewer or admin role" in c.value for c in viewer.caption)
    reviewer = dataset(user="rita", split="train")
    assert not reviewer.button(key="ds_add_tag").disabled
    reviewer.text_input(key="ds_tag_name").input("seen").run()
    reviewer.button(key="ds_remove_tag").click().run()
    assert "Untagged 2 targets of seen" in reviewer.success[0].value
    assert AnnotationStore(f"sqlite:///{tmp_path / 'tags.db'}").tags(RUN) == {}
