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


def part(progress: Progress | None, base: float, size: float, total: float, unit: str | None = None) -> Progress | None:
    """A Progress for a sub-job that fills units [base, base + size) of a job of `total`.

    The sub-job reports its own progress(done, of, unit); its share done/of is scaled onto `size` (a sub-job
    with nothing to do, of = 0, is complete). `unit` names the parent's unit when it differs from the sub-job's.
    """
    if progress is None:
        return None
    return lambda done, of, sub_unit: progress(base + size * (done / of if of else 1.0), total, unit or sub_unit)
