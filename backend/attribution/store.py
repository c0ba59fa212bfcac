"""Reading stored attribution scores: which methods a run holds, their scores, self-scores and meta.json."""
from __future__ import annotations

import numpy as np

from backend.store.artifacts import read_array, read_json
from backend.store.run_dir import Run
from backend.store.schema import ATTRIBUTION_META, ATTRIBUTION_SCORES, ATTRIBUTION_SELF_SCORES


def available(run: Run) -> list[str]:
    """The methods with stored scores, by name (a method's meta.json is written with its scores)."""
    return [ATTRIBUTION_META.fields_of(path, run.dir)["method"] for path in ATTRIBUTION_META.glob(run.dir)]


def read_scores(run: Run, method: str) -> np.ndarray:
    """float32 [n_test, n_train], memory-mapped."""
    return read_array(run.dir, ATTRIBUTION_SCORES, run.sizes, method=method)


def read_self_scores(run: Run, method: str) -> np.ndarray | None:
    """float32 [n_train], higher = likelier mislabelled; None for scores stored before `attribute` wrote them."""
    if not run.has(ATTRIBUTION_SELF_SCORES, method=method):
        return None
    return read_array(run.dir, ATTRIBUTION_SELF_SCORES, run.sizes, method=method)


def read_meta(run: Run, method: str) -> dict:
    return read_json(run.dir, ATTRIBUTION_META, method=method)
