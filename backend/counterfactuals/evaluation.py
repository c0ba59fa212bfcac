"""Do datamodels predict counterfactuals? The paper's Figure 8 experiment (Ilyas et al. 2022, §4.1.2).

For each target, removal size k and heuristic (removal.HEURISTICS), remove the set, retrain N models
and compare the predicted change of the target's margin (−Σ w over the set) with the actual change
(mean margin of the retrained models minus the control mean). Reported: Pearson and Spearman
correlation overall and per heuristic. All retraining goes through the counterfactual log, so a rerun
(or a larger rerun) trains only what is new.
"""
from __future__ import annotations

import numpy as np

from backend.lazy_import import lazy_module
from backend.store.artifacts import write_json
from backend.store.rows import read_row
from backend.training.control import control_mean
from backend.counterfactuals.predict import actual_margin, load_weights
from backend.counterfactuals.removal import HEURISTICS, RemovalError, default_max_remove, removal_set, validate_removal
from backend.progress import Progress
from backend.training.retrain_store import make_request, retrain_many
from backend.store.run_dir import Run
from backend.store.schema import COUNTERFACTUAL_EVAL
from backend.store.targets import target_name
from backend.training.seeds import TEST_TARGETS_STREAM

stats = lazy_module("scipy.stats")  # seconds to import; the page needs it only for verified removals


def sample_test_targets(run: Run, count: int, seed: int = 0) -> list[int]:
    """`count` distinct test-target columns drawn at random (seeded), sorted."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, TEST_TARGETS_STREAM]))
    picks = rng.choice(run.n_test, size=min(count, run.n_test), replace=False)
    return sorted(int(run.n_train + j) for j in picks)


def evaluation_plan(run: Run, targets: list[int], ks: list[int], heuristics: tuple[str, ...] = HEURISTICS,
                    seed: int = 0) -> tuple[list[dict], list[dict]]:
    """The removal sets to test, and the ones skipped because a user could not ask for them either.

    Random sets are drawn from (seed, target, k, heuristic) alone, so a rerun asks for the same sets.
    Returns (planned, skipped): dicts with target, heuristic, k, and `removed` or `reason`.
    """
    weights, labels = load_weights(run), np.asarray(run.labels)
    train_labels = labels[:run.n_train]
    cap = default_max_remove(run.n_train)
    planned, skipped = [], []
    for t in targets:
        row = read_row(weights, t)
        for k in ks:
            for h_index, heuristic in enumerate(heuristics):
                rng = np.random.default_rng(np.random.SeedSequence([seed, t, k, h_index]))
                item = {"target": int(t), "heuristic": heuristic, "k": int(k)}
                try:
                    ids = removal_set(heuristic, k, row, train_labels, int(labels[t]), rng)
                    item["removed"] = validate_removal(ids, train_labels, run.class_names, cap)
                    planned.append(item)
                except RemovalError as exc:
                    skipped.append(dict(item, reason=str(exc)))
    return planned, skipped


def correlations(predicted: np.ndarray, actual: np.ndarray) -> dict:
    """Pearson and Spearman correlation of predicted vs actual changes (None when undefined)."""
    predicted, actual = np.asarray(predicted, dtype=np.float64), np.asarray(actual, dtype=np.float64)
    out = {"n": int(len(predicted)), "pearson": None, "spearman": None}
    if len(predicted) >= 3 and np.ptp(predicted) > 0 and np.ptp(actual) > 0:
        out["pearson"] = round(float(stats.pearsonr(predicted, actual)[0]), 4)
        out["spearman"] = round(float(stats.spearmanr(predicted, actual)[0]), 4)
    return out


def evaluate_counterfactuals(
    run: Run,
    targets: list[int],
    ks: list[int],
    n_models: int = 8,
    heuristics: tuple[str, ...] = HEURISTICS,
    *,
    seed: int = 0,
    device: str = "auto",
    progress: Progress | None = None,
) -> dict:
    """Run the Figure 8 experiment and store it as counterfactual_eval.json in the run; return it.

    progress counts models to train ("model"; models the retrain store holds cost nothing).
    """
    planned, skipped = evaluation_plan(run, targets, ks, heuristics, seed)
    requests = [make_request(run, item["removed"], None, n_models) for item in planned]
    results = retrain_many(run, requests, [[item["target"]] for item in planned], device, progress)
    weights, control = load_weights(run), control_mean(run)
    rows = []
    for item, cf in zip(planned, results):
        t = item["target"]
        rows.append({"target": t, "name": target_name(t, run.n_train), "heuristic": item["heuristic"], "k": item["k"],
                     "n_removed": len(item["removed"]), "key": cf.request.key,
                     "predicted_delta": -float(read_row(weights, t)[item["removed"]].astype(np.float64).sum()),
                     "actual_delta": actual_margin(cf, t) - float(control[t])})
    predicted = np.array([r["predicted_delta"] for r in rows])
    actual = np.array([r["actual_delta"] for r in rows])
    per = {h: correlations(predicted[m], actual[m])
           for h in heuristics if (m := np.array([r["heuristic"] == h for r in rows], dtype=bool)).any()}
    result = {"n_models": n_models, "ks": list(ks), "targets": [int(t) for t in targets], "seed": seed,
              "overall": correlations(predicted, actual), "per_heuristic": per,
              "n_counterfactuals": len(rows), "n_skipped": len(skipped),
              "skipped": skipped, "rows": rows}
    write_json(run.dir, COUNTERFACTUAL_EVAL, result)
    return result
