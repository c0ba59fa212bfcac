"""The per-target table: every target of a run (train and test) with the fields a stage stored about it, as columns.

One row per target, in margins-column order (row c is `train:c` for c < n_train, else `test:c-n_train`); each
field is one numpy array of shape (n_targets,), read from the run's memory-mapped files, so building the table at
70,000 targets costs a few reads of 70,000 numbers and filtering it is a handful of vectorised comparisons.
A field the run lacks is absent (not NaN-filled): its name is then not in `table.fields`.

    label        int64    the target's class
    prediction   int64    the class most of the run's models predict (ties: the lowest), target_predictions.npy
    share        float64  the share of models predicting it
    correct      bool     prediction == label
    margin       float32  mean correct-class margin over the run's models (target_mean_margin.npy)
    accuracy     float32  share of models right on it
    lds          float32  per-target held-out LDS (lds.npy; NaN where undefined)
    self:METHOD  float32  METHOD's self-score of each training image (higher = likelier mislabelled); NaN for tests
    leak         float32  the leak queue's fused score of each test image (leakage/queue_score.npy); NaN for train
    cluster      int32    the test image's cluster over the whole test set (structure/clusters_all.npy); -1 for train

A View (what the Dataset page shows) filters and sorts the rows; `parse_view` reads one from URL parameters,
refusing each bad value with a message and falling back to the default, so the page validates at its edge.
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field, replace
from typing import Mapping

import numpy as np

from backend.access.names import TagNameError, validate_tag
from backend.attribution import store as attribution_store
from backend.datamodels.quality import stored_lds
from backend.store.run_dir import Run
from backend.store.schema import CLUSTERS_ALL, LEAKAGE_QUEUE_SCORE
from backend.store.targets import target_name
from backend.training import target_stats

NUMERIC = ("margin", "accuracy", "lds", "leak", "share")  # and every self:METHOD
SPLITS = ("all", "train", "test")
CORRECT = ("all", "yes", "no")
PAGE_SIZE = 48


@dataclass(frozen=True)
class TargetTable:
    """The run's per-target fields (see the module docstring); `n_train` splits the rows."""

    n_train: int
    class_names: list[str]
    columns: dict[str, np.ndarray]

    @property
    def n_targets(self) -> int:
        return len(self.columns["label"])

    @property
    def fields(self) -> list[str]:
        return list(self.columns)

    @property
    def numeric(self) -> list[str]:
        """The fields a range filter or a sort by value applies to, in display order."""
        return [f for f in self.columns if f in NUMERIC or f.startswith("self:")]

    @property
    def sorts(self) -> list[str]:
        return ["target", "label", *(["prediction"] if "prediction" in self.columns else []), *self.numeric]

    def clusters(self) -> list[int]:
        return sorted(int(c) for c in np.unique(self.columns["cluster"]) if c >= 0) if "cluster" in self.columns else []


def target_table(run: Run) -> TargetTable:
    """Every stored per-target field of `run` (a field whose stage has not run is left out)."""
    n_train, n_targets = run.n_train, run.n_targets
    columns: dict[str, np.ndarray] = {"label": np.asarray(run.labels, dtype=np.int64)}
    counts = target_stats.stored_prediction_counts(run)
    if counts is not None:
        columns["prediction"], columns["share"] = target_stats.majority_prediction(counts)
        columns["correct"] = columns["prediction"] == columns["label"]
    stats = target_stats.stored_target_stats(run)
    if stats is not None:
        columns["margin"], columns["accuracy"] = np.asarray(stats[0]), np.asarray(stats[1])
    lds = stored_lds(run)
    if lds is not None:
        columns["lds"] = np.asarray(lds)
    for method in sorted(attribution_store.available(run)):
        scores = attribution_store.read_self_scores(run, method)
        if scores is not None:
            columns[f"self:{method}"] = np.concatenate([scores, np.full(n_targets - n_train, np.nan, np.float32)])
    if run.has(LEAKAGE_QUEUE_SCORE):
        columns["leak"] = np.concatenate([np.full(n_train, np.nan, np.float32), run.array(LEAKAGE_QUEUE_SCORE)])
    if run.has(CLUSTERS_ALL):
        columns["cluster"] = np.concatenate([np.full(n_train, -1, np.int32), run.array(CLUSTERS_ALL)])
    return TargetTable(n_train, list(run.class_names), columns)


