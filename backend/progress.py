"""One progress convention for every long job: progress(done, total, unit), first with done=0 so totals are known."""
from __future__ import annotations

from typing import Callable

# progress(done, total, unit): `done` of `total` units ("model", "target", "λ step", "stage") are finished;
# called first with done=0, last with done=total. done may be fractional while a batch is in flight.
Progress = Callable[[float, float, str], None]


def offset(progress: Progress | None, base: float, total: float) -> Progress | None:
    """A Progress for a part of a job: the part's done is counted after `base` units of a job of `total`."""
    if progress is None:
        return None
    return lambda done, _total, unit: progress(base + done, total, unit)


def fraction(progress: Progress | None, base: float, size: float, total: float, unit: str) -> Callable[[float], None] | None:
    """A callback for a step that reports the fraction f of its `size` units done (the engine's batches)."""
    if progress is None:
        return None
    return lambda f: progress(base + f * size, total, unit)
