"""Page state in the URL (`?run=digits&target=test:42&pca_tab=…`), so every view is a link and the back button
walks back through it. Widgets are set from the URL before they are drawn, and write it in their on_change
callbacks, which run before the next script run."""
from __future__ import annotations

import streamlit as st

from backend.store.run_dir import Run
from backend.store.targets import TargetError, target_column, target_name
from widgets.text import plain


def current_target(run: Run) -> int:
    """The margins column of the URL's `target` (default: the first test image, else train:0)."""
    default = target_name(run.n_train if run.n_test else 0, run.n_train)
    name = st.query_params.get("target", default)
    try:
        column = target_column(name, run.n_train, run.n_test)
    except TargetError as exc:
        st.warning(f"{plain(exc)}; showing {default}")
        column = target_column(default, run.n_train, run.n_test)
    st.query_params["target"] = target_name(column, run.n_train)
    return column


def open_target(page: str, run: Run, name: str) -> None:
    """Ask the shell to show target `name` on another page (st.switch_page does nothing inside a callback).

    The other parameters of this view go along, as the sidebar links keep them: st.switch_page sends the new
    page's URL while the browser still shows this page, and the browser records that URL as one more entry of
    this page, the one the back button returns to. With this view's parameters it still shows this view."""
    st.session_state["open_request"] = (page, {**st.query_params.to_dict(), "run": run.name, "target": name})


def follow_open_request() -> None:
    """Go to the page an open_target callback asked for (current_run calls this before the page draws)."""
    request = st.session_state.pop("open_request", None)
    if request is not None:
        st.switch_page(request[0], query_params=request[1])


def url_int(param: str, key: str, options, default: int) -> dict:
    """Keep widget `key` (an int choice among `options`) in the URL's `param`, so a link or the back button
    restores it: the widget is set from the URL before it is drawn. Returns the widget's on_change kwargs.
    A URL without `param` keeps it out while the choice is the default (see url_choice)."""
    try:
        wanted = int(st.query_params.get(param, default))
    except ValueError:
        wanted = default
    st.session_state[key] = wanted if wanted in options else default
    if param in st.query_params or st.session_state[key] != default:
        st.query_params[param] = str(st.session_state[key])
    return {"on_change": _widget_to_url, "args": (param, key)}


def url_choice(param: str, key: str, options: list[str], default: str) -> dict:
    """url_int for a text choice among `options`: a URL value not among them falls back to `default` with a warning.

    A URL without `param` keeps it out while the choice is the default: a new parameter is a new entry in the
    browser's history, so writing it as the page opens would make the back button return to this page first."""
    wanted = st.query_params.get(param, default)
    if wanted not in options:
        st.warning(f"{param} {plain(wanted)} is not one of {', '.join(options)}; showing {default}")
        wanted = default
    st.session_state[key] = wanted
    if param in st.query_params or wanted != default:
        st.query_params[param] = wanted
    return {"on_change": _widget_to_url, "args": (param, key)}


def _widget_to_url(param: str, key: str) -> None:
    st.query_params[param] = str(st.session_state[key])


def set_target(name: str) -> None:
    """Make `name` ('train:i' / 'test:j') the target: a new URL, so one more step for the back button."""
    st.query_params["target"] = name


def lazy_tabs(labels: list[str], key: str) -> list:
    """st.tabs of which only the open one runs: the open tab's label is the URL's `key` (absent for the first
    tab; a link or the back button reopens it), and each tab's `.open` says whether to draw it. (Plain st.tabs
    run every tab.)

    Not bind="query-params": st.switch_page cannot carry a bound parameter, so the entry it leaves in the
    browser's history (open_target) would reopen the first tab. The URL's label is the tabs' default instead,
    which is part of their element id: a new label, from a click or the back button, draws new tabs open on it.
    A label that is not one of them opens the first tab and leaves the URL, without a warning (as bound tabs
    do): it is mostly a stale one, such as Clusters' `Cluster 7` kept in the URL after a change of class."""
    wanted = st.query_params.get(key, labels[0])
    if wanted not in labels:
        st.query_params.pop(key)
        wanted = labels[0]
    return st.tabs(labels, default=wanted, key=key, on_change=_tab_to_url, args=(key, labels[0]))


def _tab_to_url(key: str, first: str) -> None:
    if st.session_state[key] == first:
        st.query_params.pop(key, None)
    else:
        st.query_params[key] = st.session_state[key]
