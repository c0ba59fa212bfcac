"""Choosing a target: by index, by class, from the Mistakes, Hardest and Most unstable lists, or at random."""
from __future__ import annotations

import numpy as np
import streamlit as st

from backend.datamodels.queries import class_members
from backend.store.run_dir import Run
from backend.store.targets import target_name
from backend.training import target_stats
from widgets.image_grid import image_grid
from widgets.run_context import margin_summary, no_predictions_note, split_range
from widgets.url_state import lazy_tabs, set_target


def _pick_by_index(run: Run) -> None:
    split = st.session_state["pick_split"]
    start, stop = split_range(run, split)
    index = min(int(st.session_state["pick_index"]), stop - start - 1)
    set_target(f"{split}:{index}")


def _pick_member(key: str) -> None:
    name = st.session_state[key]
    if name is not None:
        set_target(name)


def _pick_random(run: Run, split: str) -> None:
    start, stop = split_range(run, split)
    set_target(f"{split}:{np.random.default_rng().integers(stop - start)}")


def hard_targets(run: Run, start: int, stop: int, k: int, key: str, page: str | None = None) -> None:
    """Tabs of the targets in [start, stop) the models get wrong: Mistakes (majority prediction is not the
    label), Hardest (lowest mean margin: consistently wrong) and Most unstable (accuracy nearest 50 %).
    Only the open tab is computed; its label is the URL's `<key>_list`."""
    mean_margin, accuracy = margin_summary(run)
    mistakes, hardest, unstable = lazy_tabs(["Mistakes", "Hardest", "Most unstable"], key=f"{key}_list")
    if mistakes.open:
        with mistakes:
            counts = target_stats.stored_prediction_counts(run)
            if counts is None:
                no_predictions_note(run)
            else:
                columns = target_stats.mistaken_targets(counts, run.labels, start, stop, k)
                st.caption("Misclassified by the majority of models, the most confidently wrong first")
                image_grid(run, columns, [f"acc {accuracy[c]:.0%}" for c in columns], key=f"{key}-mistakes", page=page)
    if hardest.open:
        with hardest:
            st.caption("Lowest margin averaged over the run's models: consistently wrong")
            columns = target_stats.lowest_targets(mean_margin, start, stop, k)
            image_grid(run, columns, [f"mean margin {mean_margin[c]:+.2f}" for c in columns], key=f"{key}-hardest",
                       page=page)
    if unstable.open:
        with unstable:
            st.caption("Accuracy over models nearest 50 %: the models disagree")
            columns = target_stats.unstable_targets(accuracy, start, stop, k)
            image_grid(run, columns, [f"acc {accuracy[c]:.0%}" for c in columns], key=f"{key}-unstable", page=page)


def target_picker(run: Run, column: int, n_listed: int = 12) -> None:
    """Choose a target by index, by class, from the Mistakes, Hardest and Most unstable lists, or at random
    (only the open way is drawn; it is the URL's `pick`)."""
    splits = [s for s in ("test", "train") if split_range(run, s)[1] > split_range(run, s)[0]]
    by_index, by_class, wrong, random = lazy_tabs(["By index", "By class", "Mistakes · Hardest · Most unstable",
                                                   "Random"], key="pick")
    if by_index.open:
        with by_index:
            split, index = target_name(column, run.n_train).split(":")
            st.session_state["pick_split"], st.session_state["pick_index"] = split, int(index)
            left, right = st.columns([1, 2])
            left.radio("Split", splits, key="pick_split", horizontal=True, on_change=_pick_by_index, args=(run,))
            start, stop = split_range(run, st.session_state["pick_split"])
            right.number_input("Index", min_value=0, max_value=stop - start - 1, step=1, key="pick_index",
                               on_change=_pick_by_index, args=(run,))
    if by_class.open:
        with by_class:
            left, middle, right = st.columns([1, 1, 2])
            split = left.radio("Split", splits, key="class_split", horizontal=True)
            label = middle.selectbox("Class", range(len(run.class_names)), format_func=lambda c: run.class_names[c],
                                     key="class_label")
            start, stop = split_range(run, split)
            names = [target_name(c, run.n_train) for c in class_members(run.labels, start, stop, label)]
            right.selectbox(f"{len(names)} images of class {run.class_names[label]}", names, index=None,
                            placeholder="Pick an image", key="class_member", on_change=_pick_member,
                            args=("class_member",))
    if wrong.open:
        with wrong:
            split = st.radio("Split", splits, key="hard_split", horizontal=True)
            hard_targets(run, *split_range(run, split), n_listed, key="pick")
    if random.open:
        with random:
            for split in splits:
                st.button(f"Random {split} image", key=f"random-{split}", on_click=_pick_random, args=(run, split))
