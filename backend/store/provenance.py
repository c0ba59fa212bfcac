"""What reproduces a result, as the run records it: the code's git commit and the packages' versions."""
from __future__ import annotations

import platform
import subprocess
from pathlib import Path

CODE_DIR = Path(__file__).resolve().parents[2]


def code_version() -> dict:
    """The git commit of this checkout (and whether it had uncommitted changes), for the manifest."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=CODE_DIR, capture_output=True, text=True, timeout=10).stdout.strip()
    try:
        return {"git_commit": git("rev-parse", "HEAD") or "unknown", "git_dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": "unknown", "git_dirty": None}


def package_versions() -> dict:
    """The versions of Python and of the packages a run's numbers depend on."""
    import numpy as np
    import sklearn
    import torch
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "scikit-learn": sklearn.__version__}
