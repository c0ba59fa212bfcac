"""End to end: `streamlit run app.py` on a free port, driven by headless Chromium through Playwright.

Screenshots of every page go to test-artifacts/ (git-ignored).
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from backend.run_catalog import DATA_DIR_ENV
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
ARTIFACTS = ROOT / "test-artifacts"
RUN = "digits-tiny"
WAIT_MS = 90_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(dashboard_data_dir, tmp_path_factory):
    """Base URL of a fresh `streamlit run app.py` serving the fixture runs."""
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} to drive the app with")
    port = free_port()
    log_path = tmp_path_factory.mktemp("streamlit") / "server.log"
    env = dict(os.environ, **{DATA_DIR_ENV: str(dashboard_data_dir)}, PYTHONPATH=str(ROOT))
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
             "--server.address", "127.0.0.1", "--server.port", str(port), "--server.fileWatcherType", "none",
             "--browser.gatherUsageStats", "false"],
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
def page(server):
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(WAIT_MS)
        yield page
        browser.close()


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
    for i in range(charts.count()):  # plotly draws after the script run ends
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


def test_walk_the_dataset_in_a_real_browser(server, page):
    from playwright.sync_api import expect

    # A shared link is the first request this server sees: the page must still run inside the app shell.
    page.goto(f"{server}/neighbours?run={RUN}&target=test:3")
    expect(heading(page, "Neighbours of test:3")).to_be_visible()
    settle(page)
    sidebar = page.get_by_test_id("stSidebar")
    expect(sidebar.get_by_role("link", name="Quality")).to_be_visible()
    expect(sidebar.get_by_role("link", name="components")).to_have_count(0)
    screenshot(page, "neighbours")

    neighbour = page.get_by_role("button", name=re.compile(r"^train:\d+$")).first
    name = neighbour.inner_text()
    neighbour.click()
    expect(heading(page, f"Neighbours of {name}")).to_be_visible()
    settle(page)
    assert target_in(page.url) == name and f"run={RUN}" in page.url

    page.go_back()
    expect(heading(page, "Neighbours of test:3")).to_be_visible()
    assert target_in(page.url) == "test:3"
    settle(page)

    # The weight profile's first bar is the largest positive weight, the first image of the positive grid.
    top = page.get_by_role("button", name=re.compile(r"^train:\d+$")).first.inner_text()
    chart = page.get_by_test_id("stPlotlyChart")
    chart.scroll_into_view_if_needed()
    chart.locator(".bars path").first.click(force=True)
    expect(heading(page, f"Neighbours of {top}")).to_be_visible()
    assert target_in(page.url) == top
    settle(page)

    sidebar.get_by_role("link", name="Overview").click()
    expect(heading(page, f"Run {RUN}")).to_be_visible()
    settle(page)
    expect(page.get_by_test_id("stPlotlyChart")).to_have_count(2)
    assert f"run={RUN}" in page.url
    screenshot(page, "overview")

    sidebar.get_by_role("link", name="Quality").click()
    expect(heading(page, "Datamodel quality")).to_be_visible()
    settle(page)
    screenshot(page, "quality")
    worst = page.get_by_role("button", name=re.compile(r"^test:\d+$")).first
    name = worst.inner_text()
    worst.click()
    expect(heading(page, f"Neighbours of {name}")).to_be_visible()
    assert urlparse(page.url).path == "/neighbours" and target_in(page.url) == name


def test_a_run_without_datamodels_shows_an_error_in_the_browser(server, page):
    from playwright.sync_api import expect

    page.goto(f"{server}/neighbours?run=no-datamodels")
    alert = page.get_by_test_id("stAlertContentError")
    expect(alert).to_contain_text("weights.npy is missing")
    expect(alert).to_contain_text("python -m precompute fit --run")
    settle(page)