@dataclass(frozen=True)
class View:
    """Which targets the Dataset page shows, in which order, and which page of them.

    labels, predictions, clusters: the allowed values (empty: any); range_field with low/high (None: open):
    an inclusive range on one numeric field, which also drops the rows where that field is NaN; tag: only
    targets carrying it; sort: a field of table.sorts, descending or not (ties and NaN: by target, NaN last).
    """

    split: str = "all"
    labels: tuple[int, ...] = ()
    predictions: tuple[int, ...] = ()
    correct: str = "all"
    clusters: tuple[int, ...] = ()
    tag: str | None = None
    range_field: str | None = None
    low: float | None = None
    high: float | None = None
    sort: str = "target"
    descending: bool = False
    page: int = 1
    warnings: tuple[str, ...] = field(default=(), compare=False)


def select(table: TargetTable, view: View, tagged: np.ndarray | None = None) -> np.ndarray:
    """The margins columns of the targets `view` shows, in its order, int64 (n_shown,).

    tagged : the columns carrying view.tag (from the annotation database); needed when view.tag is set.
    """
    c = table.columns
    keep = np.ones(table.n_targets, dtype=bool)
    if view.split == "train":
        keep[table.n_train:] = False
    elif view.split == "test":
        keep[:table.n_train] = False
    if view.labels:
        keep &= np.isin(c["label"], view.labels)
    if view.predictions and "prediction" in c:
        keep &= np.isin(c["prediction"], view.predictions)
    if view.correct != "all" and "correct" in c:
        keep &= c["correct"] if view.correct == "yes" else ~c["correct"]
    if view.clusters and "cluster" in c:
        keep &= np.isin(c["cluster"], view.clusters)
    if view.tag is not None:
        keep &= np.isin(np.arange(table.n_targets), np.asarray(tagged if tagged is not None else [], dtype=np.int64))
    if view.range_field in c:
        values = c[view.range_field]
        with np.errstate(invalid="ignore"):
            keep &= ~np.isnan(values)
            if view.low is not None:
                keep &= values >= view.low
            if view.high is not None:
                keep &= values <= view.high
    rows = np.flatnonzero(keep)
    if view.sort == "target" or view.sort not in c:
        return rows[::-1].copy() if view.descending else rows
    values = np.asarray(c[view.sort][rows], dtype=np.float64)
    # A stable sort on the value (NaN last both ways), the rows' target order breaking ties.
    key = np.where(np.isnan(values), np.inf, -values if view.descending else values)
    return rows[np.argsort(key, kind="stable")]


def n_pages(n_shown: int, page_size: int = PAGE_SIZE) -> int:
    return max(1, math.ceil(n_shown / page_size))


def page_of(rows: np.ndarray, view: View, page_size: int = PAGE_SIZE) -> np.ndarray:
    """The rows of view.page (1-based; a page past the end shows the last one)."""
    page = min(view.page, n_pages(len(rows), page_size))
    return rows[(page - 1) * page_size:page * page_size]


def _index(text: str) -> int | None:
    """A small non-negative integer written in ASCII digits, else None (not '²', nor 5,000 digits int() refuses)."""
    return int(text) if text.isascii() and text.isdigit() and len(text) < 10 else None


def _class_list(text: str, param: str, class_names: list[str], warnings: list[str]) -> tuple[int, ...]:
    """Class indices '3,5' (or class names) of the URL; a part that is neither is dropped with a warning."""
    found = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        if _index(part) is not None and _index(part) < len(class_names):
            found.append(int(part))
        elif part in class_names:
            found.append(class_names.index(part))
        else:
            warnings.append(f"{param} {part[:40]!r} is not a class: use class indices 0..{len(class_names) - 1}")
    return tuple(sorted(set(found)))


def _number(text: str | None, param: str, warnings: list[str]) -> float | None:
    if text in (None, ""):
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        warnings.append(f"{param} {text[:40]!r} is not a finite number; ignoring it")
        return None
    return value


