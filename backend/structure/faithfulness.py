"""Are the principal components of datamodel embeddings real? Remove data along one and retrain (App. J).

A component c has one coordinate per training example. Removing the k training examples with the
most positive coordinates and retraining should lower the margins of the test targets that project
most positively onto c and raise those that project most negatively, while the test set as a whole
barely moves (Ilyas et al. 2022, App. J). Removing the most negative side should do the reverse.

Every retrained model's margins are kept in the run, one file per removal set, named by a hash of
the removed examples and the training recipe: an identical request is answered from the file, a
larger one trains only the missing models, and a kill loses at most the batch in flight.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import numpy as np

from backend.store import run_dir
from backend.training.control import CONTROL_FEATURES, CONTROL_MARGINS, DEFAULT_N_CONTROL, control_mean, ensure_control, load_control
from backend.structure.embeddings import extremes, pca_components, pca_projections
from backend.training.retraining import train_sets, training_data
from backend.training.seeds import FAITHFULNESS_STREAM, stream_seeds
from backend.store.run_dir import Run, RunError
from backend.training.engine import default_batch_models

RESULTS = "structure/faithfulness"
SIDES = ("positive", "negative")
DEFAULT_MODELS = 8
DEFAULT_GROUP = 100


class FaithfulnessError(ValueError):
    """A faithfulness request that does not fit the run (component, k or side out of range)."""


def removal_set(component: np.ndarray, k: int, side: str) -> np.ndarray:
    """Sorted indices of the k training examples with the most positive (or most negative) coordinates.

    component : ndarray of shape (n_train,), one principal component
    """
    top, bottom = extremes(component, k)
    return np.sort(top if side == "positive" else bottom)


def target_groups(projection: np.ndarray, n_group: int) -> dict[str, np.ndarray]:
    """Test indices of the n_group most positive and most negative projections, and of the whole test set.

    projection : ndarray of shape (n_test,), the test targets' coordinates on one component
    """
    top, bottom = extremes(projection, n_group)
    return {"positive": top, "negative": bottom, "all": np.arange(len(projection))}


def group_shifts(shift: np.ndarray, groups: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean margin change of each group; shift : ndarray of shape (n_test,)."""
    return {name: float(shift[idx].mean()) for name, idx in groups.items()}


def result_path(run: Run, removed: np.ndarray) -> Path:
    """Where the models retrained without `removed` live: keyed by the removal set and the training recipe."""
    recipe = json.dumps({"arch": run.manifest["arch"], "hparams": run.manifest["hparams"],
                         "seed": run.manifest["seed"], "stream": FAITHFULNESS_STREAM}, sort_keys=True)
    digest = hashlib.sha256(recipe.encode() + np.asarray(removed, dtype=np.int64).tobytes()).hexdigest()[:16]
    return run.dir / RESULTS / f"{digest}.npz"


def stored_margins(run: Run, removed: np.ndarray) -> np.ndarray:
    """Margins of the models already retrained without `removed`, shape (n_done, n_targets) (n_done may be 0)."""
    path = result_path(run, removed)
    if not path.exists():
        return np.zeros((0, run.n_targets), dtype=np.float32)
    try:
        with np.load(path, allow_pickle=False) as z:
            stored_removed, margins = z["removed"], z["margins"]
    except (ValueError, OSError, KeyError) as exc:
        raise RunError(f"{path} is corrupt ({exc}): delete it and rerun the faithfulness check") from None
    if not np.array_equal(stored_removed, removed):
        raise RunError(f"{path} holds another removal set (an edited or foreign file): delete it")
    return margins


def retrain_without(run: Run, removed: np.ndarray, n_models: int, *, meta: dict | None = None, data=None,
                    device: str = "auto", progress: Callable[[float], None] | None = None) -> np.ndarray:
    """Margins of n_models models trained on the whole training set minus `removed`, shape (n_models, n_targets).

    Models already stored are reused; new ones are trained in batches, each batch saved before the next.
    progress : called with the number of models finished (fractional while a batch trains).
    """
    margins = stored_margins(run, removed)
    if len(margins) >= n_models:
        return margins[:n_models]
    data = data if data is not None else training_data(run, device)
    keep = np.setdiff1d(np.arange(run.n_train), removed).astype(np.int64)
    seeds = stream_seeds(int(run.manifest["seed"]), FAITHFULNESS_STREAM, 0, n_models)
    step = default_batch_models(run.manifest["arch"], data.train_x.device)
    path = result_path(run, removed)
    path.parent.mkdir(parents=True, exist_ok=True)
    start = len(margins)
    while len(margins) < n_models:
        lo, hi = len(margins), min(len(margins) + step, n_models)
        report = (lambda f, base=lo - start: progress(base + f)) if progress else None
        new, _ = train_sets(run, data, np.tile(keep, (hi - lo, 1)), seeds[lo:hi], batch_models=step, progress=report)
        margins = np.concatenate([margins, new])
        with run_dir.atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, removed=removed, margins=margins, seeds=np.array(seeds[:hi], dtype=np.int64),
                     meta=np.array(json.dumps(meta or {}, sort_keys=True)))
    return margins


