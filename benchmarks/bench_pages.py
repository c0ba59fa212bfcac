"""Page load times in a real browser: `streamlit run app.py` driven by headless Chromium (Playwright).

Run: .venv/bin/python benchmarks/bench_pages.py --data-dir DIR --run NAME   (DIR/runs/NAME is a run with
datamodels, eval and analyze done, e.g. a small digits run)
The embeddings map at 70,000 targets: --synthetic-map 70000 writes a synthetic run of that many targets with a
map (tests/map_runs.py) as DIR/runs/NAME, opens the map first, times it and Overview (a page without the map:
the floor of a warm visit at the same load), and then a lasso round all of its points.

Measures the server's start (process start to its health check answering: app.py's st.App imports the pages'
modules first), then, from the request to the end of the script run (Streamlit's script state back to
notRunning, no skeleton left, a title drawn, and on the Embeddings map its points on the canvas): the first page
after the server starts, a fresh browser session's first page (a new browser profile: nothing cached), a new tab
in the same browser (its cache warm),
and every page by its sidebar link, first visit and warm (again after another page). Goals: < 3 s, < 3 s and
< 1 s warm. Beside each wall time, the server's CPU seconds over the same
span (user + system, from /proc): on a shared machine the wall time includes waiting for a core, the CPU time not.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["Overview", "Dataset", "Neighbours", "Quality", "Methods", "PCA", "Clusters", "Embeddings map",
         "Counterfactuals", "Review leaks", "Leakage results"]
DONE = '[data-testid="stApp"][data-test-script-state="notRunning"]'


def wait_done(page) -> None:
    """The script run over, its page drawn: no skeleton, a title, and a point map's points (widgets/point_map.js
    marks its element data-drawn once they are on the canvas)."""
    page.wait_for_selector(DONE, state="attached", timeout=120_000)
    page.wait_for_function("() => !document.querySelector('[data-testid^=stSkeleton], [data-testid=stAppSkeleton]')"
                           " && document.querySelector('[data-testid=stMain] h1') && (!document.querySelector("
                           "'[data-testid=stMain] h1').textContent.includes('Embeddings map')"
                           " || document.querySelector('[data-drawn]'))",
                           timeout=120_000)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def timed(action, page, pid: int) -> tuple[float, float]:
    """(wall seconds, server CPU seconds) of an action, to the end of the script run it starts."""
    start, cpu = time.perf_counter(), cpu_seconds(pid)
    action()
    page.wait_for_timeout(50)  # the click's rerun must have started before "notRunning" means done
    wait_done(page)
    return time.perf_counter() - start, cpu_seconds(pid) - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--run", default="digits")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--synthetic-map", type=int, metavar="N", help="time the embeddings map alone on a synthetic "
                        "run of N targets (N/7 of them test targets) written to DIR/runs/NAME if it is not there")
    parser.add_argument("--pages", default=",".join(PAGES), help="comma-separated page titles to time (default: all)")
    parser.add_argument("--view", action="append", default=[], metavar="PATH:QUERY",
                        help="also time opening the page at URL path PATH (e.g. dataset) with URL query QUERY, as a "
                             "shared link: cold, then warm")
    parser.add_argument("--screenshots", type=Path, metavar="DIR",
                        help="save each page as it is after its warm visit to DIR/PREFIX-<page>.png (the README's pictures)")
    parser.add_argument("--screenshot-prefix", default="dashboard")
    args = parser.parse_args()
    pages = [p for p in args.pages.split(",") if p]
    if unknown := set(pages) - set(PAGES):
        parser.error(f"--pages: no page titled {', '.join(sorted(unknown))}; the pages are {', '.join(PAGES)}")
    from playwright.sync_api import sync_playwright
    start_path = ""
    if args.synthetic_map:
        sys.path.insert(0, str(ROOT))
        from tests.map_runs import write_map_run
        from tests.pages.test_map_browser import lasso_around  # the browser tests' lasso, 3 moves a side
        if not (args.data_dir / "runs" / args.run).exists():
            n_test = args.synthetic_map // 7
            write_map_run(args.data_dir / "runs" / args.run, args.synthetic_map - n_test, n_test)
        # Overview between the map's visits: on a run without datamodels it draws its title, then its error (timed
        # too: the floor of a warm visit in the same browser at the same load).
        start_path, pages = "embeddings_map", ["Embeddings map", "Overview"]

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, DATAMODELS_DATA_DIR=str(args.data_dir), PYTHONPATH=str(ROOT))
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                               "--server.address", "127.0.0.1"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    rows, load, started = [], os.getloadavg(), time.perf_counter()
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                time.sleep(0.1)
        rows.append(("server start (process to health check)", (time.perf_counter() - started, cpu_seconds(server.pid))))
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            first = f"{url}/{start_path}?run={args.run}"
            start = "Embeddings map" if start_path else "Overview"
            rows.append((f"first page after server start ({start})", timed(lambda: page.goto(first), page, server.pid)))
            fresh = browser.new_context().new_page()
            rows.append((f"fresh session's first page ({start})", timed(lambda: fresh.goto(first), fresh, server.pid)))
            tab = fresh.context.new_page()
            rows.append((f"a new tab in the same browser ({start})", timed(lambda: tab.goto(first), tab, server.pid)))
            sidebar = page.get_by_test_id("stSidebar")

            def open_page(name: str) -> tuple[float, float]:
                return timed(lambda: sidebar.get_by_role("link", name=name, exact=True).click(), page, server.pid)

            for i, name in enumerate(pages):
                first = open_page(name)
                open_page(pages[(i + 1) % len(pages)])  # away (with one page: its own link, a rerun)
                rows.append((f"{name}: first visit / warm", (first, open_page(name))))
                if args.screenshots:  # after the timing, so the picture costs no timed second
                    args.screenshots.mkdir(parents=True, exist_ok=True)
                    slug = name.lower().replace(" ", "-")
                    page.screenshot(path=str(args.screenshots / f"{args.screenshot_prefix}-{slug}.png"))
            if args.synthetic_map:
                def lasso() -> None:
                    lasso_around(page)
                    page.get_by_role("heading", name=f"Selected targets ({args.synthetic_map:,})").wait_for()

                open_page("Embeddings map")  # (the loop above ends on Overview)
                rows.append((f"a lasso round all {args.synthetic_map:,} points, to the grid drawn",
                             timed(lasso, page, server.pid)))
            for view in args.view:
                path, _, query = view.partition(":")
                link = f"{url}/{path}?run={args.run}&{query}"
                first = timed(lambda: page.goto(link), page, server.pid)
                rows.append((f"/{path}?{query}: link cold / warm", (first, timed(lambda: page.goto(link), page, server.pid))))
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"load average before: {load}; after: {os.getloadavg()}")
    print("| page | wall s | server CPU s |\n| --- | --- | --- |")
    for label, value in rows:
        if isinstance(value[0], tuple):
            (wall, cpu), (warm, warm_cpu) = value
            print(f"| {label} | {wall:.2f} / {warm:.2f} | {cpu:.2f} / {warm_cpu:.2f} |")
        else:
            print(f"| {label} | {value[0]:.2f} | {value[1]:.2f} |")


if __name__ == "__main__":
    main()
