"""Text a page shows: user input quoted so it cannot render, server paths hidden, errors as one st.error, missing
numbers as "—"."""
from __future__ import annotations

import functools
import re
from collections.abc import Callable

import numpy as np
import streamlit as st

from backend.store import catalog
from backend.store.errors import RunError
from backend.store.targets import TargetError


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


def number(value: float | None, spec: str = ".3f") -> str:
    """A statistic as text, "—" where there is none (None or NaN: a split without fitted targets, a method without
    self-scores)."""
    return "—" if value is None or not np.isfinite(value) else format(value, spec)


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