def parse_view(params: Mapping[str, str], table: TargetTable) -> View:
    """The View of URL parameters (split, label, pred, correct, cluster, tag, range=FIELD:LOW:HIGH, sort, desc,
    page); each bad value falls back to its default and adds a one-line warning to view.warnings."""
    warnings: list[str] = []

    def choice(param: str, options, default: str) -> str:
        value = params.get(param, default)
        if value not in options:
            warnings.append(f"{param} {value[:40]!r} is not one of {', '.join(options)}; showing {default}")
            return default
        return value

    split, correct = choice("split", SPLITS, "all"), choice("correct", CORRECT, "all")
    sort = choice("sort", table.sorts, "target")
    tag = params.get("tag") or None
    if tag is not None:
        try:
            validate_tag(tag)
        except TagNameError as exc:
            warnings.append(str(exc))
            tag = None
    clusters = []
    for part in filter(None, params.get("cluster", "").split(",")):
        if _index(part) in table.clusters():
            clusters.append(int(part))
        else:
            warnings.append(f"cluster {part[:40]!r} is not one of the run's clusters "
                            f"({', '.join(map(str, table.clusters())) or 'none'})")
    range_field, low, high = None, None, None
    if params.get("range"):
        name, low_text, high_text = (params["range"].rsplit(":", 2) + ["", ""])[:3]  # (a field may hold a colon)
        if name in table.numeric and params["range"].count(":") >= 2:
            range_field = name
            low, high = _number(low_text, "range low", warnings), _number(high_text, "range high", warnings)
        else:
            warnings.append(f"range {params['range'][:40]!r} is not FIELD:LOW:HIGH with a field of "
                            f"{', '.join(table.numeric) or 'none'}")
    page_text = params.get("page", "1")
    page = _index(page_text) or 0
    if page < 1:
        warnings.append(f"page {page_text[:40]!r} is not a page number; showing page 1")
        page = 1
    return View(split=split, labels=_class_list(params.get("label", ""), "label", table.class_names, warnings),
                predictions=_class_list(params.get("pred", ""), "pred", table.class_names, warnings),
                correct=correct, clusters=tuple(sorted(set(clusters))), tag=tag, range_field=range_field, low=low,
                high=high, sort=sort, descending=params.get("desc") == "1", page=page, warnings=tuple(warnings))


def view_params(view: View) -> dict[str, str]:
    """The URL parameters of `view`, its defaults left out (parse_view reads them back)."""
    out = {"split": view.split if view.split != "all" else None,
           "label": ",".join(map(str, view.labels)) or None, "pred": ",".join(map(str, view.predictions)) or None,
           "correct": view.correct if view.correct != "all" else None,
           "cluster": ",".join(map(str, view.clusters)) or None, "tag": view.tag,
           "range": (f"{view.range_field}:{'' if view.low is None else repr(view.low)}:"
                     f"{'' if view.high is None else repr(view.high)}") if view.range_field else None,
           "sort": view.sort if view.sort != "target" else None, "desc": "1" if view.descending else None,
           "page": str(view.page) if view.page != 1 else None}
    return {k: v for k, v in out.items() if v is not None}


def with_page(view: View, page: int) -> View:
    return replace(view, page=page)


def records(table: TargetTable, rows: np.ndarray, tags: Mapping[int, list[str]] | None = None) -> list[dict]:
    """One dict per row of `rows` with the table's fields by name (classes by name, NaN as None) and its tags."""
    rows = np.asarray(rows, dtype=np.int64)
    names = table.class_names
    out = [{"target": target_name(int(r), table.n_train), "split": "train" if r < table.n_train else "test"}
           for r in rows]
    for name, column in table.columns.items():
        values = np.asarray(column[rows])
        if name in ("label", "prediction"):
            cells = [names[int(v)] for v in values]
        elif values.dtype == bool:
            cells = values.tolist()
        elif name == "cluster":
            cells = [int(v) if v >= 0 else None for v in values]
        else:
            cells = [None if math.isnan(v) else float(v) for v in values.astype(np.float64)]
        for record, cell in zip(out, cells):
            record[name] = cell
    for record, r in zip(out, rows):
        record["tags"] = list((tags or {}).get(int(r), []))
    return out


# Spreadsheets run a cell starting with one of these as a formula; a leading quote keeps a text cell inert (OWASP).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def inert_cell(cell):
    """A cell as a spreadsheet shows it but never runs it: a text cell starting with FORMULA_START gets a leading '."""
    return "'" + cell if isinstance(cell, str) and cell.startswith(FORMULA_START) else cell


def to_csv(rows: list[dict]) -> str:
    """CSV of records(): one header line of the field names; tags joined by ';'; None as an empty cell; a text
    cell a spreadsheet would run as a formula (a class name '=…') quoted with a leading '."""
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: inert_cell(v) for k, v in {**r, "tags": ";".join(r["tags"])}.items()} for r in rows)
    return buffer.getvalue()


def to_json(rows: list[dict], run_name: str) -> str:
    """JSON of records(): {"run": name, "targets": [...]}, NaN as null."""
    return json.dumps({"run": run_name, "targets": rows}, indent=1, allow_nan=False)
