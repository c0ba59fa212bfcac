"""Dataset: every target (train and test) as a paginated thumbnail grid, filtered and sorted by its stored fields.

The view (split, label, majority prediction, correct or not, cluster, tag, a range on one numeric field, the sort,
the page) lives in the URL (`?split=test&correct=no&sort=lds&page=2`), read by backend.target_table.parse_view, which
warns of and drops a bad value. Clicking an image opens it on Neighbours. Any selection (this page, the whole view,
the Counterfactuals basket) can be tagged, by reviewers and admins, in the annotation database, and exported as
CSV or JSON with the run's fields; tags are a filter here.
"""
import numpy as np
import streamlit as st

from backend import target_table
from backend.api import RunAPI
from widgets import image_grid, run_context, selection_actions, text

NEIGHBOURS = "pages/neighbours.py"
VIEW_PARAMS = ("split", "label", "pred", "correct", "cluster", "tag", "range", "sort", "desc", "page")
SHORT = {"margin": "margin", "accuracy": "acc", "lds": "LDS", "leak": "leak", "share": "share"}
GRID_PX = 950  # the grid's width at a 1280-px window beside the sidebar


run = run_context.current_run()
api = RunAPI(run)
table = run_context.target_table(run)
names = table.class_names
st.title(f"Dataset · {run.name}")
stored = selection_actions.stored_tags(run)
tags = stored or {}

view = target_table.parse_view(st.query_params.to_dict(), table)
for warning in view.warnings:
    st.warning(text.plain(warning))
if view.tag is not None and view.tag not in tags:
    st.info(f"No target of this run is tagged {text.plain(view.tag)} yet.")


def view_to_url() -> None:
    """Write the filter widgets' state as the URL's view (a new filter or sort starts at page 1)."""
    s = st.session_state
    # A new range field starts open: the old field's bounds mean nothing on it.
    low, high = (s.get("ds_low"), s.get("ds_high")) if s["ds_range"] == view.range_field else (None, None)
    changed = target_table.View(
        split=s["ds_split"], labels=tuple(s["ds_label"]), predictions=tuple(s.get("ds_pred", ())),
        correct=s.get("ds_correct", "all"), clusters=tuple(s.get("ds_cluster", ())), tag=s["ds_tag"],
        range_field=s["ds_range"], low=low, high=high,
        sort=s["ds_sort"], descending=s["ds_desc"])
    for param in VIEW_PARAMS:
        st.query_params.pop(param, None)
    st.query_params.update(target_table.view_params(changed))


def page_to_url() -> None:
    if st.session_state["ds_page"] == 1:
        st.query_params.pop("page", None)
    else:
        st.query_params["page"] = str(st.session_state["ds_page"])


# The widgets are set from the URL's view before they are drawn, so a link or the back button restores them.
state = st.session_state
state.update(ds_split=view.split, ds_label=list(view.labels), ds_pred=list(view.predictions), ds_correct=view.correct,
             ds_cluster=list(view.clusters), ds_tag=view.tag,
             ds_range=view.range_field, ds_low=view.low, ds_high=view.high, ds_sort=view.sort, ds_desc=view.descending)
with st.sidebar:
    st.subheader("Filter and sort")
    st.radio("Split", target_table.SPLITS, horizontal=True, key="ds_split", on_change=view_to_url)
    st.multiselect("Label", range(len(names)), format_func=names.__getitem__, key="ds_label", on_change=view_to_url,
                   placeholder="any")
    if "prediction" in table.columns:
        st.multiselect("Majority prediction", range(len(names)), format_func=names.__getitem__, key="ds_pred",
                       on_change=view_to_url, placeholder="any")
        st.radio("Majority correct", target_table.CORRECT, horizontal=True, key="ds_correct", on_change=view_to_url)
    if table.clusters():
        st.multiselect("Cluster (test images)", table.clusters(), key="ds_cluster", on_change=view_to_url, placeholder="any")
    st.selectbox("Tag", [None, *sorted(set(tags) | {view.tag} - {None})], key="ds_tag", on_change=view_to_url, format_func=lambda t: t or "any",
                 placeholder="any")
    st.selectbox("Range on", [None, *table.numeric], key="ds_range", on_change=view_to_url,
                 format_func=lambda f: f or "none", placeholder="none", help="Keep the targets whose value lies in [low, high] "
                 "(a target without the value, e.g. a test image's self-score, is left out)")
    if view.range_field:
        low_col, high_col = st.columns(2)
        low_col.number_input("low", value=None, key="ds_low", on_change=view_to_url, format="%.4f")
        high_col.number_input("high", value=None, key="ds_high", on_change=view_to_url, format="%.4f")
    st.selectbox("Sort by", table.sorts, key="ds_sort", on_change=view_to_url)
    st.toggle("Descending", key="ds_desc", on_change=view_to_url)

tagged = tags.get(view.tag) if view.tag is not None else None
rows = target_table.select(table, view, tagged)
pages = target_table.n_pages(len(rows))
page = min(view.page, pages)
shown = target_table.page_of(rows, target_table.with_page(view, page))
state["ds_page"] = page
head, pager = st.columns([3, 1])
head.markdown(f"**{len(rows):,}** of {table.n_targets:,} targets · page {page} of {pages:,}")
pager.number_input("Page", min_value=1, max_value=pages, key="ds_page", on_change=page_to_url,
                   label_visibility="collapsed")

value_field = view.sort if view.sort in table.numeric else ("margin" if "margin" in table.columns else None)


def caption(column: int) -> str:
    if value_field is None:
        return ""
    value = float(table.columns[value_field][column])
    return f"{'self' if value_field.startswith('self:') else SHORT[value_field]} " + ("—" if np.isnan(value) else f"{value:+.3f}")


longest = image_grid.label_line_chars(names) if len(names) <= 50 else 40
n_cols = int(np.clip(GRID_PX // max(104, 6 * longest), 3, 8))
image_grid.image_grid(run, shown, [caption(c) for c in shown], key="dataset", n_cols=n_cols, page=NEIGHBOURS)

# Tag and export -------------------------------------------------------------------------------------------------
st.subheader("Tag or export a selection")
choices = {f"This page ({len(shown)})": shown, f"The whole view ({len(rows):,})": rows}
if st.query_params.get("basket"):
    try:
        basket = np.asarray(api.train_list(st.query_params["basket"]), dtype=np.int64)
        choices[f"The basket ({len(basket)})"] = basket
    except ValueError as exc:
        st.warning(f"basket {text.plain(exc)}")
selection_actions.tag_and_export(run, table, choices, stored, key="ds")
