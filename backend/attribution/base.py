"""The method interface and the registry of methods by CLI name."""
from __future__ import annotations

from typing import Callable, Protocol

import numpy as np

from backend.progress import Progress
from backend.store.run_dir import Run


class Method(Protocol):
    name: str
    config: dict  # every setting the scores depend on (resuming checks it)
    models: dict  # which models the method trained or used: {"kind": ..., "n_models": ..., ...}

    def prepare(self, progress: Progress | None) -> None: ...

    def score(self, rows: slice) -> np.ndarray:
        """float32 [len(rows), n_train]: test targets rows.start..rows.stop-1 against every training image."""

    def self_scores(self) -> np.ndarray:
        """float [n_train]: each training image's self-score, from the models and settings prepare() made;
        higher = likelier mislabelled (the orientation of dattri's mislabel_detection_auc, which inspects
        training images from the highest self-attribution down). Mislabel detection ranks by it
        (backend.attribution.yardsticks); `attribute` stores it beside the scores."""


METHODS: dict[str, Callable[..., Method]] = {}


def register(name: str):
    """Class decorator: the method's constructor takes (run, device=..., **its options)."""
    def add(cls):
        cls.name = name
        METHODS[name] = cls
        return cls
    return add


def make(name: str, run: Run, **options) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown attribution method {name!r}: choose one of {', '.join(sorted(METHODS))}")
    return METHODS[name](run, **options)
