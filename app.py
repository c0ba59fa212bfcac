"""Datamodels explorer: `streamlit run app.py`.

The shell around every page: the page list, the sidebar (page links and run picker) and the one place
where a broken run becomes an error message instead of a traceback. Pages are files in pages/, so each
has its own URL (`/neighbours?run=digits&target=test:42`) and can be tested alone.
"""
from pathlib import Path

import streamlit as st

from backend.store.catalog import data_dir
from backend.store.run_dir import RunError
from backend.store.targets import TargetError
from pages import components

FAVICON = Path(__file__).resolve().parent / "assets" / "favicon.png"
# The one list of pages: to add a page, put its file in pages/ and add a line here.
PAGES = [
    st.Page("pages/overview.py", title="Overview", icon=":material/dashboard:", default=True),
    st.Page("pages/neighbours.py", title="Neighbours", icon=":material/hub:"),
    st.Page("pages/quality.py", title="Quality", icon=":material/rule:"),
    st.Page("pages/methods.py", title="Methods", icon=":material/leaderboard:"),
    st.Page("pages/pca.py", title="PCA", icon=":material/scatter_plot:"),
    st.Page("pages/clusters.py", title="Clusters", icon=":material/bubble_chart:"),
    st.Page("pages/counterfactuals.py", title="Counterfactuals", icon=":material/science:"),
    st.Page("pages/review.py", title="Review leaks", icon=":material/fact_check:"),
    st.Page("pages/leakage_results.py", title="Leakage results", icon=":material/content_copy:"),
]

# A file in the repo: an emoji or material icon would be fetched from the internet for the favicon.
st.set_page_config(page_title="Datamodels explorer", page_icon=str(FAVICON), layout="wide")
# The menu is drawn below as page links, so that moving between pages keeps the run and target in the URL.
page = st.navigation(PAGES, position="hidden")
components.current_user()  # refuses and stops when the server needs a login it does not have
links = st.sidebar.container()
run_name = components.run_picker(data_dir())
if run_name is not None:
    keep = st.query_params.to_dict()  # every parameter of the current view: a page ignores the others' ones
    for entry in PAGES:
        links.page_link(entry, query_params=keep)
    try:
        page.run()
    except (RunError, TargetError) as exc:
        components.show_error(exc)
