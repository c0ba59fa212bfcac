"""The embeddings map and the similarity search in real Chromium: a lasso over 70,000 points fills the grid."""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from tests.conftest import CHROMIUM, NO_CHROMIUM
from tests.map_runs import write_map_run
from tests.pages.test_browser import (RUN, WAIT_MS, browser, click_tile, drag_across, grid, heading,  # noqa: F401
                                      serve, settle, tile_names)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not CHROMIUM.exists(), reason=NO_CHROMIUM)]
BIG = "map70k"


@pytest.fixture(scope="module")
def map_server(dashboard_data_dir, tmp_path_factory):
    """The dashboard serving the session's digits-tiny run and a synthetic run of 70,000 targets with a map."""
    data = tmp_path_factory.mktemp("map-served") / "data"
    (data / "runs").mkdir(parents=True)
    shutil.copytree(dashboard_data_dir / "runs" / RUN, data / "runs" / RUN, symlinks=True)
    write_map_run(data / "runs" / BIG)
    with serve(data, tmp_path_factory.mktemp("map-streamlit")) as url:
        yield url, data


@pytest.fixture(scope="module")
def page(map_server, browser):  # noqa: F811 (the browser fixture imported above)
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(WAIT_MS)
    yield page
    page.close()


def test_a_lasso_over_70000_points_fills_the_grid(map_server, page):
    from playwright.sync_api import expect

    page.goto(f"{map_server[0]}/embeddings_map?run={BIG}")
    expect(heading(page, "Embeddings map")).to_be_visible()
    settle(page)
    chart = page.get_by_test_id("stPlotlyChart").first
    expect(chart.locator("canvas").first).to_be_attached()  # WebGL (Scattergl) draws on canvases, not SVG points
    drag_across(page, chart, steps=3)
    selected = page.get_by_role("heading", name=re.compile(r"^Selected targets \([\d,]+\)$"))
    expect(selected).to_be_visible()
    settle(page)
    # The lasso round the whole plot area holds every point: none was dropped from the map.
    assert selected.inner_text() == "Selected targets (70,000)"
    names = tile_names(grid(page, "map-selected"))
    assert len(names) == 24 and all(re.fullmatch(r"(train|test):\d+", n) for n in names)
    # The next page of the selection shows the next 24.
    page.get_by_role("spinbutton", name=re.compile(r"^Page")).fill("2")
    page.keyboard.press("Enter")
    expect(grid(page, "map-selected").locator("g.textpoint text").first).not_to_have_attribute("data-unformatted",
                                                                                              re.compile(f"^{names[0]}<br>"))
    settle(page)
    second = tile_names(grid(page, "map-selected"))
    assert len(second) == 24 and not set(second) & set(names)


def test_similarity_search_on_the_image_page(map_server, page):
    from playwright.sync_api import expect

    from backend.api import open_run

    url, data = map_server
    api = open_run(data / "runs" / RUN)
    page.goto(f"{url}/neighbours?run={RUN}&target=test:3")
    expect(heading(page, "Most similar images")).to_be_visible()
    settle(page)
    assert tile_names(grid(page, "similar-datamodels")) == [n for n, _ in api.similar("test:3", 12, "datamodels")]
    # The space is in the URL (`?similar=`), as a shared link opens it.
    page.goto(f"{url}/neighbours?run={RUN}&target=test:3&similar=pixels")
    expect(grid(page, "similar-pixels")).to_be_visible()
    settle(page)
    expect(page.get_by_role("combobox", name="Similar by")).to_have_value(re.compile(r"^pixels: "))
    expected = [n for n, _ in api.similar("test:3", 12, "pixels")]
    assert tile_names(grid(page, "similar-pixels")) == expected
    # A click walks to the image clicked, and its own most similar images follow in the same space.
    assert click_tile(page, grid(page, "similar-pixels"), 0) == expected[0]
    expect(heading(page, f"Neighbours of {expected[0]}")).to_be_visible()
    settle(page)
    assert tile_names(grid(page, "similar-pixels")) == [n for n, _ in api.similar(expected[0], 12, "pixels")]
    assert parse_qs(urlparse(page.url).query)["similar"] == ["pixels"]
