"""The run store's one error: RunError, and `broken`, which names a bad artifact and the command that rebuilds it."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

from backend.store.schema import Artifact

# What numpy and json raise on a file that is not what its name says: truncated, garbage, a foreign format.
# RecursionError: JSON nested deeper than the parser's stack.
UNREADABLE = (ValueError, OSError, EOFError, SyntaxError, UnicodeDecodeError, zipfile.BadZipFile, RecursionError)


class RunError(ValueError):
    """A run directory that is missing, foreign, corrupt or incompatible with the request."""


def broken(run_dir: Path, artifact: Artifact, path: Path, problem: str) -> RunError:
    """The one error of a missing or broken artifact: the file, what is wrong, and the command that rebuilds it."""
    remedy = "rebuild it with" if problem == "is missing" else artifact.remedy
    return RunError(f"{path} {problem}: {remedy} `{artifact.command(run_dir)}`")


def shown(value) -> str:
    """A JSON value as an error message quotes it: at most 80 characters."""
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."
