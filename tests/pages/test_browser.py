"""End to end: `streamlit run app.py` on a free port, driven by headless Chromium through Playwright.

Screenshots of every page go to test-artifacts/ (git-ignored).
"""
from __future__ import annotations

import csv
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, quote, urlparse

import pytest

from backend.access.auth import AUTH_ENV, ROLES_ENV
from backend.counterfactuals.removal import format_ids
from backend.leakage.annotations import ENV_VAR as DATABASE_URL_ENV
from backend.store.catalog import DATA_DIR_ENV
from tests.conftest import CHROMIUM, NO_CHROMIUM, RECORDED_SELECTION, ROOT

# Skipped at collection, before the session builds its runs for them; the summary counts these skips (conftest).
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not CHROMIUM.exists(), reason=NO_CHROMIUM)]

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
ARTIFACTS = ROOT / "test-artifacts"
RUN = "digits-tiny"
WAIT_MS = 90_000


@contextmanager
def header_proxy(upstream: str, name: str, value: str):
    """Base URL of a reverse proxy in front of `upstream` that sets header `name` on each connection's first
    request, as an authenticating proxy (nginx's proxy_set_header) does. Chromium sends a context's
    extra_http_headers with page requests but not with the WebSocket handshake, whose headers are the ones
    st.context.headers holds; a WebSocket always opens a connection of its own, so it is a first request."""
    target = urlparse(upstream)
    listener = socket.create_server(("127.0.0.1", 0))
    lowered = name.lower().encode() + b":"

    def pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def handle(client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(65536)
            if not chunk:
                client.close()
                return
            head += chunk
        end = head.index(b"\r\n\r\n")
        lines = [line for line in head[:end].split(b"\r\n") if not line.lower().startswith(lowered)]
        lines.insert(1, f"{name}: {value}".encode())
        backend = socket.create_connection((target.hostname, target.port))
        backend.sendall(b"\r\n".join(lines) + head[end:])
        threading.Thread(target=pipe, args=(backend, client), daemon=True).start()
        pipe(client, backend)

    def accept() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(client,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(data_dir: Path, tmp: Path, address: str = "127.0.0.1", port: int | None = None, args: tuple = (),
          **env: str):
    """Base URL (always on 127.0.0.1) of a fresh `streamlit run app.py` bound to `address` (on `port`, else a free
    one), serving data_dir with an empty votes database of its own; args: more `streamlit run` options; env:
    more environment variables (the auth settings)."""
    port = port or free_port()
    log_path, database = tmp / f"server-{port}.log", tmp / f"annotations-{port}.db"
    database.touch()  # a configured SQLite file must exist (backend/annotations.py)
    env = dict(os.environ, **{DATA_DIR_ENV: str(data_dir), DATABASE_URL_ENV: f"sqlite:///{database}"},
               PYTHONPATH=str(ROOT), **env)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
             "--server.address", address, "--server.port", str(port), "--server.fileWatcherType", "none",
             "--browser.gatherUsageStats", "false", *args],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"streamlit exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit did not answer /_stcore/health within 90 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def server(dashboard_data_dir, tmp_path_factory):
    """The dashboard on a loopback address: the local, unauthenticated one `make run` serves, on a copy of the
    session's data directory of its own (the counterfactual test retrains into its run)."""
    data = Path(shutil.copytree(dashboard_data_dir, tmp_path_factory.mktemp("served") / "data", symlinks=True))
    with serve(data, tmp_path_factory.mktemp("streamlit")) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page(server, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(WAIT_MS)
    yield page
    page.close()


def settle(page) -> None:
    """Wait until the script run the last action started has finished and its output is drawn."""
    from playwright.sync_api import expect

    expect(page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]')).to_have_count(1)
    expect(page.locator('[data-testid^="stSkeleton"], [data-testid="stAppSkeleton"]')).to_have_count(0)
    expect(page.get_by_test_id("stException")).to_have_count(0)
    page.wait_for_timeout(500)


def screenshot(page, name: str, directory: Path = ARTIFACTS) -> None:
    """The whole page: Streamlit scrolls inside its main block, so grow the viewport to its height first."""
    from playwright.sync_api import expect

    charts = page.get_by_test_id("stPlotlyChart")
    for i in range(charts.count()):  # plotly draws after the script run ends; a chart in a closed tab never does
        if charts.nth(i).is_visible():
            expect(charts.nth(i).locator(".main-svg").first).to_be_attached()
    directory.mkdir(parents=True, exist_ok=True)
    for _ in range(2):  # growing the viewport can re-flow the page once
        height = page.evaluate("() => document.querySelector('[data-testid=stMain]').scrollHeight")
        page.set_viewport_size({"width": 1400, "height": max(900, height + 40)})
        page.wait_for_timeout(800)
    page.screenshot(path=str(directory / f"dashboard-{name}.png"))
    page.set_viewport_size({"width": 1400, "height": 900})


def target_in(url: str) -> str:
    return parse_qs(urlparse(url).query)["target"][0]


def heading(page, text: str):
    return page.get_by_role("heading", name=text, exact=True)


def metric(page, label: str):
    """The value of the st.metric labelled exactly `label` ("Basket", not "Σ weights of the basket")."""
    return page.get_by_test_id("stMetric").filter(has=page.get_by_text(label, exact=True)).get_by_test_id("stMetricValue")


def drag_across(page, chart, steps: int = 12) -> None:
    """A real mouse drag around the whole plot area of a plotly chart (a lasso or box selecting every point), in
    `steps` moves a side (a lasso over a big WebGL chart reselects and redraws every point at each move)."""
    chart.scroll_into_view_if_needed()
    drag_around(page, chart.locator(".nsewdrag").first.bounding_box(), steps)


def drag_around(page, area: dict, steps: int) -> None:
    """A real mouse drag 4 px inside the edges of `area` (a bounding box), `steps` moves a side."""
    left, top = area["x"] + 4, area["y"] + 4
    right, bottom = area["x"] + area["width"] - 4, area["y"] + area["height"] - 4
    page.mouse.move(left, top)
    page.mouse.down()
    for x, y in ((right, top), (right, bottom), (left, bottom), (left, top + 2)):
        page.mouse.move(x, y, steps=steps)
    page.mouse.up()


def cut_metrics(page) -> list[str]:
    """The values of the page's st.metrics that do not fit their column (drawn cut off with an ellipsis)."""
    return page.get_by_test_id("stMetricValue").evaluate_all(
        "values => values.filter(v => [v, ...v.querySelectorAll('*')].some(e => e.scrollWidth > e.clientWidth))"
        ".map(v => v.innerText)")


def grid(page, key: str):
    """The image grid (widgets.image_grid.image_grid) drawn with key `key` (its widget key adds a digest)."""
    return page.locator(f'[class*="st-key-{key}-"]').get_by_test_id("stPlotlyChart")


def tile_captions(chart) -> list[str]:
    """The captions of an image grid's images in reading order, their lines joined by " | "."""
    chart.locator("g.textpoint text").first.wait_for(state="attached")
    return [text.replace("<br>", " | ") for text in
            chart.locator("g.textpoint text").evaluate_all("texts => texts.map(t => t.dataset.unformatted)")]


def tile_names(chart) -> list[str]:
    return [caption.split(" | ")[0] for caption in tile_captions(chart)]


def click_tile(page, chart, i: int) -> str:
    """Click the i-th image of a grid with the mouse, on the image itself (above its caption); returns its name."""
    name = tile_names(chart)[i]
    caption = chart.locator("g.textpoint text").nth(i)
    caption.scroll_into_view_if_needed()
    box = caption.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] - 40)
    return name


