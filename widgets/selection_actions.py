"""Tag or export a selection of targets: any page's (a grid page, a filtered view, the basket, a lasso), by one widget;
and filter a page's targets by a tag (tag_filter, `?tag=` in the URL on every page).

Tags live in the annotation database (backend.leakage.annotations: reviewers and admins tag, viewers read); the
export is backend.target_table's records of the selection, as CSV or JSON, built only when its button is clicked.
"""
from __future__ import annotations

import hashlib

import numpy as np
import streamlit as st

from backend import target_table
from backend.access.names import TagNameError, validate_tag
from backend.leakage.annotations import AnnotationStoreError, shared_store
from backend.store.run_dir import Run
from backend.store.targets import target_name
from widgets import access, text


def _read_tags(run: Run) -> dict[str, np.ndarray]:
    return {tag: np.asarray(columns, dtype=np.int64) for tag, columns in shared_store().tags(run.name).items()}


def stored_tags(run: Run) -> dict[str, np.ndarray] | None:
    """{tag: its targets' margins columns} of `run`, or None after one st.error when the database is unreachable."""
    try:
        return _read_tags(run)
    except AnnotationStoreError as exc:
        st.error(text.hide_paths(exc))
        return None


def tag_filter(run: Run, key: str) -> tuple[str | None, np.ndarray | None]:
    """A "Tagged" choice among the run's stored tags ("any" first), kept in the URL as `?tag=` (the Dataset page's
    parameter, so a link keeps the filter from page to page): (the tag, its targets' margins columns, ascending), or
    (None, None) for any target. Drawn only once the run has a tag (or the URL names one); an unreachable database is
    a caption here, not an error: the page works without its filter."""
    wanted = st.query_params.get("tag") or None
    try:
        tags = _read_tags(run)
    except AnnotationStoreError as exc:
        st.caption(f"No tag filter: {text.hide_paths(exc)}")
        return None, None
    if not tags and wanted is None:
        return None, None
    st.session_state[key] = wanted
    tag = st.selectbox("Tagged", [None, *sorted(set(tags) | {wanted} - {None})], key=key, on_change=_tag_to_url,
                       args=(key,), format_func=lambda t: "any" if t is None else t,
                       help="Show only the targets with this tag (reviewers tag them on the Dataset page)")
    if tag is None:
        return None, None
    if tag not in tags:
        st.info(f"No target of this run is tagged {text.plain(tag)} yet.")
    return tag, np.sort(tags.get(tag, np.empty(0, dtype=np.int64)))


def _tag_to_url(key: str) -> None:
    if st.session_state[key] is None:
        st.query_params.pop("tag", None)
    else:
        st.query_params["tag"] = st.session_state[key]


def _change_tag(run_name: str, key: str, add: bool, columns: np.ndarray) -> None:
    """Add or remove the typed tag on `columns` (a button's callback); the outcome is shown on the next run."""
    user = access.current_user()
    if not user.can("tag"):
        return
    try:
        tag = validate_tag(st.session_state.get(f"{key}_tag_name", "").strip())
        store = shared_store()
        done = (store.add_tag if add else store.remove_tag)(run_name, tag, columns, user.name)
    except TagNameError as exc:  # it quotes what the user typed
        st.session_state[f"{key}_tag_result"] = ("error", text.plain(exc))
        return
    except AnnotationStoreError as exc:
        st.session_state[f"{key}_tag_result"] = ("error", text.hide_paths(exc))
        return
    st.session_state[f"{key}_tag_result"] = ("success", f"{'Tagged' if add else 'Untagged'} {done:,} "
                                             f"target{'s' * (done != 1)} {'with' if add else 'of'} {tag}")


def tag_and_export(run: Run, table: target_table.TargetTable, choices: dict[str, np.ndarray],
                   tags: dict[str, np.ndarray] | None, key: str) -> None:
    """A choice among `choices` ({label: margins columns}, the first the default), a tag name with Add and Remove (reviewers and admins;
    disabled for viewers and without the database), and CSV and JSON downloads of the chosen targets' records."""
    user = access.current_user()
    # Keyed by the choices: a new lasso or view opens on the first choice instead of keeping an old pick.
    digest = hashlib.sha1("|".join(choices).encode()).hexdigest()[:10]
    picked = st.radio("Selection", list(choices), horizontal=True, key=f"{key}_selection-{digest}")
    selection = choices[picked]
    tag_col, add_col, remove_col = st.columns([3, 1, 1], vertical_alignment="bottom")
    may_tag = user.can("tag") and tags is not None
    tag_col.text_input("Tag name", key=f"{key}_tag_name", max_chars=63, placeholder="e.g. mislabelled",
                       disabled=not may_tag)
    for col, add, label in ((add_col, True, "Add tag"), (remove_col, False, "Remove tag")):
        col.button(label, key=f"{key}_{'add' if add else 'remove'}_tag", on_click=_change_tag,
                   args=(run.name, key, add, selection), disabled=not may_tag)
    if not user.can("tag"):
        st.caption(f"Tagging needs the reviewer or admin role; you are {text.plain(user.name)} ({user.role}). "
                   "Tags are a filter for everyone.")
    if f"{key}_tag_result" in st.session_state:
        kind, message = st.session_state.pop(f"{key}_tag_result")
        (st.success if kind == "success" else st.error)(message)

    def export(kind: str) -> str:
        by_column: dict[int, list[str]] = {}
        for tag, columns in (tags or {}).items():
            for c in columns.tolist():
                by_column.setdefault(c, []).append(tag)
        records = target_table.records(table, selection, by_column)
        return target_table.to_csv(records) if kind == "csv" else target_table.to_json(records, run.name)

    csv_col, json_col, _ = st.columns([1, 1, 3])
    stem = f"{run.name}-{key}-selection"
    csv_col.download_button("Export CSV", data=lambda: export("csv"), file_name=f"{stem}.csv", mime="text/csv",
                            key=f"{key}_csv", on_click="ignore")
    json_col.download_button("Export JSON", data=lambda: export("json"), file_name=f"{stem}.json",
                             mime="application/json", key=f"{key}_json", on_click="ignore")
    st.caption("Fields: " + ", ".join(["target", "split", *table.fields, "tags"]) + " · first: "
               + (target_name(int(selection[0]), run.n_train) if len(selection) else "none"))