def _validated_removals(run: Run, pc: int, k: int, n_models: int, sides) -> dict[str, np.ndarray]:
    components = pca_components(run)
    if not 0 <= pc < len(components):
        raise FaithfulnessError(f"component {pc} does not exist: the run's PCA has components 0..{len(components) - 1}")
    if not 1 <= k < run.n_train:
        raise FaithfulnessError(f"k={k} is out of range: remove between 1 and {run.n_train - 1} training examples")
    if n_models < 1:
        raise FaithfulnessError(f"n_models={n_models}: retrain at least 1 model")
    unknown = set(sides) - set(SIDES)
    if unknown or not sides:
        raise FaithfulnessError(f"unknown side(s) {sorted(unknown)}: choose from {', '.join(SIDES)}")
    component = np.asarray(components[pc])
    return {side: removal_set(component, k, side) for side in sides}


def _n_control(run: Run) -> int:
    return len(load_control(run)) if run.has(CONTROL_MARGINS) and run.has(CONTROL_FEATURES) else 0


def models_to_train(run: Run, pc: int, k: int, *, n_models: int = DEFAULT_MODELS, sides=SIDES,
                    n_control: int = DEFAULT_N_CONTROL) -> int:
    """How many models `faithfulness_check` with these arguments would train (0: it answers from the run)."""
    removals = _validated_removals(run, pc, k, n_models, sides)
    return max(0, n_control - _n_control(run)) + sum(
        max(0, n_models - len(stored_margins(run, removed))) for removed in removals.values())


def faithfulness_check(run: Run, pc: int, k: int, *, n_models: int = DEFAULT_MODELS, sides=SIDES,
                       n_group: int = DEFAULT_GROUP, n_control: int = DEFAULT_N_CONTROL, device: str = "auto",
                       progress: Callable[[float], None] | None = None,
                       on_start: Callable[[int], None] | None = None) -> dict:
    """App. J for component `pc`: retrain without the top-k of each side and report mean margin changes.

    The change of a target is (mean margin of the retrained models) − (mean margin of the control models
    trained on the whole training set; at least n_control of them, trained first if the run has fewer).
    Reported per removal side for three groups of test targets: the n_group most positive projections
    onto the component, the n_group most negative, and all.
    on_start : called first with the number of models that must be trained (controls and retrains; 0 when
        everything is stored); progress : then with the number finished (fractional while a batch trains).
    """
    removals = _validated_removals(run, pc, k, n_models, sides)
    have_control = _n_control(run)
    n_control = max(n_control, have_control)
    missing = {side: max(0, n_models - len(stored_margins(run, r))) for side, r in removals.items()}
    if on_start:
        on_start(n_control - have_control + sum(missing.values()))

    def offset(base: float) -> Callable[[float], None] | None:
        return (lambda models: progress(base + models)) if progress else None

    ensure_control(run, n_control, device=device, progress=offset(0))
    done = n_control - have_control
    control = control_mean(run)
    n_group = max(1, min(n_group, run.n_test // 3))
    groups = target_groups(np.asarray(pca_projections(run)[run.n_train:, pc]), n_group)
    data = training_data(run, device) if any(missing.values()) else None
    result = {"pc": pc, "k": k, "n_models": n_models, "n_group": n_group, "n_control": n_control, "sides": {}}
    for side, removed in removals.items():
        margins = retrain_without(run, removed, n_models, data=data, device=device, progress=offset(done),
                                  meta={"pc": pc, "k": k, "side": side})
        done += missing[side]
        shift = margins.mean(axis=0, dtype=np.float64) - control
        result["sides"][side] = {"removed": removed.tolist(), "file": str(result_path(run, removed).relative_to(run.dir)),
                                 "shift": group_shifts(shift[run.n_train:], groups)}
    return result


def stored_checks(run: Run) -> list[dict]:
    """Every stored retrain of this run: its request (pc, k, side), its model count, and whether its removal
    set is still the one the run's current PCA gives (a rerun of `analyze` can change the components)."""
    folder = run.dir / RESULTS
    components = pca_components(run)
    out = []
    for path in sorted(folder.glob("*.npz")) if folder.exists() else []:
        try:
            with np.load(path, allow_pickle=False) as z:
                meta, removed, n = json.loads(str(z["meta"])), z["removed"], len(z["margins"])
        except (ValueError, OSError, KeyError) as exc:
            raise RunError(f"{path} is corrupt ({exc}): delete it and rerun the faithfulness check") from None
        current = meta["pc"] < len(components) and np.array_equal(
            removal_set(np.asarray(components[meta["pc"]]), meta["k"], meta["side"]), removed)
        out.append(dict(meta, n_models=int(n), file=path.name, current=bool(current)))
    return out
