"""The run a page shows: the URL's `run`, the sidebar run picker, one cached Run per run version, and what
every page reads of it (datamodels, margin summary, majority predictions, labels), each with the note that
names the command building what is missing."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import streamlit as st
from streamlit.runtime.pages_manager import PagesManager

from backend.api import RunAPI
from backend.datamodels.queries import fitted_targets
from backend.store import catalog
from backend.store.errors import RunError
from backend.store.run_dir import Run
from backend.store.schema import BIAS, CLI, LAM, MANIFEST, TARGET_PREDICTIONS, WEIGHTS
from backend.store.targets import describe_targets, target_name
from backend import target_table as table_of_targets
from backend.training import target_stats
from widgets.access import current_user
from widgets.text import hide_paths, plain
from widgets.url_state import follow_open_request

SHELL_RAN = "shell_ran"
CREATE_RUN = ["make run", f"{CLI} all --dataset digits --out data/runs/digits"]


class StreamlitProgress:
    """The app's adapter of backend.progress: one st.progress bar whose text counts the job's units."""

    def __init__(self, text: str):
        self.text, self.bar = text, st.progress(0.0, text=text)

    def __call__(self, done: float, total: float, unit: str) -> None:
        self.bar.progress(min(1.0, done / total) if total else 1.0, text=f"{self.text} {done:.0f} / {total:.0f} {unit}s")

    def finish(self, text: str) -> None:
        self.bar.progress(1.0, text=text)

    def empty(self) -> None:
        self.bar.empty()


@st.cache_resource(max_entries=8, show_spinner=False)
def open_run(path: str, stamp: int) -> Run:
    """One Run (and so one set of memmaps) per run directory and version of its contents.

    `stamp` is the directory's mtime: every stage adds files by atomic rename, which changes it, so a
    rerun stage gives a fresh Run instead of a memmap of a replaced file.
    """
    return Run(path)


def _stamp(path: Path) -> int:
    return os.stat(path).st_mtime_ns


def run_version(run: Run) -> int:
    """The run directory's version (its mtime: every stage adds files by atomic rename), for st.cache_data keys."""
    return _stamp(run.dir)


def current_run() -> Run:
    """The run named by the URL's `run` (the sidebar picker keeps it there); every page calls this first.

    Streamlit runs a page file alone, without app.py, in its old pages/-folder mode, which it keeps until
    some session has executed st.navigation. On a fresh server whose first request is a page link that
    would leave the page without its shell, so that mode is switched off and the script rerun. (The AppTests
    leave that mode as a server does, before any script runs: tests/conftest.py, pages_run_through_the_shell.)
    """
    if getattr(PagesManager, "uses_pages_directory", False) and SHELL_RAN not in st.session_state:
        PagesManager.uses_pages_directory = False
        st.rerun()
    current_user()
    follow_open_request()
    name = st.query_params.get("run", "")
    if Path(name).name != name or name in (".", "..") or "\0" in name:  # a folder of runs/, not a path
        raise RunError(f"run {plain(name)} is not a run name: pick a run in the sidebar")
    path = catalog.data_dir() / "runs" / name
    try:
        return open_run(str(path), _stamp(path) if path.exists() else 0)
    except (KeyError, TypeError) as exc:
        raise RunError(f"{MANIFEST.path(path)} is not a run manifest (no {exc}): recreate the run") from None


def _run_changed() -> None:
    st.query_params["run"] = st.session_state["run_picker"]
    for param in ("target", "basket"):  # (images of the run left)
        st.query_params.pop(param, None)


def run_picker(root: Path) -> str | None:
    """Sidebar select box of the runs under root/runs; the choice is the URL's `run`, else the last one.

    Returns the chosen run's name, or None (after explaining how to create one) when there is none.
    """
    names = catalog.list_runs(root)
    if not names:
        st.title("Datamodels explorer")
        st.info("No run found in the data directory's runs/ folder. Create the digits run with one of:")
        for command in CREATE_RUN:
            st.code(command, language="bash")
        return None
    wanted = st.query_params.get("run")
    if wanted is not None and wanted not in names:
        st.sidebar.warning(f"run {plain(repr(wanted))} is not in the data directory; showing another")
        wanted = None
    if wanted is not None:
        st.session_state["run_picker"] = wanted
    elif st.session_state.get("run_picker") not in names:
        st.session_state["run_picker"] = names[0]
    name = st.sidebar.selectbox("Run", names, key="run_picker", on_change=_run_changed)
    st.query_params["run"] = name
    st.session_state[SHELL_RAN] = True
    return name


