"""Data support: how few training images must go before a correct prediction turns wrong (brittleness).

Ilyas et al. 2022, §4.1.1 and App. F.3:
* heuristic estimate (App. F.3.2): the smallest k whose top-k positive datamodel weights add up to more
  than the target's control margin, i.e. the first k at which the predicted margin drops below zero;
* certified estimate (App. F.3.1): a bisection over k that retrains N models without the target's top-k
  training images at each step and accepts k only when their mean margin is below zero;
* mislabel support: the same search, but the top-k images are relabelled to the target's competing
  class (removal.competitor_class) instead of removed.

Per-target results are stored as `support/<mode>-<column>.json` in the run as each chunk of targets
finishes, and every retraining is in the counterfactual log, so an interrupted search resumes cheaply.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from backend.ranking import top_k

from backend.lazy_import import lazy_module
from backend.store.artifacts import read_json, write_json
from backend.store.rows import read_row, read_rows
from backend.training.control import control_mean
from backend.counterfactuals.predict import actual_margin, load_weights
from backend.counterfactuals.removal import competitor_class
from backend.progress import Progress, part
from backend.training.retrain_store import make_request, retrain_many
from backend.store.run_dir import Run
from backend.store.schema import SUPPORT, SUPPORT_SUMMARY
from backend.store.targets import target_name

# Both import torch, which only certifying (retraining) needs (backend/lazy_import.py).
engine = lazy_module("backend.training.engine")
retraining = lazy_module("backend.training.retraining")

DEFAULT_K_MAX = 1280
DEFAULT_BUDGET = 7
# Models per bisection step. The accepted k is the first whose mean margin dips below zero, so it sits
# where margins are near zero and the mean's noise decides; on digits, 8 models per step gave supports
# that fresh models confirmed for 26 of 29 targets, 16 for 32 of 33.
DEFAULT_SUPPORT_MODELS = 16


def heuristic_support(weights: np.ndarray, margins: np.ndarray, rows: np.ndarray | None = None,
                      block: int = 256) -> np.ndarray:
    """Smallest k with Σ top-k positive weights > margin, per target (App. F.3.2).

    weights : ndarray of shape (n, n_train), e.g. weights.npy memory-mapped; read `block` rows at a
        time with plain file reads, so memory stays at a few block-sized copies
    margins : ndarray of shape (len(rows),), the control mean margins of the targets asked about
    rows    : which rows of `weights` (default all)
    Returns float64 (len(rows),): 0 for a target already misclassified (margin <= 0), inf when even
    all positive weights together do not exceed the margin.
    """
    margins = np.asarray(margins, dtype=np.float64)
    rows = np.arange(len(weights)) if rows is None else np.asarray(rows, dtype=np.int64)
    out = np.zeros(len(margins))
    for lo in range(0, len(margins), block):
        w = read_rows(weights, rows[lo:lo + block]).astype(np.float64)
        m = margins[lo:lo + block]
        reach = np.cumsum(np.maximum(-np.sort(-w, axis=1), 0.0), axis=1) > m[:, None]
        k = np.where(reach.any(axis=1), reach.argmax(axis=1) + 1.0, np.inf)
        out[lo:lo + block] = np.where(m <= 0, 0.0, k)
    return out


def brittleness_cdf(supports: np.ndarray, ks: np.ndarray) -> np.ndarray:
    """Fraction of targets whose support is at most k, for each k in ks (float64, same shape as ks)."""
    supports = np.asarray(supports, dtype=np.float64)
    return (supports[None, :] <= np.asarray(ks, dtype=np.float64)[:, None]).mean(axis=1)


@dataclass
class SupportSearch:
    """One target's certified search: `support` is the accepted k (None if no tested k flipped it),
    `lower` the largest k tested that did not, `steps` every (k, mean margin) tried, in order."""

    support: int | None
    lower: int
    steps: list[tuple[int, float]] = field(default_factory=list)


def bisect_supports(n: int, evaluate: Callable[[list[tuple[int, int]]], list[float]], k_max: int,
                    budget: int = DEFAULT_BUDGET) -> list[SupportSearch]:
    """Certified data support of n targets by bisection over k in (0, k_max], all targets in lockstep.

    evaluate : given [(i, k), ...] returns the mean margin of target i after changing its top-k
        training images; asking for all targets at once lets one engine call train them together.
    At most `budget` rounds; each round halves every target's interval (lo, hi], where lo never flipped
    and hi flipped once tested. A k is accepted only when its mean margin is below zero.
    """
    lo, hi, flipped = [0] * n, [k_max] * n, [False] * n
    steps: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    for _ in range(budget):
        asks = [(i, (lo[i] + hi[i]) // 2) for i in range(n) if (lo[i] + hi[i]) // 2 > lo[i]]
        if not asks:
            break
        for (i, k), margin in zip(asks, evaluate(asks)):
            steps[i].append((k, float(margin)))
            if margin < 0:
                hi[i], flipped[i] = k, True
            else:
                lo[i] = k
    return [SupportSearch(hi[i] if flipped[i] else None, lo[i], steps[i]) for i in range(n)]


def default_k_max(n_train: int) -> int:
    return min(DEFAULT_K_MAX, n_train - 1)


def certified_supports(
    run: Run,
    targets: list[int],
    n_models: int = DEFAULT_SUPPORT_MODELS,
    *,
    mislabel: bool = False,
    k_max: int | None = None,
    budget: int = DEFAULT_BUDGET,
    check: bool = False,
    device: str = "auto",
    progress: Progress | None = None,
) -> list[dict]:
    """Certified (or mislabel) support of each target column in `targets`, resuming stored results.

    check : also train n_models *fresh* models (other seeds) without the certified support and record
        their mean margin, the paper's test that the support really flips the prediction on average.
    progress counts the targets still to search ("target"; fractional while a chunk searches).
    Returns one dict per target (see `support_record`), in the order of `targets`.
    """
    mode = "mislabel" if mislabel else "remove"
    k_max = k_max or default_k_max(run.n_train)
    params = {"mode": mode, "n_models": n_models, "k_max": k_max, "budget": budget}
    stored = {t: _load(run, mode, t) for t in targets}
    todo = [t for t in targets if not _usable(stored[t], params, check)]
    if todo:
        weights = load_weights(run)

        def keep(record: dict) -> None:
            write_json(run.dir, SUPPORT, record, mode=mode, column=record["target"])
            stored[record["target"]] = record
        search_supports(run, todo, lambda t: read_row(weights, t), params, check=check, device=device,
                        progress=progress, on_record=keep)
    elif progress:
        progress(0, 0, "target")
    return [stored[t] for t in targets]


def search_supports(run: Run, targets: list[int], ranking: Callable[[int], np.ndarray], params: dict, *,
                    check: bool = False, device: str = "auto", progress: Progress | None = None,
                    on_record: Callable[[dict], None] | None = None) -> list[dict]:
    """The certified search of `targets` under any attribution: nothing is read from or written to support/.

    ranking(column) : float (n_train,) scores of the target's training images, positive = raises its margin;
        the search removes (or relabels) the top-k by score, and mislabel mode relabels them to the class
        whose images score most negative (removal.competitor_class)
    params  : {"mode": "remove" | "mislabel", "n_models", "k_max", "budget"}
    on_record(record) is called as each chunk of targets finishes (certified_supports stores them there).
    Retrainings go through the run's retrain store, so the same removal set under two rankings trains once.
    progress counts the targets ("target"; fractional while a chunk searches). Returns one record per target.
    """
    if progress:
        progress(0, len(targets), "target")
    control = control_mean(run)
    data = retraining.training_data(run, device)
    chunk = max(1, engine.default_batch_models(run.manifest["arch"], data.train_x.device) // params["n_models"])
    records = []
    for lo in range(0, len(targets), chunk):
        chunk_targets = targets[lo:lo + chunk]
        report = part(progress, lo, len(chunk_targets), len(targets), "target")
        for record in _search_chunk(run, chunk_targets, [ranking(t) for t in chunk_targets], control, data, params, check, report):
            if on_record:
                on_record(record)
            records.append(record)
        if report:
            report(1, 1, "round")
    return records


def _search_chunk(run: Run, chunk: list[int], rows: list[np.ndarray], control, data, params: dict, check: bool,
                  progress: Progress | None) -> list[dict]:
    """Search a chunk of targets in lockstep (rows: their rankings); progress counts its rounds ("round")."""
    n_models, k_max = params["n_models"], params["k_max"]
    labels = np.asarray(run.labels)
    train_labels = labels[:run.n_train]
    orders = [top_k(row, k_max) for row in rows]
    relabel_to = [competitor_class(row, train_labels, int(labels[t]), len(run.class_names)) for row, t in zip(rows, chunk)]
    live = [i for i, t in enumerate(chunk) if control[t] > 0]

    def request(i: int, k: int, seed_start: int = 0):
        relabel = np.full(k, relabel_to[i]) if params["mode"] == "mislabel" else None
        return make_request(run, orders[i][:k], relabel, n_models, seed_start)

    rounds, n_rounds = 0, params["budget"] + int(check)

    def evaluate(asks: list[tuple[int, int]], seed_start: int = 0) -> list[float]:
        nonlocal rounds
        pairs = [(live[j], k) for j, k in asks]
        found = retrain_many(run, [request(i, k, seed_start) for i, k in pairs], [[chunk[i]] for i, _ in pairs], data=data)
        rounds += 1
        if progress:
            progress(min(rounds, n_rounds), n_rounds, "round")
        return [actual_margin(cf, chunk[i]) for cf, (i, _) in zip(found, pairs)]

    searches = dict(zip(live, bisect_supports(len(live), evaluate, k_max, params["budget"])))
    checked = {}
    if check:
        certified = [(j, s.support) for j, s in enumerate(searches.values()) if s.support]
        checked = dict(zip((live[j] for j, _ in certified), evaluate(certified, seed_start=n_models)))
    return [support_record(run, chunk[i], float(control[chunk[i]]), searches.get(i), checked.get(i), params,
                           relabel_to[i] if params["mode"] == "mislabel" else None)
            for i in range(len(chunk))]


def support_record(run: Run, target: int, control_margin: float, search: SupportSearch | None,
                   check_margin: float | None, params: dict, relabel_to: int | None) -> dict:
    """The stored form of one target's search; a target wrong under control has support 0 and no search."""
    record = dict(params, target=int(target), name=target_name(target, run.n_train), control_margin=control_margin,
                  support=0 if search is None else search.support, lower=0 if search is None else search.lower,
                  steps=[] if search is None else [list(s) for s in search.steps], relabel_to=relabel_to)
    if check_margin is not None:
        record.update(check_margin=check_margin, check_seed_start=params["n_models"])
    return record


