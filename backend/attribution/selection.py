"""Each method's main knob chosen on validation held-out models, so that the LDS reported is judged on others.

A comparison of methods is fair only if each runs at a sound setting, and a setting picked by the LDS it
is then reported with is tuned to the test set (issue 26). `select_setting` scores every setting of a
method's small grid (GRIDS), judges each by its LDS on the *validation* held-out models (the first N of
the held-out run, `methods-eval --validation-models N`) and returns the best; `methods-eval --select`
stores that setting's scores, and its reported `lds` comes from the held-out models after the first N,
which chose nothing.

The grids, and why each knob (the others stay at their defaults, `attribute`'s flags pin any of them):
  trak            the ridge λ, relative to tr(ΦᵀΦ)/d (trak.py: why a ridge). d and the ensemble size are
                  cost knobs: with the ridge a larger one does not lower LDS (README, "TRAK's ridge").
  influence       the damping of the last layer's exact solve. The CG solve over all parameters costs
                  about 9 minutes per setting on digits on 2 busy cores, so its damping is not searched.
                  The Hessian of softmax cross-entropy is singular (a shift of every class's logit), so the
                  grid starts above 0 for runs trained without weight decay.
  tracin          the number of checkpoints spread over training (1 = the final model alone).
  representation  the share of training images kept per target (the rest scored 0).
  ssl-esvm        the exemplar SVM's C.
The datamodels, diff-of-means and empirical-influence have no knob here (the datamodels' λ is chosen per
target by the fit stage).
"""
from __future__ import annotations

import numpy as np

from backend.attribution import methods
from backend.progress import Progress
from backend.store.run_dir import Run

GRIDS: dict[str, list[dict]] = {
    "trak": [{"damping": v} for v in (0.3, 1.0, 3.0)],
    "influence": [{"influence_params": "last", "damping": v} for v in (1e-5, 1e-4, 1e-3, 1e-2)],
    "tracin": [{"checkpoints": v} for v in (1, 5, 10, 30)],
    "representation": [{"top_fraction": v} for v in (0.01, 0.05, 0.2, 1.0)],
    "ssl-esvm": [{"c": v} for v in (0.001, 0.01, 0.1)],
}
# A knob's key in the method's config (meta.json), where it differs from its keyword.
CONFIG_KEYS = {"influence_params": "params", "c": "C"}


def setting_label(name: str, entry: dict) -> str:
    """A methods_eval.json entry's knobs as the Methods table shows them: the chosen setting, or (not searched)
    the grid's knobs as its config holds them; "—" for a method without a grid."""
    if "selection" in entry:
        setting, how = entry["selection"]["chosen"], " (chosen on validation)"
    elif name in GRIDS:
        setting = {key: entry["config"].get(CONFIG_KEYS.get(key, key)) for key in GRIDS[name][0]}
        how = ""
    else:
        return "—"
    return ", ".join(f"{key} {value:g}" if isinstance(value, (int, float)) else f"{key} {value}"
                     for key, value in setting.items()) + how


def select_setting(run: Run, heldout: Run, name: str, validation: slice, *, grid: list[dict] | None = None,
                   device: str = "auto", progress: Progress | None = None) -> dict:
    """Score method `name` at every setting of `grid` (default GRIDS[name]) and keep the highest mean LDS on
    the held-out run's models `validation` (rows of its masks and margins).

    Returns {"grid": [{"setting": options, "lds_validation": mean LDS or None}], "chosen": the best options,
    "validation_models": [start, stop)}. A setting the run cannot take (e.g. more checkpoints than epochs) is
    left out. Scores are judged a block of test targets at a time and never stored.
    """
    from backend.attribution.yardsticks import mean_finite, rows_lds

    settings = []
    for setting in GRIDS[name] if grid is None else grid:
        try:
            settings.append((setting, methods.make(name, run, device=device, **setting)))
        except ValueError:  # the run cannot take this setting (the method names why); others remain
            continue
    points = []
    if progress:
        progress(0, len(settings), "setting")
    for s, (setting, method) in enumerate(settings):
        method.prepare(None if progress is None else
                       lambda done, of, _unit, s=s: progress(s + (done / of if of else 1) / 2, len(settings), "setting"))
        points.append({"setting": setting,
                       "lds_validation": mean_finite(rows_lds(method.score, heldout, run.n_train, validation))})
        if progress:
            progress(s + 1, len(settings), "setting")
    best = max(points, key=lambda p: -np.inf if p["lds_validation"] is None else p["lds_validation"])
    return {"grid": points, "chosen": best["setting"],
            "validation_models": [validation.start or 0, validation.stop]}


def select_and_attribute(run: Run, heldout: Run, names: list[str], validation_models: int, *, device: str = "auto",
                         progress: Progress | None = None) -> dict[str, dict]:
    """select_setting for each method of `names` that has a grid, on held-out models 0..validation_models-1,
    then its scores at the chosen setting stored by `attribute` (unless the stored ones have its config).

    Returns {method: select_setting's record}, for evaluate_methods to store beside the test LDS.
    progress counts one step per method ("method").
    """
    from backend.attribution import store
    from backend.attribution.compute import attribute

    chosen = {}
    searched = [name for name in names if name in GRIDS]
    if progress:
        progress(0, len(searched), "method")
    for m, name in enumerate(searched):
        within = None if progress is None else (lambda done, of, _unit, m=m: progress(m + (done / of if of else 1) / 2,
                                                                                       len(searched), "method"))
        chosen[name] = select_setting(run, heldout, name, slice(0, validation_models), device=device, progress=within)
        method = methods.make(name, run, device=device, **chosen[name]["chosen"])
        if name not in store.available(run) or store.read_meta(run, name)["config"] != method.config:
            attribute(run, method, progress=None if progress is None else
                      (lambda done, of, _unit, m=m: progress(m + 0.5 + (done / of if of else 1) / 2, len(searched), "method")))
        if progress:
            progress(m + 1, len(searched), "method")
    return chosen
