"""What a verb prints for a person: the plan of `all` up front, then one summary line per stage.

The full summary is in the run (fit.json, metrics.json, analysis.json, ...) and, with --json, on stdout
for scripts; these lines go to stderr beside the progress bars, so stdout holds only that JSON.
"""
from __future__ import annotations

import sys
import time

from tqdm import tqdm


def say(text: str) -> None:
    """One line on stderr that does not break a progress bar being drawn."""
    tqdm.write(text, file=sys.stderr)


def _seconds(s: float | None) -> str:
    if s is None:
        return "?"
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def _mean(stats: dict, split: str = "test") -> str:
    value = (stats or {}).get(split, {}).get("mean")
    return "—" if value is None else f"{value:.3f}"


def train_line(summary: dict) -> str:
    accuracy = summary.get("mean_test_accuracy")
    return (f"train: {summary['n_models']:,} models in {summary['run']} ({summary['trained_now']:,} trained now in "
            f"{_seconds(summary['seconds'])} on {summary['device']}"
            + (f"; mean test accuracy {accuracy:.1%}" if accuracy is not None else "") + ")"
            + f"; merge {merge_part(summary)}"
            + (f"; {summary['note']}" if "note" in summary else ""))


def merge_part(summary: dict) -> str:
    """What a merge wrote: the bytes it appended of the run's total, and the shards it deleted."""
    written, total = summary.get("merge_bytes_written", summary.get("bytes_written")), summary.get("run_bytes")
    share = f" of {_bytes(total)} ({written / total:.0%})" if total else ""
    deleted = summary.get("shards_deleted", 0)
    return f"wrote {_bytes(written)}{share}, deleted {deleted} shard{'' if deleted == 1 else 's'}"


def _bytes(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024


def fit_line(summary: dict) -> str:
    kept = f" ({summary['kept']:,} kept from the run's fit)" if summary.get("kept") else ""
    unfitted = (f"; unfitted: {_clip(summary['unfitted'])} (`python -m precompute fit --run {summary['run']}` "
                "with the same settings fits them and keeps these)" if summary.get("unfitted") else "")
    return (f"fit: {summary.get('fitted_now', summary['targets']):,} datamodels fitted{kept} in "
            f"{_seconds(summary['seconds'])} on {summary['device']} → {summary['run']}/weights.npy{unfitted}")


def _clip(spec: str, width: int = 60) -> str:
    """A long target spec cut for one line (the full list is in fit.json or metrics.json)."""
    return spec if len(spec) <= width else spec[:width].rsplit(",", 1)[0] + ",…"


def eval_line(metrics: dict) -> str:
    curve = metrics.get("sample_complexity")
    return (f"eval: held-out LDS {_mean(metrics.get('lds'))} on test targets, {_mean(metrics.get('lds'), 'train')} on "
            f"training targets ({metrics.get('n_heldout_models', '?')} held-out models"
            + (f"; sample complexity at {len(curve)} sizes" if isinstance(curve, list) else "") + ")"
            + (f"; over fitted targets only, unfitted: {_clip(metrics['unfitted']['targets'])}"
               if metrics.get("unfitted") else ""))


def line(verb: str, summary: dict) -> str:
    """The one line that ends `verb`: its headline numbers; other verbs list their scalar fields."""
    if verb == "train":
        return train_line(summary)
    if verb == "fit":
        return fit_line(summary)
    if verb == "eval":
        return eval_line(summary)
    if verb == "merge":
        return f"merge: {summary['n_models']:,} models in {summary['run']} ({merge_part(summary)})"
    if verb == "all":
        return f"all: done in {_seconds(summary.get('seconds'))}; held-out LDS {_mean(summary.get('heldout_lds'))} on test targets"
    if verb == "analyze":
        structure = summary.get("structure", {})
        return (f"analyze: structure and leak candidates for {summary['run']} in {_seconds(summary.get('seconds'))}"
                + (f"; {structure['effective_dimensionality']}" if isinstance(structure.get("effective_dimensionality"), str) else ""))
    scalars = [f"{k} {v}" for k, v in summary.items() if isinstance(v, (str, int, float, bool)) or v is None]
    return f"{verb}: " + ", ".join(scalars[:8]) + " (--json for everything)"


class FirstBatchEstimate:
    """A Progress wrapper that, once the first batch of models is done, prints how long all training will take.

    n_models is every model `all` will train (the run and its held-out run), first_batch the models trained
    at once: the rate of the first batch, data loading included, times that count.
    """

    def __init__(self, progress, n_models: int, first_batch: int):
        self.progress, self.n_models, self.first_batch = progress, n_models, first_batch
        self.started, self.said = None, False

    def __call__(self, done: float, total: float, unit: str) -> None:
        if self.started is None:
            self.started = time.perf_counter()
        elif not self.said and done >= min(self.first_batch, total):
            rate = done / (time.perf_counter() - self.started)
            self.said = True
            say(f"estimate: {_seconds(self.n_models / rate)} to train all {self.n_models:,} models "
                f"({rate:.1f} models/s on the first {done:.0f}); the fit's bar shows its own time left")
        self.progress(done, total, unit)