def _load(run: Run, mode: str, target: int) -> dict | None:
    return read_json(run.dir, SUPPORT, missing_ok=True, mode=mode, column=target)


def _usable(record: dict | None, params: dict, check: bool) -> bool:
    if record is None or any(record.get(k) != v for k, v in params.items()):
        return False
    return not check or record["support"] in (0, None) or "check_margin" in record


def stored_supports(run: Run, mode: str = "remove") -> list[dict]:
    """Every certified search stored in the run for `mode`, sorted by target column."""
    paths = SUPPORT.glob(run.dir, mode=mode)
    records = (_load(run, mode, int(SUPPORT.fields_of(p, run.dir)["column"])) for p in paths)
    return sorted((r for r in records if r is not None), key=lambda r: r["target"])


def certified_array(records: list[dict]) -> np.ndarray:
    """Certified supports as float64 (inf where no tested k flipped the target), for brittleness_cdf."""
    return np.array([np.inf if r["support"] is None else r["support"] for r in records], dtype=np.float64)


def search_summary(records: list[dict]) -> dict:
    """Counts and the paper's check: of the certified targets, how many fresh models really misclassify."""
    certified = [r for r in records if r["support"]]
    checked = [r for r in certified if "check_margin" in r]
    summary = {"targets": len(records), "already_wrong": sum(r["support"] == 0 for r in records),
               "certified": len(certified), "not_found_within_k_max": sum(r["support"] is None for r in records)}
    if certified:
        summary["median_certified_support"] = float(np.median([r["support"] for r in certified]))
    if checked:
        flipped = sum(r["check_margin"] < 0 for r in checked)
        summary.update(checked=len(checked), check_flipped=flipped, check_flip_fraction=round(flipped / len(checked), 4))
    return summary