def require_datamodels(run: Run) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(weights (n_targets, n_train), bias (n_targets,), lam (n_targets,)), memory-mapped.

    A run without them is a RunError naming the missing file and the command that writes it.
    """
    for artifact in (WEIGHTS, BIAS, LAM):
        if not run.has(artifact):
            raise RunError(f"run {run.name} has no datamodels yet ({artifact.path(run.dir)} is missing): "
                           f"fit them with `{artifact.command(run.dir)}`")
    return run.array(WEIGHTS), run.array(BIAS), run.array(LAM)


def unfitted_note(run: Run, lam: np.ndarray) -> None:
    """An st.info naming the targets `fit --targets` left without a datamodel, and the command that fits them."""
    missing = np.flatnonzero(~fitted_targets(lam))
    if len(missing):
        spec = describe_targets(missing, run.n_train, run.n_test)
        st.info(f"{len(missing):,} of the run's {run.n_targets:,} targets have no datamodel yet "
                f"({spec if len(spec) <= 80 else spec[:80].rsplit(',', 1)[0] + ', …'}); the numbers here are over the "
                f"fitted targets. `{CLI} fit --run {hide_paths(run.dir)}` with the first fit's settings "
                "fits them and keeps the others.")


def require_fitted(run: Run, column: int) -> None:
    """Stop the page with an st.info when target `column` has no datamodel: RunAPI.require_fitted's line, which names
    the command that fits it (the CLI's query verbs print the same)."""
    try:
        RunAPI(run).require_fitted([target_name(column, run.n_train)])
    except RunError as exc:
        st.info(hide_paths(str(exc)))
        st.stop()


@st.cache_data(max_entries=8, show_spinner="Summarising margins per target…")
def _computed_target_stats(path: str, stamp: int) -> tuple[np.ndarray, np.ndarray]:
    return target_stats.target_stats(open_run(path, stamp).margins)


def margin_summary(run: Run) -> tuple[np.ndarray, np.ndarray]:
    """(mean margin, accuracy) per target, shape (n_targets,): stored in the run, else computed once."""
    stored = target_stats.stored_target_stats(run)
    if stored is not None:
        return stored
    return _computed_target_stats(str(run.dir), _stamp(run.dir))


@st.cache_resource(max_entries=4, show_spinner=False)
def _target_table(path: str, stamp: int) -> table_of_targets.TargetTable:
    return table_of_targets.target_table(open_run(path, stamp))


def target_table(run: Run) -> table_of_targets.TargetTable:
    """Every target's stored fields (what RunAPI.table returns), one per run version, as open_run keys its Run."""
    return _target_table(str(run.dir), _stamp(run.dir))


def split_range(run: Run, split: str) -> tuple[int, int]:
    """Column range [start, stop) of the 'train' or 'test' targets."""
    return (0, run.n_train) if split == "train" else (run.n_train, run.n_targets)


def majority(run: Run) -> tuple[np.ndarray, np.ndarray] | None:
    """(majority predicted class, its share of models) per target, or None for a run without prediction counts."""
    counts = target_stats.stored_prediction_counts(run)
    return None if counts is None else _majority(str(run.dir), _stamp(run.dir))


@st.cache_data(max_entries=8, show_spinner=False)
def _majority(path: str, stamp: int) -> tuple[np.ndarray, np.ndarray]:
    return target_stats.majority_prediction(target_stats.stored_prediction_counts(open_run(path, stamp)))


def predicted_text(run: Run, column: int) -> str | None:
    """'pred 5 62%': the class most models predict for the target and the share of models that do."""
    found = majority(run)
    if found is None:
        return None
    cls, share = found
    return f"pred {run.class_names[int(cls[column])]} {share[column]:.0%}"


def no_predictions_note(run: Run) -> None:
    st.info(f"Run {run.name} has no prediction counts ({TARGET_PREDICTIONS.name}): its models were trained before "
            f"they were stored. A new run has them: `{TARGET_PREDICTIONS.command(run.dir)}`")


def label_of(run: Run, column: int) -> str:
    return run.class_names[int(run.labels[column])]
