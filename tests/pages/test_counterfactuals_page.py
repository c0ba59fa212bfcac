"""The counterfactuals page under AppTest: basket by clicking, live verification, refused requests."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from backend.training import retrain_store
from backend.store.catalog import DATA_DIR_ENV
from backend.store.run_dir import Run
from tests.conftest import click_image, image_grids, open_app

RUN = "cf"


@pytest.fixture
def page(counterfactual_run, tmp_path, monkeypatch):
    """(AppTest on the counterfactuals page of a fresh copy of counterfactual_run, that run, its target column)."""
    run_dir = shutil.copytree(counterfactual_run, tmp_path / "data" / "runs" / RUN)
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "data"))
    run = Run(run_dir)
    weights = np.load(run_dir / "weights.npy")
    column = next(t for t in range(run.n_train, run.n_targets) if (weights[t] > 0).sum() >= 3)
    at = open_app({"run": RUN, "target": f"test:{column - run.n_train}"}, "counterfactuals", timeout=120)
    return at, run, column


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def open_tab(at: AppTest, tab: str) -> AppTest:
    at.session_state["cf_tab"] = tab
    return at.run()


def test_click_three_images_then_verify_with_four_models(page):
    at, run, column = page
    weights = np.load(run.dir / "weights.npy")[column]
    positive = image_grids(at)["cf_pos"][1]
    clicked = []
    for name in positive[:3]:
        click_image(at, "cf_pos", name, run.n_train)
        clicked.append(int(name.split(":")[1]))
    assert not at.exception, at.exception
    shown = metrics(at)
    assert shown["Basket"] == "3 images" and at.query_params["basket"] == ",".join(map(str, clicked))
    assert shown["Σ weights of the basket"] == f"{weights[clicked].astype(np.float64).sum():+.4f}"
    assert len(at.dataframe[0].value) == 3
    control = np.load(run.dir / "control_margins.npy").astype(np.float64).mean(0)[column]
    assert shown["Predicted margin"] == f"{control - weights[clicked].astype(np.float64).sum():+.3f}"

    open_tab(at, "Predicted effect · verify")
    at.slider(key="cf_models").set_value(4).run()
    at.button(key="cf_verify").click().run(timeout=300)
    assert not at.exception, at.exception
    (summary,) = retrain_store.summaries(run)
    cf = retrain_store.load(run, summary["key"])
    assert len(cf.request.seeds) == 4 and sorted(clicked) == cf.request.remove.tolist() and cf.targets == [column]
    assert metrics(at)["Actual margin"] == f"{cf.margins[:, column].mean():+.3f}"
    open_tab(at, "Every verified removal")
    assert any(c.value.startswith("1 counterfactual · correlations need at least 3") for c in at.caption)


def test_removing_a_whole_class_is_refused_without_training(page):
    at, run, _ = page
    labels = np.asarray(run.labels[:run.n_train])
    with_class = at.selectbox(key="cf_class").set_value(4).run()
    # More than the class holds: clamped to the whole class, and the page says so.
    with_class.number_input(key="cf_class_n").set_value(100_000).run()
    n = int((labels == 4).sum())
    assert f"How many (largest weight first): 100,000 is outside 1–{n:,}, so {n:,} is used" in [w.value for w in at.warning]
    at.button(key="cf_add_class").click().run()
    assert "every training image of class '4'" in at.error[0].value
    open_tab(at, "Predicted effect · verify")
    assert not [b for b in at.button if b.key == "cf_verify"]
    assert retrain_store.summaries(run) == []


def test_clicking_twice_takes_an_image_out_again(page):
    at, run, _ = page
    name = image_grids(at)["cf_pos"][1][0]
    click_image(at, "cf_pos", name, run.n_train)
    assert metrics(at)["Basket"] == "1 image" and at.query_params["basket"] == name.split(":")[1]
    click_image(at, "cf_pos", name, run.n_train)
    assert metrics(at)["Basket"] == "0 images" and "basket" not in at.query_params
    assert "basket is empty" in " ".join(c.value for c in at.caption)


def test_a_tag_keeps_the_weight_grids_to_its_training_images_and_fills_the_basket(page, tmp_path, monkeypatch):
    from backend.leakage.annotations import ENV_VAR, AnnotationStore

    _, run, column = page
    (tmp_path / "tags.db").touch()
    monkeypatch.setenv(ENV_VAR, f"sqlite:///{tmp_path / 'tags.db'}")
    weights = np.load(run.dir / "weights.npy")[column]
    tagged = np.flatnonzero(weights)[1::2][:7]  # every other image with a weight, and a test image
    AnnotationStore(f"sqlite:///{tmp_path / 'tags.db'}").add_tag(RUN, "some", [*tagged, run.n_train], "rita")
    at = open_app({"run": RUN, "target": f"test:{column - run.n_train}", "tag": "some"}, "counterfactuals", timeout=120)
    assert not at.exception and not at.error
    by_weight = tagged[np.argsort(-weights[tagged], kind="stable")]
    assert image_grids(at)["cf_pos"][1] == [f"train:{j}" for j in by_weight if weights[j] > 0][:12]
    assert image_grids(at)["cf_neg"][1] == [f"train:{j}" for j in by_weight[::-1] if weights[j] < 0][:12]
    at.button(key="cf_add_tag").click().run()
    assert metrics(at)["Basket"] == f"{len(tagged)} images"
    assert sorted(at.dataframe[0].value["image"]) == sorted(f"train:{j}" for j in tagged)


def test_the_basket_is_the_urls_id_list(page):
    at, run, column = page
    params = {"run": RUN, "target": f"test:{column - run.n_train}"}
    at = open_app({**params, "basket": "3,5-6"}, "counterfactuals", timeout=120)
    assert metrics(at)["Basket"] == "3 images"
    assert [r for r in at.dataframe[0].value["image"]] == ["train:3", "train:5", "train:6"]
    at = open_app({**params, "basket": f"2,{run.n_train}"}, "counterfactuals", timeout=120)
    assert metrics(at)["Basket"] == "0 images" and "basket" not in at.query_params
    assert any(f"training index {run.n_train} is out of range" in w.value and "empty basket" in w.value
               for w in at.warning)


def test_certify_button_runs_the_bisection_and_shows_its_steps(page):
    at, run, column = page
    open_tab(at, "Data support")
    at.button(key="cf_certify").click().run(timeout=300)
    assert not at.exception, at.exception
    stored = (run.dir / "support" / f"remove-{column}.json")
    assert stored.exists()
    steps = at.dataframe[-1].value
    assert len(steps) >= 1 and list(steps.columns) == ["k", "mean margin"]
    assert any("Certified support" in m.value for m in at.markdown)


def test_cli_top_10_and_the_page_add_the_top_10_give_the_same_set(counterfactual_run, tmp_path, monkeypatch):
    """One top-k: on a sparse datamodel (fewer than 10 positive weights) `counterfactual --remove top:10` removes
    what the page's "+ top 10 positive" puts in the basket: the positive weights only, never a zero weight."""
    import json

    from backend.counterfactuals.removal import parse_ids
    from tests.conftest import run_cli

    run_dir = shutil.copytree(counterfactual_run, tmp_path / "data" / "runs" / RUN)
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "data"))
    run = Run(run_dir)
    weights = np.load(run_dir / "weights.npy")
    column = next(t for t in range(run.n_train, run.n_targets) if 1 <= (weights[t] > 0).sum() < 10)
    target = f"test:{column - run.n_train}"
    at = open_app({"run": RUN, "target": target}, "counterfactuals", timeout=120)
    at.button(key="cf_top10").click().run()
    assert not at.exception, at.exception
    basket = sorted(parse_ids(at.query_params["basket"], run.n_train))
    out = json.loads(run_cli("counterfactual", "--run", run_dir, "--target", target, "--remove", "top:10", "--models", "1",
                             "--control-models", "8", "--device", "cpu", "--json").stdout)
    assert out["changed"] == [f"train:{i}" for i in basket]
    assert basket == sorted(np.flatnonzero(weights[column] > 0).tolist())