def open_on_neighbours(page, chart, i: int) -> str:
    """Click the i-th image of a grid and wait for the Neighbours page it opens; returns the image's name."""
    from playwright.sync_api import expect

    name = click_tile(page, chart, i)
    expect(heading(page, f"Neighbours of {name}")).to_be_visible()
    settle(page)
    return name

def sent_selections(page) -> list[tuple[str, dict]]:
    """(widget id, value) of every plotly selection the page sends from now on, decoded from the WebSocket's
    BackMsg frames: what Chromium really sends, which the AppTests replay (tests/conftest.py)."""
    import json

    from streamlit.proto.BackMsg_pb2 import BackMsg

    sent: list[tuple[str, dict]] = []

    def frame(payload) -> None:
        if isinstance(payload, str):
            return
        msg = BackMsg()
        msg.ParseFromString(payload)
        if msg.WhichOneof("type") == "rerun_script":
            for widget in msg.rerun_script.widget_states.widgets:
                kind = widget.WhichOneof("value")
                if kind in ("string_value", "json_value") and '"selection"' in getattr(widget, kind):
                    sent.append((widget.id, json.loads(getattr(widget, kind))))

    page.on("websocket", lambda ws: ws.on("framesent", frame))
    return sent


def shape(value):
    """A JSON value's structure: dict keys and the types of its leaves, lists by their first item. JSON has one
    number type: a coordinate that happens to be whole (x 220 rather than 220.5) decodes to an int, so ints and
    floats are both "number" (the app reads only customdata, through int())."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "number"
    return type(value).__name__


def test_walk_the_dataset_in_a_real_browser(server, page):
    from playwright.sync_api import expect

    # A shared link is the first request this server sees: the page must still run inside the app shell.
    page.goto(f"{server}/neighbours?run={RUN}&target=test:3")
    expect(heading(page, "Neighbours of test:3")).to_be_visible()
    settle(page)
    sidebar = page.get_by_test_id("stSidebar")
    expect(sidebar.get_by_role("link", name="Quality")).to_be_visible()
    expect(sidebar.get_by_role("link", name="components")).to_have_count(0)
    # Both ends of the datamodel side by side, on one 1400 x 900 screen without scrolling.
    for key in ("positive", "negative"):
        expect(grid(page, key)).to_be_in_viewport()
    assert grid(page, "positive").bounding_box()["y"] == grid(page, "negative").bounding_box()["y"]
    # No metric is cut off with an ellipsis at this width (Majority prediction was: "1 · 100% of …").
    assert cut_metrics(page) == []
    screenshot(page, "neighbours")

    # Clicking an image opens it: the image, not a button under it, is the click target.
    positive = grid(page, "positive")
    name = open_on_neighbours(page, positive, 1)
    assert re.fullmatch(r"train:\d+", name)
    assert target_in(page.url) == name and f"run={RUN}" in page.url

    page.go_back()
    expect(heading(page, "Neighbours of test:3")).to_be_visible()
    assert target_in(page.url) == "test:3"
    settle(page)

    # The pickers of targets the models get wrong: each lists images captioned with their fields.
    page.get_by_text("Choose a target").click()
    page.get_by_role("tab", name="Mistakes · Hardest · Most unstable").click()
    settle(page)
    for tab, key in (("Mistakes", "pick-mistakes"), ("Hardest", "pick-hardest"), ("Most unstable", "pick-unstable")):
        page.get_by_role("tab", name=tab, exact=True).click()
        settle(page)
        assert parse_qs(urlparse(page.url).query).get("pick_list", ["Mistakes"]) == [tab]  # (the default: no param)
        captions = tile_captions(grid(page, key))
        assert captions and all(re.match(r"^test:\d+ \| label \d · pred \d \d+% \| ", c) for c in captions), captions
    open_on_neighbours(page, grid(page, "pick-unstable"), 0)
    page.go_back()
    expect(heading(page, "Neighbours of test:3")).to_be_visible()
    settle(page)
    expect(grid(page, "pick-unstable")).to_be_visible()  # the back button kept the picker's tabs open
    query = parse_qs(urlparse(page.url).query)
    assert query["pick"] == ["Mistakes · Hardest · Most unstable"] and query["pick_list"] == ["Most unstable"]

    # The weight profile's first bar is the largest positive weight, the first image of the positive grid.
    top = tile_names(grid(page, "positive"))[0]
    chart = page.locator('[class*="st-key-profile-"]').get_by_test_id("stPlotlyChart")
    chart.scroll_into_view_if_needed()
    chart.locator(".bars path").first.click(force=True)
    expect(heading(page, f"Neighbours of {top}")).to_be_visible()
    assert target_in(page.url) == top
    settle(page)

    sidebar.get_by_role("link", name="Overview").click()
    expect(heading(page, f"Run {RUN}")).to_be_visible()
    settle(page)
    expect(page.get_by_test_id("stVegaLiteChart")).to_have_count(1)  # the open chart tab's alone
    expect(page.get_by_test_id("stVegaLiteChart").locator("canvas, svg").first).to_be_visible()  # drawn, not blank
    assert f"run={RUN}" in page.url
    screenshot(page, "overview")

    sidebar.get_by_role("link", name="Quality").click()
    expect(heading(page, "Datamodel quality")).to_be_visible()
    settle(page)
    screenshot(page, "quality")
    name = open_on_neighbours(page, grid(page, "worst"), 0)
    assert urlparse(page.url).path == "/neighbours" and target_in(page.url) == name


def test_a_click_on_an_image_sends_the_recorded_selection(server, browser):
    """One image click in Chromium sends exactly the selection payload recorded in tests/pages/ (its shape, and the
    clicked image's column as customdata), the one shape the AppTests replay and the app reads."""
    import json

    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(WAIT_MS)
    sent = sent_selections(page)
    page.goto(f"{server}/neighbours?run={RUN}&target=test:3")
    expect(heading(page, "Neighbours of test:3")).to_be_visible()
    settle(page)
    name = click_tile(page, grid(page, "positive"), 1)
    expect(heading(page, f"Neighbours of {name}")).to_be_visible()
    page.close()
    (widget, value), = [(w, v) for w, v in sent if "-positive-" in w]
    recorded = json.loads(RECORDED_SELECTION.read_text())
    assert shape(value) == shape(recorded)
    (point,) = value["selection"]["points"]
    assert point["customdata"] == int(name.removeprefix("train:")) and point["point_index"] == 1


def visible_training_images(page) -> set[str]:
    """The names of the training images of every visible image grid on the page."""
    charts = page.get_by_test_id("stPlotlyChart").filter(visible=True).filter(has=page.locator("g.textpoint"))
    return {name for i in range(charts.count()) for name in tile_names(charts.nth(i)) if name.startswith("train:")}


def test_methods_page_and_the_neighbours_method_picker_in_a_real_browser(server, page, dashboard_data_dir):
    import numpy as np
    from playwright.sync_api import expect

    from backend.attribution import store
    from backend.datamodels.queries import top_weights
    from backend.store.run_dir import Run

    page.goto(f"{server}/methods?run={RUN}")
    expect(heading(page, "Attribution methods")).to_be_visible()
    settle(page)
    expect(page.get_by_test_id("stDataFrame").first).to_be_visible()
    expect(page.get_by_test_id("stPlotlyChart").first.locator(".main-svg").first).to_be_attached()
    screenshot(page, "methods")

    run = Run(dashboard_data_dir / "runs" / RUN)
    top = {name: {f"train:{i}" for i in top_weights(np.asarray(store.read_scores(run, name)[3]), 12)[0]}
           for name in ("datamodels", "fixture-permuted")}
    assert top["datamodels"] != top["fixture-permuted"]
    page.goto(f"{server}/neighbours?run={RUN}&target=test:3")
    expect(heading(page, "Neighbours of test:3")).to_be_visible()
    settle(page)
    before = visible_training_images(page)
    assert top["datamodels"] <= before and not top["fixture-permuted"] - top["datamodels"] <= before
    # The picker is a type-ahead combobox: type the method, then Enter picks the one option left.
    page.get_by_test_id("stSelectbox").filter(has_text="Method").get_by_role("combobox").click()
    page.keyboard.type("fixture-perm")
    expect(page.get_by_role("option", name="fixture-permuted", exact=True)).to_be_visible()
    page.keyboard.press("Enter")
    settle(page)
    expect(page).to_have_url(re.compile(r"method=fixture-permuted"))
    after = visible_training_images(page)
    assert top["fixture-permuted"] <= after and after != before
    screenshot(page, "neighbours-methods")


def test_a_run_without_datamodels_shows_an_error_in_the_browser(server, page):
    from playwright.sync_api import expect

    page.goto(f"{server}/neighbours?run=no-datamodels")
    alert = page.get_by_test_id("stAlertContentError")
    expect(alert).to_contain_text("weights.npy is missing")
    expect(alert).to_contain_text("python -m precompute fit --run")
    settle(page)


def test_overview_and_a_target_without_a_datamodel_in_a_real_browser(server, page):
    """The Overview's figures fit their columns (the dataset is a line of its own: a metric cut "fashion-mnist" to
    "fash…") and none reads nan; a target `fit --targets` left out (train:0-4 of the fixture) opens, on Neighbours
    and Counterfactuals, on RunAPI.require_fitted's line, which names the command that fits it."""
    from playwright.sync_api import expect

    page.goto(f"{server}/?run={RUN}")
    expect(heading(page, f"Run {RUN}")).to_be_visible()
    settle(page)
    expect(page.get_by_test_id("stMarkdown").filter(has_text="Dataset").first).to_have_text("Dataset digits")
    values = page.get_by_test_id("stMetricValue").all_inner_texts()
    assert len(values) == 11 and not [v for v in values if "nan" in v.lower()] and cut_metrics(page) == []
    for page_name, title in (("neighbours", "Neighbours of train:2"), ("counterfactuals", "Counterfactuals for train:2")):
        page.goto(f"{server}/{page_name}?run={RUN}&target=train:2")
        expect(heading(page, title)).to_be_visible()
        settle(page)
        info = page.get_by_test_id("stAlertContentInfo").filter(has_text="no datamodel yet")
        expect(info).to_contain_text("train:2 has no datamodel yet")
        # the server's data directory hidden, as on every page (this server's is DATAMODELS_DATA_DIR)
        expect(info).to_contain_text(f"python -m precompute fit --run ${DATA_DIR_ENV}/runs/{RUN} --targets train:2")


def test_structure_pages_in_a_real_browser(server, page):
    from playwright.sync_api import expect

    page.goto(f"{server}/pca?run={RUN}")
    expect(heading(page, "Principal components of datamodel embeddings")).to_be_visible()
    settle(page)
    expect(heading(page, "Is the component faithful? (App. J)")).to_be_visible()
    expect(grid(page, "test-top")).to_be_visible()
    expect(grid(page, "train-top")).to_have_count(0)  # a closed tab is not drawn
    screenshot(page, "pca")
    page.get_by_role("tab", name="Training targets").click()
    expect(grid(page, "train-top")).to_be_visible()
    settle(page)
    assert parse_qs(urlparse(page.url).query)["pca_tab"] == ["Training targets"]
    page.reload()  # the open tab is in the URL: a reload (or a shared link) reopens it
    expect(grid(page, "train-top")).to_be_visible()
    settle(page)
    open_on_neighbours(page, grid(page, "train-bottom"), 0)
    page.go_back()  # back from another page: the tab is still open (lazy_tabs, open_target)
    expect(heading(page, "Principal components of datamodel embeddings")).to_be_visible()
    settle(page)
    expect(grid(page, "train-top")).to_be_visible()
    expect(page.get_by_role("tab", name="Training targets")).to_have_attribute("aria-selected", "true")
    assert parse_qs(urlparse(page.url).query)["pca_tab"] == ["Training targets"]
    page.get_by_role("tab", name="Test targets").click()
    expect(grid(page, "test-top")).to_be_visible()
    settle(page)
    assert "pca_tab" not in parse_qs(urlparse(page.url).query)  # (the first tab: no parameter)
    page.go_back()  # and back within the page reopens the tab before
    expect(grid(page, "train-top")).to_be_visible()
    settle(page)
    page.go_forward()
    expect(grid(page, "test-top")).to_be_visible()
    settle(page)

    # The component is in the URL: the back button restores it.
    for pc in (2, 3):
        page.get_by_test_id("stSelectbox").filter(has_text="Component").click()
        page.get_by_role("option", name=re.compile(rf"^PC {pc} · ")).click()
        expect(heading(page, f"Test targets projecting most positively onto PC {pc}")).to_be_visible()
        settle(page)
        assert parse_qs(urlparse(page.url).query)["pc"] == [str(pc)]
    page.go_back()
    expect(heading(page, "Test targets projecting most positively onto PC 2")).to_be_visible()
    settle(page)
    expect(page.get_by_role("combobox", name="Component")).to_have_value(re.compile(r"^PC 2 · "))

    page.get_by_test_id("stSidebar").get_by_role("link", name="Clusters").click()
    expect(heading(page, "Clusters of datamodel embeddings")).to_be_visible()
    settle(page)
    assert "pc=2" in page.url  # the sidebar link kept the whole view
    page.go_back()  # opening a page adds no history entry of its own: back is the page before
    expect(heading(page, "Test targets projecting most positively onto PC 2")).to_be_visible()
    settle(page)
    page.go_forward()
    expect(heading(page, "Clusters of datamodel embeddings")).to_be_visible()
    settle(page)
    for label, option in ((-1, "whole test set (all classes)"), (3, "class 3"), (5, "class 5")):
        page.get_by_test_id("stSelectbox").filter(has_text="Class").click()
        page.get_by_role("option", name=option, exact=True).click()
        settle(page)
        assert parse_qs(urlparse(page.url).query)["class"] == [str(label)]
    page.go_back()
    settle(page)
    assert parse_qs(urlparse(page.url).query)["class"] == ["3"]
    expect(page.get_by_role("combobox", name="Class")).to_have_value("class 3")
    expect(page.get_by_role("tab", name=re.compile(r"^Cluster \d+$"))).to_have_count(3)  # --clusters-per-class 3
    screenshot(page, "clusters")
    # A real lasso over the layout (each point's customdata its column, the recorded shape) selects every member.
    drag_across(page, page.get_by_test_id("stPlotlyChart").first)
    selected = page.get_by_role("heading", name=re.compile(r"^Selected targets \(\d+\)$"))
    expect(selected).to_be_visible()
    settle(page)
    n_selected = int(re.search(r"\((\d+)\)", selected.inner_text()).group(1))
    total = int(metric(page, "Targets").inner_text().replace(",", ""))
    assert n_selected == total
    assert len(tile_names(grid(page, "selected"))) == n_selected
    # The second image of cluster 0 becomes the target whose similar targets are listed beside it.
    name = click_tile(page, grid(page, "cluster-0"), 1)
    expect(heading(page, f"Targets most similar to {name}")).to_be_visible()
    assert target_in(page.url) == name
    settle(page)
    assert name not in tile_names(grid(page, "similar"))
    # ...and one of those opens on the Neighbours page.
    open_on_neighbours(page, grid(page, "similar"), 0)
    assert urlparse(page.url).path == "/neighbours"
    # A cluster tab (drawn in a fragment) is in the URL too, and back from another page reopens it.
    page.go_back()
    expect(heading(page, "Clusters of datamodel embeddings")).to_be_visible()
    settle(page)
    page.get_by_role("tab", name="Cluster 1", exact=True).click()
    expect(grid(page, "cluster-1")).to_be_visible()
    settle(page)
    assert parse_qs(urlparse(page.url).query)["cluster"] == ["Cluster 1"]
    open_on_neighbours(page, grid(page, "similar"), 0)
    page.go_back()
    expect(grid(page, "cluster-1")).to_be_visible()
    settle(page)
    assert parse_qs(urlparse(page.url).query)["cluster"] == ["Cluster 1"] and urlparse(page.url).path == "/clusters"


def review_state(page) -> tuple[int, int, str]:
    """(reviewed, total, shown test image) of the Review page."""
    from playwright.sync_api import expect

    progress = page.get_by_test_id("stProgress")
    expect(progress).to_contain_text("test images reviewed")
    reviewed, total = map(int, re.search(r"(\d+) of (\d+) test images reviewed", progress.inner_text()).groups())
    caption = page.get_by_test_id("stImageCaption").filter(has_text=re.compile(r"^test:\d+ ")).inner_text()
    return reviewed, total, caption.split()[0]


def test_review_shortcuts_none_action_reload_resume_and_export(server, page, tmp_path):
    from playwright.sync_api import expect

    annotator = "Ada Lovelace"
    page.goto(f"{server}/review?run={RUN}")
    expect(heading(page, "Review leak candidates")).to_be_visible()
    settle(page)
    page.get_by_label("Your name").fill(annotator)
    page.get_by_role("button", name="Start reviewing").click()
    expect(page.get_by_text(f"Reviewing as: {annotator}")).to_be_visible()
    settle(page)
    reviewed, total, first = review_state(page)
    assert reviewed == 0 and total > 1

    # Key 1 marks the first candidate shown; the nearest caption before its button names the pair.
    first_mark = page.get_by_role("button").filter(has=page.get_by_label("Shortcut 1", exact=True))
    voted = first_mark.locator("xpath=preceding::*[@data-testid='stCaptionContainer'][1]").inner_text().split()[0]
    page.locator("body").press("1")
    # (the exported votes below check that exactly this pair was marked)
    expect(page.get_by_test_id("stBaseButton-primary").filter(has=page.get_by_label("Shortcut 1", exact=True))).not_to_have_count(0)
    settle(page)
    screenshot(page, "review")
    page.locator("body").press("S")
    expect(page.get_by_text(re.compile(rf"^Saved \d+ votes on {first}\.$"))).to_be_visible()
    settle(page)
    reviewed, total_after, second = review_state(page)
    assert (reviewed, total_after) == (1, total) and second != first
    expect(page.get_by_test_id("stBaseButton-primary").filter(has_text="duplicate")).to_have_count(0)

    # N: none of the second image's candidates is a duplicate.
    page.locator("body").press("N")
    expect(page.get_by_text(re.compile(rf"^Saved \d+ votes on {second}: none are duplicates\.$"))).to_be_visible()
    settle(page)
    reviewed, _, third = review_state(page)
    assert reviewed == 2 and third not in (first, second)

    # The name is in the URL and the votes in the database: a reload resumes the queue.
    assert parse_qs(urlparse(page.url).query)["annotator"] == [annotator]
    page.reload()
    expect(page.get_by_text(f"Reviewing as: {annotator}")).to_be_visible()
    settle(page)
    assert review_state(page) == (2, total, third)

    page.get_by_test_id("stSidebar").get_by_role("link", name="Leakage results").click()
    expect(heading(page, f"Leakage results · {RUN}")).to_be_visible()
    settle(page)
    expect(metric(page, "Annotators")).to_have_text("1")
    screenshot(page, "leakage-results")
    with page.expect_download() as download:
        page.get_by_role("button", name="Votes (CSV)").click()
    path = tmp_path / download.value.suggested_filename
    download.value.save_as(path)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and {(r["run"], r["annotator"], f"test:{r['test']}") for r in rows} == {(RUN, annotator, first),
                                                                                      (RUN, annotator, second)}
    assert [f"train:{r['train']}" for r in rows if r["is_leak"] == "True"] == [voted]


def test_counterfactual_basket_verified_by_retraining(server, page):
    from playwright.sync_api import expect

    page.goto(f"{server}/counterfactuals?run={RUN}&target=test:3")
    expect(heading(page, "Counterfactuals for test:3")).to_be_visible()
    settle(page)
    clicked = []
    for basket in ("1 image", "2 images", "3 images"):
        clicked.append(click_tile(page, grid(page, "cf_pos"), len(clicked)))
        expect(metric(page, "Basket")).to_have_text(basket)
        settle(page)
    ids = [int(name.removeprefix("train:")) for name in clicked]
    assert parse_qs(urlparse(page.url).query)["basket"] == [format_ids(ids)]
    expect(metric(page, "Predicted margin")).to_be_visible()  # beside the basket, on every tab
    # The basket is in the URL: a reload brings it back, and the back button walks back through it.
    page.reload()
    expect(metric(page, "Basket")).to_have_text("3 images")
    settle(page)
    page.go_back()
    expect(metric(page, "Basket")).to_have_text("2 images")
    settle(page)
    page.go_forward()
    expect(metric(page, "Basket")).to_have_text("3 images")
    settle(page)
    # A second click on an image takes it out again.
    click_tile(page, grid(page, "cf_pos"), 0)
    expect(metric(page, "Basket")).to_have_text("2 images")
    settle(page)
    click_tile(page, grid(page, "cf_pos"), 0)
    expect(metric(page, "Basket")).to_have_text("3 images")
    settle(page)

    page.get_by_role("tab", name="Predicted effect · verify").click()
    settle(page)
    assert parse_qs(urlparse(page.url).query)["cf_tab"] == ["Predicted effect · verify"]
    models = page.get_by_test_id("stSlider").filter(has_text="Models to retrain")
    models.get_by_role("slider").focus()
    page.keyboard.press("Home")
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    settle(page)
    expect(models.get_by_test_id("stSliderThumbValue")).to_have_text("4")

    page.get_by_role("button", name="Verify by retraining").click()
    expect(metric(page, "Actual margin")).to_be_visible()
    settle(page)
    expect(page.get_by_text(re.compile(r"^Margins of the 4 retrained models: "))).to_be_visible()
    screenshot(page, "counterfactuals")

    # An out-of-range count is clamped and said so, and Add uses the clamped count, not a stale one.
    page.get_by_role("tab", name="Build the removal set").click()
    settle(page)
    page.get_by_role("button", name="Clear basket").click()
    expect(metric(page, "Basket")).to_have_text("0 images")
    settle(page)
    assert "basket" not in parse_qs(urlparse(page.url).query)
    page.get_by_text("Add images of one class").click()
    how_many = page.get_by_label("How many (largest weight first)")
    how_many.fill("1000")
    how_many.press("Enter")
    warning = page.get_by_text(re.compile(r"^How many \(largest weight first\): 1,000 is outside 1–\d+, so \d+ is used$"))
    expect(warning).to_be_visible()
    settle(page)
    used = re.search(r"so (\d+) is used", warning.inner_text()).group(1)
    page.get_by_role("button", name="Add", exact=True).click()
    expect(metric(page, "Basket")).to_have_text(f"{used} images")
    settle(page)

def test_url_text_in_a_warning_is_plain_text(server, page):
    from playwright.sync_api import expect

    page.goto(f"{server}/neighbours?run={RUN}&target=" + quote("[phish](https://evil.example) ![x](https://evil.example/x.png)"))
    warning = page.get_by_test_id("stAlertContentWarning")
    # The message quotes the first 40 characters of a bad target: markdown link syntax, shown as text.
    expect(warning).to_contain_text("[phish](https://evil.example) ![x](https")
    settle(page)
    expect(warning.locator("a, img")).to_have_count(0)
    # (the sidebar's page links carry the target in their query string; none may point at the site)
    expect(page.locator('a[href^="https://evil"], img[src^="https://evil"]')).to_have_count(0)


def test_a_server_on_every_interface_needs_auth_and_takes_the_user_from_the_proxy_header(
        dashboard_data_dir, browser, tmp_path):
    from playwright.sync_api import expect

    with serve(dashboard_data_dir, tmp_path, address="0.0.0.0") as url:
        page = browser.new_page()
        page.goto(f"{url}/review?run={RUN}")
        expect(page.get_by_test_id("stAlertContentError")).to_contain_text("listens on 0.0.0.0, so it must know who you are")
        settle(page)
        expect(page.get_by_role("heading")).to_have_count(0)
        page.close()
    auth = {AUTH_ENV: "header:X-Forwarded-User", ROLES_ENV: "alice=reviewer"}
    with serve(dashboard_data_dir, tmp_path, address="0.0.0.0", **auth) as url:
        anonymous = browser.new_page()
        anonymous.goto(f"{url}/review?run={RUN}&annotator=alice")
        expect(anonymous.get_by_test_id("stAlertContentError")).to_contain_text("no X-Forwarded-User header")
        anonymous.close()
        context = browser.new_context()
        page = context.new_page()
        with header_proxy(url, "X-Forwarded-User", "alice") as proxied:
            page.goto(f"{proxied}/review?run={RUN}&annotator=mallory")
            expect(page.get_by_text("Reviewing as: alice")).to_be_visible()
            settle(page)
            assert "annotator" not in parse_qs(urlparse(page.url).query)
            expect(page.get_by_role("button", name="Change annotator")).to_have_count(0)
            context.close()


def test_oidc_login_through_a_real_provider_names_the_annotator_and_a_viewer_cannot_retrain(
        dashboard_data_dir, browser, tmp_path):
    """st.login against oidc-provider-mock, a real OpenID Connect provider on 127.0.0.1: its login form, its
    tokens, Streamlit's callback and cookie. Alice (a reviewer) reviews as herself whatever the URL says; Bob,
    a viewer, finds the retraining button disabled."""
    from playwright.sync_api import expect
    oidc = pytest.importorskip("oidc_provider_mock", reason="the test extra's oidc-provider-mock")
    pytest.importorskip("authlib", reason="st.login needs Authlib (streamlit[auth])")
    import secrets

    port = free_port()
    users = [oidc.User(sub=name, claims={"email": f"{name}@lab.org", "email_verified": True}) for name in ("alice", "bob")]
    with oidc.run_server_in_thread(user_claims=users) as provider:
        config = tmp_path / "secrets.toml"
        config.write_text(
            "[auth]\n"
            f'redirect_uri = "http://127.0.0.1:{port}/oauth2callback"\n'
            f'cookie_secret = "{secrets.token_hex(16)}"\n'
            'client_id = "datamodels-explorer"\nclient_secret = "test-secret"\n'
            f'server_metadata_url = "http://127.0.0.1:{provider.server_port}/.well-known/openid-configuration"\n')
        auth = {AUTH_ENV: "oidc", ROLES_ENV: "alice@lab.org=reviewer,*=viewer"}
        with serve(dashboard_data_dir, tmp_path, port=port, args=("--secrets.files", str(config)), **auth) as url:
            def log_in(page, sub: str, path: str) -> None:
                page.goto(f"{url}/{path}")
                page.get_by_role("button", name="Log in").click()
                page.locator('input[name="sub"]').fill(sub)  # the provider's own form
                page.get_by_role("button", name="Authorize").click()
                page.wait_for_url(f"{url}/**")
                page.goto(f"{url}/{path}")  # Streamlit's callback lands on the app's root
                settle(page)

            alice = browser.new_context().new_page()
            log_in(alice, "alice", f"review?run={RUN}&annotator=mallory")
            expect(alice.get_by_text("Reviewing as: alice@lab.org")).to_be_visible()
            expect(alice.get_by_role("button", name="Change annotator")).to_have_count(0)
            screenshot(alice, "oidc-review")
            alice.context.close()

            bob = browser.new_context().new_page()
            log_in(bob, "bob", f"counterfactuals?run={RUN}&target=test:0")
            bob.get_by_role("tab", name="Data support", exact=True).click()
            settle(bob)
            expect(bob.get_by_role("button", name="Certify by bisection")).to_be_disabled()  # retrains: admins only
            bob.context.close()


def test_dataset_filter_grid_tag_and_export_in_a_real_browser(server, page, dashboard_data_dir, tmp_path):
    """Filter the Dataset page to the test split, check its grid against the table, tag the page, filter by the tag,
    and export it: the downloaded CSV and JSON hold the grid's targets, their fields and the tag."""
    import json

    from playwright.sync_api import expect

    from backend import target_table
    from backend.api import open_run

    page.goto(f"{server}/dataset?run={RUN}&sort=margin")
    expect(heading(page, f"Dataset · {RUN}")).to_be_visible()
    settle(page)
    sidebar = page.get_by_test_id("stSidebar")
    sidebar.get_by_test_id("stRadio").filter(has_text="Split").get_by_text("test", exact=True).click()
    settle(page)
    assert parse_qs(urlparse(page.url).query)["split"] == ["test"]
    table = open_run(dashboard_data_dir / "runs" / RUN).table()
    rows = target_table.page_of(target_table.select(table, target_table.View(split="test", sort="margin")),
                                target_table.View())
    expected = [f"test:{r - table.n_train}" for r in rows]
    assert tile_names(grid(page, "dataset")) == expected
    screenshot(page, "dataset")

    page.get_by_label("Tag name").fill("browser check")
    page.get_by_role("button", name="Add tag").click()
    settle(page)
    expect(page.get_by_text(f"Tagged {len(expected)} targets with browser check")).to_be_visible()
    page.goto(f"{server}/dataset?run={RUN}&tag=browser+check")
    expect(heading(page, f"Dataset · {RUN}")).to_be_visible()
    settle(page)
    assert tile_names(grid(page, "dataset")) == sorted(expected, key=lambda n: int(n.split(":")[1]))

    downloads = {}
    for kind in ("CSV", "JSON"):
        with page.expect_download() as download:
            page.get_by_role("button", name=f"Export {kind}").click()
        downloads[kind] = tmp_path / download.value.suggested_filename
        download.value.save_as(downloads[kind])
    with open(downloads["CSV"], newline="") as f:
        exported = list(csv.DictReader(f))
    records = target_table.records(table, sorted(rows), {int(r): ["browser check"] for r in rows})
    assert [r["target"] for r in exported] == [r["target"] for r in records]
    assert all(r["tags"] == "browser check" for r in exported)
    assert [float(r["margin"]) for r in exported] == pytest.approx([r["margin"] for r in records])
    assert json.loads(downloads["JSON"].read_text()) == {"run": RUN, "targets": records}
