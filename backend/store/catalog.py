"""Where runs live: the data directory and the runs it holds, as the dashboard lists them."""
from __future__ import annotations

import os
from pathlib import Path

from backend.store.schema import MANIFEST

DATA_DIR_ENV = "DATAMODELS_DATA_DIR"
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "data"


def data_dir() -> Path:
    """$DATAMODELS_DATA_DIR if set (tests point it at fixture runs), else the checkout's data/."""
    return Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR)


def list_runs(root: Path) -> list[str]:
    """Names of the runs under root/runs/: the subdirectories holding a manifest.json, sorted."""
    runs = Path(root) / "runs"
    if not runs.is_dir():
        return []
    return sorted(p.name for p in runs.iterdir() if MANIFEST.path(p).is_file())
