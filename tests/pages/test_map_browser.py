"""The embeddings map and the similarity search in real Chromium: a lasso over 70,000 points fills the grid, a
hover shows the image, a click opens it."""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from tests.conftest import CHROMIUM, NO_CHROMIUM
from tests.map_runs import write_map_run
from tests.pages.test_browser import (RUN, WAIT_MS, browser, click_tile, drag_around, grid, heading,  # noqa: F401
                                      serve, settle, tile_names)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not CHROMIUM.exists(), reason=NO_CHROMIUM)]
BIG = "map70k"


def map_canvas(page):
    """The point map's top canvas (widgets/point_map.js), once its points are drawn."""
    page.locator("[data-drawn]").first.wait_for(state="attached")
    return page.locator("canvas.pm-marks").first


def lasso_around(page, steps: int = 3) -> None:
    """A real mouse drag round the whole point map, `steps` moves a side: a lasso holding every point."""
    canvas = map_canvas(page)
    canvas.scroll_into_view_if_needed()
    drag_around(page, canvas.bounding_box(), steps)


def point_on_screen(page, column: int) -> tuple[float, float]:
    """Where the point map draws margins column `column`: its layout row mapped by the view the canvas holds."""
    return tuple(page.evaluate("""([column]) => {
        const canvas = document.querySelector("[data-drawn]").shadowRoot.querySelector("canvas.pm-marks");
        const m = canvas.getRootNode().__pointMap, box = canvas.getBoundingClientRect();
        return [box.left + (m.data.xy[2 * column] - m.view[0]) * m.sx, box.top + (m.view[3] - m.data.xy[2 * column + 1]) * m.sy];
    }""", [column]))


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
    assert page.locator("[data-drawn]").first.get_attribute("data-drawn") == "70000"
    lasso_around(page)
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


def test_hovering_a_point_shows_its_image_and_a_click_opens_it(map_server, page):
    """The tooltip's image is the hovered target's own pixels (the PNG decoded and shrunk back by its whole factor),
    sent by Python when the pointer rests on the point; a click on the point shows it beside the map."""
    import base64
    import io

    import numpy as np
    import PIL.Image
    from playwright.sync_api import expect

    from backend.store.run_dir import Run
    from backend.store.schema import MAP_LAYOUT

    url, data = map_server
    run = Run(data / "runs" / RUN)
    layout = np.load(MAP_LAYOUT.path(run.dir))
    drawn = np.flatnonzero(np.isfinite(layout[:, 0]))  # an unfitted target has no point (NaN)
    gaps = np.linalg.norm(layout[drawn, None] - layout[None, drawn], axis=2) + np.eye(len(drawn)) * 1e9
    column = int(drawn[gaps.min(axis=1).argmax()])  # the most isolated point: no other one under the pointer
    name = f"train:{column}" if column < run.n_train else f"test:{column - run.n_train}"
    page.goto(f"{url}/embeddings_map?run={RUN}")
    expect(heading(page, "Embeddings map")).to_be_visible()
    settle(page)
    map_canvas(page).scroll_into_view_if_needed()
    x, y = point_on_screen(page, column)
    page.mouse.move(x + 3, y + 2)
    tip = page.locator(".pm-tip")
    expect(tip).to_be_visible()
    expect(tip).to_contain_text(name)
    image = tip.locator("img")
    expect(image).to_be_visible()  # Python's answer to the "hover" state
    png = base64.b64decode(image.get_attribute("src").split(",", 1)[1])
    shown = np.asarray(PIL.Image.open(io.BytesIO(png)))
    own = np.asarray(run.images[column])[..., 0]
    factor = shown.shape[0] // own.shape[0]
    assert factor > 1 and shown.shape == (own.shape[0] * factor, own.shape[1] * factor)
    np.testing.assert_array_equal(shown[::factor, ::factor], own)
    page.mouse.click(x, y)
    expect(heading(page, name)).to_be_visible()
    settle(page)
    expect(page.get_by_role("link", name=f"Open {name} on Neighbours")).to_be_visible()


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
