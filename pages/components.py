"""UI pieces every page shares: the run picker, the target in the URL, the target picker, the image grid.

Not a page: app.PAGES does not list it. Page state lives in the URL (`?run=digits&target=test:42`), so
every view is a link and the browser's back button walks back through targets. Widgets that show the
target are set from the URL before they are drawn, and write the URL in their on_change callbacks,
which run before the next script run.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import io
import os
import re
from collections.abc import Callable, Collection
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import PIL.Image
import plotly.graph_objects as go
import streamlit as st
from streamlit.runtime.pages_manager import PagesManager

from backend.access import auth
from backend.access.budget import BudgetError, budget_from_env, server_budget
from backend.store import catalog

from backend.training import target_stats

from backend.datasets import thumbnails
from backend.store.rows import read_row
from backend.datamodels.queries import class_members, fitted_targets
from backend.store.run_dir import Run, RunError
from backend.store.schema import BIAS, LAM, MANIFEST, TARGET_PREDICTIONS, WEIGHTS
from backend.store.targets import TargetError, describe_targets, target_column, target_name

THUMB = 96
CAPTION_PX = 52  # three 11-px caption lines under each thumbnail
MARK_RGB = (198, 40, 40)  # the frame of a marked image (in the Counterfactuals basket)
SHELL_RAN = "shell_ran"
CREATE_RUN = ["make run", "python -m precompute all --dataset digits --out data/runs/digits"]


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


def plain(text: object) -> str:
    """User-supplied text (a URL parameter, a name) as a Markdown code span, for st.error/st.warning, which
    render Markdown: nothing inside one renders, neither links and images nor the URLs GitHub-flavoured
    Markdown links by itself (which survive backslash escapes), nor Streamlit's :directives: and $math$.
    The fence is longer than any run of backticks in the text, so the text cannot close it."""
    text = " ".join(str(text).splitlines())
    if not text.strip():
        return ""
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text[0] == "`" or text[-1] == "`" else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def hide_paths(text: object) -> str:
    """A message or command with the server's data directory written as `data` (the default, relative to
    the checkout) or `$DATAMODELS_DATA_DIR`: pages never show where the server keeps its files."""
    root = catalog.data_dir()
    shown = "data" if root.resolve() == catalog.DEFAULT_DATA_DIR.resolve() else f"${catalog.DATA_DIR_ENV}"
    text = str(text)
    for form in sorted({str(root.resolve()), str(root.absolute())}, key=len, reverse=True):
        text = text.replace(form, shown)
    return text


def show_error(exc: Exception) -> None:
    """One st.error of the shell's RunError or TargetError, without server paths; a TargetError quotes what the
    user wrote, so it is shown as plain text (a RunError is the server's own text, its commands as code)."""
    st.error(plain(exc) if isinstance(exc, TargetError) else hide_paths(exc))


def fragment(func: Callable) -> Callable:
    """st.fragment whose RunError or TargetError is one st.error, as a page's own are (app.py): Streamlit
    catches what a fragment raises itself, and would show it with its traceback."""
    @functools.wraps(func)
    def guarded(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (RunError, TargetError) as exc:
            show_error(exc)
    return st.fragment(guarded)


def current_user() -> auth.User:
    """The user of this request under DATAMODELS_AUTH, or one st.error (and a login button for OIDC) and stop.

    A server on a loopback address without auth has one user, `local`, an admin. Anywhere else every page
    refuses until auth is configured; app.py and current_run call this before anything is drawn.
    """
    mode = auth.AuthMode("off")
    try:
        mode = auth.parse_auth(os.environ.get(auth.AUTH_ENV))
        roles = auth.load_roles(os.environ)
        return auth.request_user(mode, st.get_option("server.address"), roles,
                                 headers=_header_lines() if mode.kind == "header" else None,
                                 oidc_user=st.user.to_dict() if mode.kind == "oidc" else None)
    except (auth.AuthConfigError, auth.AccessDenied) as exc:
        st.error(str(exc))
        if mode.kind == "oidc" and isinstance(exc, auth.AccessDenied):
            st.button("Log in", key="login", on_click=st.login, type="primary")
        st.stop()


def _header_lines() -> list[tuple[str, str]]:
    """The request's header lines, a repeated header once per line (st.context.headers keeps the first alone)."""
    headers = st.context.headers
    return [(key, value) for key in headers for value in headers.get_all(key)]


def can_retrain() -> bool:
    return current_user().can("retrain")


@contextmanager
def retraining_job(run: Run, n_models: int):
    """Run the body as the server's one retraining job of at most n_models, charged to run's budget.

    Only users who may retrain (admins; the local user) get here; anyone else, or a click over the
    budget, gets one st.error and the page stops. A click while another job runs waits its turn, showing
    its place in the queue. Yields the budget's Job: set its `trained` to the models really trained.
    """
    user = current_user()
    if not user.can("retrain"):
        st.error(f"Retraining needs the admin role; you are {plain(user.name)} ({user.role}). "
                 "Ask an admin, or retrain with the command line.")
        st.stop()
    queued = st.empty()

    def show_place(ahead: int, holder: str | None) -> None:
        queued.info(f"Queued: {ahead} retraining job{'s' if ahead != 1 else ''} ahead of yours"
                    + (f" ({plain(holder)} is retraining)" if holder else "") + "; it starts when they finish.")
    try:
        budget = server_budget(budget_from_env(os.environ))
        with budget.job(run.dir.resolve(), n_models, user.name, on_wait=show_place) as job:
            queued.empty()
            yield job
    except BudgetError as exc:
        st.error(str(exc))
        st.stop()


def current_run() -> Run:
    """The run named by the URL's `run` (the sidebar picker keeps it there); every page calls this first.

    Streamlit runs a page file alone, without app.py, in its old pages/-folder mode, which it keeps until
    some session has executed st.navigation. On a fresh server whose first request is a page link that
    would leave the page without its shell, so that mode is switched off and the script rerun. (AppTest
    reruns a page alone too, after a first run through app.py; the URL carries what the page needs.)
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
                f"fitted targets. `python -m precompute fit --run {hide_paths(run.dir)}` with the first fit's settings "
                "fits them and keeps the others.")


def require_fitted(run: Run, lam: np.ndarray, column: int) -> None:
    """Stop the page with an st.info when target `column` has no datamodel, naming the command that fits it."""
    if not fitted_targets(lam[column:column + 1])[0]:
        name = target_name(column, run.n_train)
        st.info(f"{name} has no datamodel yet: the run's fit left it out (`fit --targets`). Fit it with "
                f"`python -m precompute fit --run {hide_paths(run.dir)} --targets {name}` (the first fit's settings "
                "keep the fitted targets as they are).")
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


def split_range(run: Run, split: str) -> tuple[int, int]:
    """Column range [start, stop) of the 'train' or 'test' targets."""
    return (0, run.n_train) if split == "train" else (run.n_train, run.n_targets)


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


def clamped_int(container, label: str, low: int, high: int, value: int, key: str, **kw) -> int:
    """A whole-number input that takes any number and clamps it into [low, high], saying so.

    st.number_input with min/max shows an out-of-range entry in red but never sends it, so the page would
    go on silently with the previous value; here the entry is accepted, and the clamp is explained.
    """
    entered = int(container.number_input(label, value=value, step=1, key=key, **kw))
    used = min(max(entered, low), high)
    if used != entered:
        container.warning(f"{label}: {entered:,} is outside {low:,}–{high:,}, so {used:,} is used")
    return used


def selected_customdata(selection) -> list[int]:
    """The first customdata value of every point of a plotly selection (an st.plotly_chart event or its state).

    The browser sends a point's customdata as a number, a list, or, for a row of a numpy array (which plotly
    ships as a typed array), an object {"0": value}; AppTest sends whatever the test wrote. All read the same.
    """
    points = selection["selection"]["points"] if selection else []
    values = []
    for point in points:
        data = point.get("customdata")
        if isinstance(data, dict):
            data = data.get("0")
        elif isinstance(data, (list, tuple)):
            data = data[0] if data else None
        if data is not None:
            values.append(int(data))
    return values


def label_of(run: Run, column: int) -> str:
    return run.class_names[int(run.labels[column])]


def _png_uri(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    PIL.Image.fromarray(image).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _tile(run: Run, column: int) -> np.ndarray:
    """The thumbnail of a target as (THUMB', THUMB', 3) uint8 (grey images as RGB), at most THUMB px square."""
    image = thumbnails.upscale(read_row(run.images, column), THUMB)
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image


def image_grid(run: Run, columns: np.ndarray, captions: list[str], key: str, n_cols: int = 6,
               page: str | None = None, on_pick: Callable[[int], None] | None = None,
               marked: Collection[int] = ()) -> None:
    """Thumbnails captioned with their fields; clicking an image makes it the target, on `page` if given, or,
    with `on_pick`, calls on_pick(column) instead (the Counterfactuals basket). Images in `marked` are framed.

    One plotly figure per grid: the thumbnails as one image, and an invisible point at the centre of every
    cell whose customdata is the image's margins column. Hovering anywhere in a cell names the nearest point
    (hoverdistance -1), so a click on an image or its caption selects it (selection_mode "points"), and the
    selection event opens it. (One st.image and st.button per tile drew 2 elements a tile and made the small
    name button, not the image, the thing to click.) The widget key holds the grid's images and the current
    target, so a selection never outlives the view it was made in (nor the marks it was made on).
    """
    if len(columns) == 0:
        st.caption("none")
        return
    columns, marked = [int(c) for c in columns], {int(c) for c in marked}
    lines = [[target_name(c, run.n_train), " · ".join(f for f in (f"label {label_of(run, c)}", predicted_text(run, c)) if f),
              caption] for c, caption in zip(columns, captions)]
    tiles = [_tile(run, c) for c in columns]
    side = max(max(t.shape[:2]) for t in tiles)
    width = max(side + 8, 7 * max(len(line) for tile in lines for line in tile))  # ~7 px a character at 11 px
    height = side + CAPTION_PX
    n_cols = min(n_cols, len(columns))
    n_rows = -(-len(columns) // n_cols)
    montage = np.full((n_rows * height, n_cols * width, 3), 255, np.uint8)
    x, y, caption_y = [], [], []
    for i, tile in enumerate(tiles):
        row, col = divmod(i, n_cols)
        top, left = row * height + (side - tile.shape[0]) // 2, col * width + (width - tile.shape[1]) // 2
        if columns[i] in marked:
            montage[max(0, top - 3):top + tile.shape[0] + 3, max(0, left - 3):left + tile.shape[1] + 3] = MARK_RGB
        montage[top:top + tile.shape[0], left:left + tile.shape[1]] = tile
        x.append(col * width + width / 2)
        y.append(row * height + height / 2)
        caption_y.append(row * height + side + 2)
    text = ["<br>".join(tile) for tile in lines]
    action = "click to add or remove" if on_pick is not None else f"click to open on {Path(page or 'this page').stem}"
    figure = go.Figure([
        go.Image(source=_png_uri(montage), hoverinfo="skip"),
        go.Scatter(x=x, y=y, customdata=columns, mode="markers", text=text, marker=dict(size=2, opacity=0),
                   selected=dict(marker=dict(opacity=0)), unselected=dict(marker=dict(opacity=0)),
                   hovertemplate=f"%{{text}}<br><i>{action}</i><extra></extra>"),
        go.Scatter(x=x, y=caption_y, mode="text",
                   text=text, textposition="bottom center", textfont=dict(size=11), hoverinfo="skip"),
    ])
    figure.update_xaxes(visible=False, range=[-0.5, n_cols * width - 0.5], fixedrange=True)
    figure.update_yaxes(visible=False, range=[n_rows * height - 0.5, -0.5], fixedrange=True)
    figure.update_layout(width=n_cols * width, height=n_rows * height, margin=dict(l=0, r=0, t=0, b=0),
                         showlegend=False, dragmode=False, hovermode="closest", hoverdistance=-1,
                         plot_bgcolor="white", paper_bgcolor="white",
                         hoverlabel=dict(bgcolor="white", font=dict(color="black", size=12)))
    shown = (columns, sorted(marked.intersection(columns)), st.query_params.get("target"))
    digest = hashlib.sha1(repr(shown).encode()).hexdigest()[:10]
    event = st.plotly_chart(figure, key=f"{key}-{digest}", on_select="rerun", selection_mode="points",
                            width="content", theme=None, config={"displayModeBar": False})
    clicked = selected_customdata(event)
    if not clicked:
        return
    name = target_name(clicked[0], run.n_train)
    if on_pick is not None:
        on_pick(clicked[0])
    elif page is not None:
        open_target(page, run, name)
    elif name != st.query_params.get("target"):  # (the target itself clicked: nothing to open)
        set_target(name)
    else:
        return
    st.rerun()
