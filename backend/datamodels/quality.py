"""The eval stage's measurements of datamodel quality, read back and shaped for the dashboard.

`python -m precompute eval` (backend.datamodels.evaluation) scores a run's datamodels on the models of a held-out
run and writes metrics.json (LDS summaries, the sample-complexity curve, the paper's Table 5) and
lds.npy (one LDS per target, NaN where undefined) into the run. Nothing here recomputes them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from backend.store.artifacts import read_json
from backend.store.errors import RunError
from backend.store.run_dir import Run
from backend.store.schema import CLI, HELDOUT, LDS, MANIFEST, METRICS, WEIGHTS

ESTIMATOR_NAMES = {"empirical_influence": "Empirical influence", "difference_of_means": "Difference of means",
                   "datamodel": "Datamodel (LASSO)"}


def eval_command(run: Run) -> str:
    """The command that writes metrics.json and lds.npy for this run."""
    return METRICS.command(run.dir)


# Hyperparameters the train command takes as flags; the rest are the architecture's fixed defaults.
TRAIN_FLAGS = {"epochs": "--epochs", "lr": "--lr", "batch_size": "--batch-size", "width": "--width", "hidden": "--hidden"}


def heldout_command(run: Run, n_models: int = 300) -> str:
    """The command that trains the held-out run the eval stage scores on: the run's recipe, the next seed."""
    m = run.manifest
    flags = "".join(f" {flag} {m['hparams'][key]}" for key, flag in TRAIN_FLAGS.items() if key in m.get("hparams", {}))
    return (f"{CLI} train --dataset {m['dataset']['spec']} --alpha {m['alpha']} --models {n_models} "
            f"--seed {int(m['seed']) + 1} --arch {m['arch']}{flags} --out {HELDOUT.path(run.dir)}")


def read_metrics(run: Run) -> dict | None:
    """metrics.json as a dict, or None when the eval stage has not run."""
    return read_json(run.dir, METRICS, missing_ok=True)


def stored_lds(run: Run) -> np.ndarray | None:
    """Per-target LDS, float32 memmap of shape (n_targets,), or None when the eval stage has not run."""
    return run.array(LDS) if run.has(LDS) else None


def is_stale(run: Run) -> bool:
    """Whether the datamodels were refitted after the eval stage scored them."""
    if not run.has(WEIGHTS):
        return False
    fitted = WEIGHTS.path(run.dir).stat().st_mtime_ns
    return any(a.path(run.dir).stat().st_mtime_ns < fitted for a in (METRICS, LDS) if run.has(a))


def heldout_dir(run: Run, metrics: dict | None, root: Path) -> Path | None:
    """The held-out run the metrics were measured on (or the run's heldout/ before any eval), if present.

    metrics.json's heldout_run is relative to the run. A path that resolves outside the data directory
    `root` (and outside the run itself) is refused with a RunError: a copied run never reads elsewhere.
    """
    candidates = [HELDOUT.path(run.dir)]
    stored = metrics.get("heldout_run") if metrics else None
    if stored:
        path = (run.dir / str(stored)).resolve()
        if not any(path.is_relative_to(Path(inside).resolve()) for inside in (root, run.dir)):
            raise RunError(f"{METRICS.path(run.dir)} names a held-out run outside the data directory: "
                           f"rerun `{eval_command(run)}` with a held-out run inside it")
        candidates.insert(0, path)
    return next((path for path in candidates if MANIFEST.path(path).is_file()), None)


def complexity_curve(metrics: dict, split: str = "test") -> dict:
    """The sample-complexity curve of metrics.json as arrays, one entry per fitted fraction of models.

    Returns {"n_models", "mean", "q25", "median", "q75"}: arrays of shape (n_points,) of held-out LDS
    over `split` targets, and "skipped": the [n_models, reason] of fractions with too few models.
    """
    points = metrics.get("sample_complexity", {}).get("points", [])
    fitted = [p for p in points if "skipped" not in p and "mean" in p["lds"][split]]
    curve = {key: np.array([p["lds"][split][key] for p in fitted], dtype=float) for key in ("mean", "q25", "median", "q75")}
    curve["n_models"] = np.array([p["n_models"] for p in fitted], dtype=int)
    curve["skipped"] = [[p["n_models"], p["skipped"]] for p in points if "skipped" in p]
    return curve


def table5_rows(metrics: dict, split: str = "test") -> list[dict]:
    """Table 5 of Ilyas et al. 2022 from metrics.json: one row per estimator, mean scores over `split` targets.

    Columns: the Spearman correlation with what the estimator predicts (correctness for empirical
    influence, margins otherwise), with margins, and the AUC for correctness; None where undefined.
    """
    table = metrics.get("table5", {})
    return [{"estimator": label,
             "Spearman (own target)": table[key]["spearman"][split].get("mean"),
             "Spearman (margin)": table[key]["spearman_margin"][split].get("mean"),
             "AUC (correct)": table[key]["auc"][split].get("mean")}
            for key, label in ESTIMATOR_NAMES.items() if key in table]
