"""Are the principal components of datamodel embeddings real? Remove data along one and retrain (App. J).

A component c has one coordinate per training example. Removing the k training examples with the
most positive coordinates and retraining should lower the margins of the test targets that project
most positively onto c and raise those that project most negatively, while the test set as a whole
barely moves (Ilyas et al. 2022, App. J). Removing the most negative side should do the reverse.

Every retrained model is kept in the run's retrain store (training/retrain_store.py, counterfactuals/<key>
in the run, on a seed stream of its own): an identical request is answered from it, a larger one trains
only the missing models, and a kill loses at most the batch in flight.
"""
from __future__ import annotations

import numpy as np

from backend.lazy_import import lazy_module
from backend.progress import Progress, offset
from backend.training import retrain_store
from backend.store.schema import CONTROL_FEATURES, CONTROL_MARGINS, COUNTERFACTUAL
from backend.training.control import DEFAULT_N_CONTROL, control_mean, ensure_control, load_control
from backend.structure.embeddings import extremes, pca_components, pca_projections
from backend.training.retrain_store import LogStorage, Request, make_request, retrain_many
from backend.training.seeds import FAITHFULNESS_STREAM
from backend.store.run_dir import Run

retraining = lazy_module("backend.training.retraining")  # (torch, only to train: backend/lazy_import.py)

SIDES = ("positive", "negative")
DEFAULT_MODELS = 8
DEFAULT_GROUP = 100


class FaithfulnessError(ValueError):
    """A faithfulness request that does not fit the run (component, k or side out of range)."""


def component_extremes(component: np.ndarray, k: int, side: str) -> np.ndarray:
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


def removal_request(run: Run, removed: np.ndarray, n_models: int) -> Request:
    """The retrain store's request for models [0, n_models) of FAITHFULNESS_STREAM trained without `removed`."""
    return make_request(run, removed, n_models=n_models, stream=FAITHFULNESS_STREAM)


def retrain_without(run: Run, removed: np.ndarray, n_models: int, *, meta: dict | None = None, data=None,
                    device: str = "auto", progress: Progress | None = None) -> np.ndarray:
    """Margins of n_models models trained on the whole training set minus `removed`, shape (n_models, n_targets).

    A request of the retrain store: models already stored are reused, new ones are trained in batches,
    each batch saved before the next. progress counts the models to train.
    """
    (found,) = retrain_many(run, [removal_request(run, removed, n_models)], device=device, progress=progress, data=data,
                            storage=LogStorage(run, {"faithfulness": meta or {}}))
    return found.margins


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
    return {side: component_extremes(component, k, side) for side in sides}


def _n_control(run: Run) -> int:
    return len(load_control(run)) if run.has(CONTROL_MARGINS) and run.has(CONTROL_FEATURES) else 0


def _missing(run: Run, removals: dict[str, np.ndarray], n_models: int) -> dict[str, int]:
    return {side: n_models - retrain_store.held_count(run, removal_request(run, r, n_models)) for side, r in removals.items()}


def models_to_train(run: Run, pc: int, k: int, *, n_models: int = DEFAULT_MODELS, sides=SIDES,
                    n_control: int = DEFAULT_N_CONTROL) -> int:
    """How many models `faithfulness_check` with these arguments would train (0: it answers from the run)."""
    removals = _validated_removals(run, pc, k, n_models, sides)
    return max(0, n_control - _n_control(run)) + sum(_missing(run, removals, n_models).values())


def faithfulness_check(run: Run, pc: int, k: int, *, n_models: int = DEFAULT_MODELS, sides=SIDES,
                       n_group: int = DEFAULT_GROUP, n_control: int = DEFAULT_N_CONTROL, device: str = "auto",
                       progress: Progress | None = None) -> dict:
    """App. J for component `pc`: retrain without the top-k of each side and report mean margin changes.

    The change of a target is (mean margin of the retrained models) − (mean margin of the control models
    trained on the whole training set; at least n_control of them, trained first if the run has fewer).
    Reported per removal side for three groups of test targets: the n_group most positive projections
    onto the component, the n_group most negative, and all.
    progress counts the models to train, controls and retrains together ("model"; 0 when all are stored).
    """
    removals = _validated_removals(run, pc, k, n_models, sides)
    have_control = _n_control(run)
    n_control = max(n_control, have_control)
    missing = _missing(run, removals, n_models)
    total = n_control - have_control + sum(missing.values())
    if progress:
        progress(0, total, "model")
    ensure_control(run, n_control, device=device, progress=offset(progress, 0, total))
    done = n_control - have_control
    control = control_mean(run)
    n_group = max(1, min(n_group, run.n_test // 3))
    groups = target_groups(np.asarray(pca_projections(run)[run.n_train:, pc]), n_group)
    data = retraining.training_data(run, device) if any(missing.values()) else None
    result = {"pc": pc, "k": k, "n_models": n_models, "n_group": n_group, "n_control": n_control, "sides": {}}
    for side, removed in removals.items():
        margins = retrain_without(run, removed, n_models, data=data, device=device, progress=offset(progress, done, total),
                                  meta={"pc": pc, "k": k, "side": side})
        done += missing[side]
        shift = margins.mean(axis=0, dtype=np.float64) - control
        key = removal_request(run, removed, n_models).key
        result["sides"][side] = {"removed": removed.tolist(), "file": COUNTERFACTUAL.relpath(key=key),
                                 "shift": group_shifts(shift[run.n_train:], groups)}
    return result


def stored_checks(run: Run) -> list[dict]:
    """Every stored retrain of this run: its request (pc, k, side), its model count, and whether its removal
    set is still the one the run's current PCA gives (a rerun of `analyze` can change the components)."""
    components = pca_components(run)
    out = []
    for meta in retrain_store.summaries(run):
        if meta.get("stream") != FAITHFULNESS_STREAM or "faithfulness" not in meta:
            continue
        check = meta["faithfulness"]
        current = check["pc"] < len(components) and np.array_equal(
            component_extremes(np.asarray(components[check["pc"]]), check["k"], check["side"]), meta["remove"])
        out.append(dict(check, n_models=int(meta["n_models"]), file=COUNTERFACTUAL.relpath(key=meta["key"]), current=bool(current)))
    return out
