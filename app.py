"""Datamodels explorer: `streamlit run app.py`.

The shell around every page: the page list, the sidebar (page links and run picker) and the one place
where a broken run becomes an error message instead of a traceback. Pages are files in pages/, so each
has its own URL (`/neighbours?run=digits&target=test:42`) and can be tested alone.

This file is read twice. Each browser session's script run executes it as `__main__` and draws the shell.
`streamlit run` first imports it as a module to find `app`, an st.App whose start-up imports everything the
pages import, so that the first visitor after a restart does not wait about a second for pandas, plotly and
the backend to load (the server answers its health check only after that).
"""
import ast
import importlib
import importlib.util
from contextlib import asynccontextmanager
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent
FAVICON = ROOT / "assets" / "favicon.png"
# The one list of pages (file, title, icon): to add a page, put its file in pages/ and add a line here.
PAGES = [
    ("pages/overview.py", "Overview", ":material/dashboard:"),
    ("pages/dataset.py", "Dataset", ":material/grid_view:"),
    ("pages/neighbours.py", "Neighbours", ":material/hub:"),
    ("pages/quality.py", "Quality", ":material/rule:"),
    ("pages/methods.py", "Methods", ":material/leaderboard:"),
    ("pages/pca.py", "PCA", ":material/scatter_plot:"),
    ("pages/clusters.py", "Clusters", ":material/bubble_chart:"),
    ("pages/embeddings_map.py", "Embeddings map", ":material/map:"),
    ("pages/counterfactuals.py", "Counterfactuals", ":material/science:"),
    ("pages/review.py", "Review leaks", ":material/fact_check:"),
    ("pages/leakage_results.py", "Leakage results", ":material/content_copy:"),
]


def import_page_modules() -> None:
    """Import every module the pages import at their top level. The imports are read from the pages' source:
    a page is a script, not a module, so importing it would draw it."""
    for file, _, _ in PAGES:
        for node in ast.parse((ROOT / file).read_text()).body:
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
                package = importlib.import_module(node.module)
                if hasattr(package, "__path__"):  # `from widgets import text`: the names may be modules
                    names += [f"{node.module}.{alias.name}" for alias in node.names
                              if importlib.util.find_spec(f"{node.module}.{alias.name}") is not None]
            else:
                continue
            for name in names:
                importlib.import_module(name)


@asynccontextmanager
async def preload(_app):
    """Import the pages' modules before the server takes its first request."""
    import_page_modules()
    yield


def shell() -> None:
    # Imported here, not above: the module import that finds `app` runs before Streamlit's runtime exists,
    # and the pages' st.cache_data functions would warn of a missing runtime if they were imported then.
    from backend.store.catalog import data_dir
    from backend.store.errors import RunError
    from backend.store.targets import TargetError
    from widgets import access, run_context, text

    pages = [st.Page(file, title=title, icon=icon, default=i == 0) for i, (file, title, icon) in enumerate(PAGES)]
    # A file in the repo: an emoji or material icon would be fetched from the internet for the favicon.
    st.set_page_config(page_title="Datamodels explorer", page_icon=str(FAVICON), layout="wide")
    # The menu is drawn below as page links, so that moving between pages keeps the run and target in the URL.
    page = st.navigation(pages, position="hidden")
    access.current_user()  # refuses and stops when the server needs a login it does not have
    links = st.sidebar.container()
    run_name = run_context.run_picker(data_dir())
    if run_name is not None:
        keep = st.query_params.to_dict()  # every parameter of the current view: a page ignores the others' ones
        for entry in pages:
            links.page_link(entry, query_params=keep)
        try:
            page.run()
        except (RunError, TargetError) as exc:
            text.show_error(exc)


if __name__ == "__main__":
    shell()
else:
    app = st.App(__file__, lifespan=preload)