def save_support_summary(run: Run, records: list[dict], control: np.ndarray, targets: str, *,
                         mislabel: bool = False) -> tuple[dict, Path]:
    """Write support/summary-<mode>.json for a search over `targets` (their spec): the search's summary,
    the certified CDF beside the heuristic support of every test target (App. F.3), one row per target.

    control : float64 (n_train + n_test,) the control models' mean margin
    """
    mode = "mislabel" if mislabel else "remove"
    heuristic = heuristic_support(load_weights(run), control[run.n_train:], np.arange(run.n_train, run.n_targets))
    per_target = [{k: r[k] for k in ("name", "support", "lower", "control_margin", "check_margin") if k in r}
                  | {"heuristic": _finite(heuristic[r["target"] - run.n_train]) if r["target"] >= run.n_train else None}
                  for r in records]
    summary = {"mode": mode, "targets": targets, "search": search_summary(records),
               "certified_cdf": _cdf(certified_array(records)),
               "heuristic_all_test": {"n": run.n_test, "median": _finite(np.median(heuristic)), "cdf": _cdf(heuristic)}}
    write_json(run.dir, SUPPORT_SUMMARY, dict(summary, per_target=per_target), mode=mode)
    return summary, SUPPORT_SUMMARY.path(run.dir, mode=mode)


def _finite(value: float) -> float | None:
    return None if not np.isfinite(value) else float(value)


def _cdf(supports: np.ndarray) -> dict:
    ks = np.unique(supports[np.isfinite(supports)])
    return {"k": ks.tolist(), "fraction": np.round(brittleness_cdf(supports, ks), 4).tolist(),
            "never": int((~np.isfinite(supports)).sum())}
