"""Each method's knob chosen on validation held-out models and judged on the others (issue 26)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.stats import spearmanr

from backend.attribution import base, selection, store, yardsticks
from backend.attribution.representation import Representation
from backend.store.artifacts import read_json
from backend.store.run_dir import Run
from backend.store.schema import METHODS_EVAL, WEIGHTS
from tests.conftest import run_cli

RUN = "digits-tiny"


class NoisyWeights:
    """A fixture method with one knob: the run's datamodel weights plus `noise` times a fixed random matrix."""
    name = "fixture-knob"

    def __init__(self, run: Run, device: str = "auto", noise: float = 0.0):
        if noise < 0:
            raise ValueError("noise must be non-negative")
        self.run, self.config = run, {"noise": noise}
        self.models = {"kind": "fixture", "n_models": 1, "trained": 0}

    def prepare(self, progress=None) -> None:
        n = self.run.n_train
        rng = np.random.default_rng(0)
        weights = np.asarray(self.run.array(WEIGHTS)[n:], dtype=np.float64)
        self.scores = weights + self.config["noise"] * weights.std() * rng.normal(size=weights.shape)

    def score(self, rows: slice) -> np.ndarray:
        return self.scores[rows].astype(np.float32)

    def self_scores(self) -> np.ndarray:
        return np.zeros(self.run.n_train, dtype=np.float32)


def by_hand(scores: np.ndarray, heldout: Run, n_train: int, models: slice) -> float:
    """Mean over test targets of scipy's Spearman of Σ_{i∈S} score_i against the margin, on held-out rows `models`."""
    x = heldout.masks[models].astype(np.float64)
    with warnings.catch_warnings():  # a target whose margin or prediction is constant has no Spearman (NaN, skipped)
        warnings.simplefilter("ignore")
        rhos = [spearmanr(x @ scores[j], heldout.margins[models, n_train + j]).statistic for j in range(len(scores))]
    return float(np.nanmean(rhos))


def test_the_setting_chosen_is_the_best_on_the_validation_models_alone(dashboard_data_dir, monkeypatch):
    monkeypatch.setitem(base.METHODS, NoisyWeights.name, NoisyWeights)  # registered for this test only: the registry is global
    run = Run(dashboard_data_dir / "runs" / RUN)
    heldout = Run(run.dir / "heldout")
    grid = [{"noise": 30.0}, {"noise": 0.0}, {"noise": 3.0}, {"noise": -1.0}]  # the last one the method refuses
    record = selection.select_setting(run, heldout, "fixture-knob", slice(0, 12), grid=grid, device="cpu")
    assert [p["setting"] for p in record["grid"]] == grid[:3]
    for point in record["grid"]:
        method = NoisyWeights(run, **point["setting"])
        method.prepare()
        scores = method.score(slice(0, run.n_test)).astype(np.float64)
        assert point["lds_validation"] == pytest.approx(by_hand(scores, heldout, run.n_train, slice(0, 12)), abs=1e-6)
        assert point["lds_validation"] != pytest.approx(by_hand(scores, heldout, run.n_train, slice(12, None)), abs=1e-6)
    assert record["chosen"] == max(record["grid"], key=lambda p: p["lds_validation"])["setting"] == {"noise": 0.0}
    assert record["validation_models"] == [0, 12]


def test_rows_lds_scores_a_block_at_a_time_as_method_lds_scores_the_whole(dashboard_data_dir):
    run = Run(dashboard_data_dir / "runs" / RUN)
    heldout = Run(run.dir / "heldout")
    scores = np.asarray(store.read_scores(run, "datamodels"))
    asked = []

    def rows(r: slice) -> np.ndarray:
        asked.append(r)
        return scores[r]
    np.testing.assert_array_equal(yardsticks.rows_lds(rows, heldout, run.n_train, slice(3, None)),
                                  yardsticks.method_lds(scores, heldout, run.n_train, slice(3, None)))
    assert sum(r.stop - r.start for r in asked) == run.n_test  # every test target scored once


def test_methods_eval_select_stores_the_chosen_setting_and_reports_its_test_lds(cf_run, dashboard_data_dir):
    run, heldout = Run(cf_run), Run(dashboard_data_dir / "runs" / RUN / "heldout")
    bad = run_cli("methods-eval", "--run", run.dir, "--heldout", heldout.dir, "--select", "--methods", "representation",
                  "--modes", "none", "--device", "cpu", check=False)
    assert bad.returncode == 2 and "--validation-models" in bad.stderr
    run_cli("attribute", "--run", run.dir, "--method", "representation", "--top-fraction", "0.5", "--device", "cpu",
            in_process=True)
    assert store.read_meta(run, "representation")["config"]["top_fraction"] == 0.5  # a pinned knob holds
    run_cli("methods-eval", "--run", run.dir, "--heldout", heldout.dir, "--select", "--methods", "representation",
            "--validation-models", "12", "--modes", "none", "--device", "cpu", in_process=True)
    entry = read_json(run.dir, METHODS_EVAL)["methods"]["representation"]
    fractions = [s["top_fraction"] for s in selection.GRIDS["representation"]]
    assert [p["setting"]["top_fraction"] for p in entry["selection"]["grid"]] == fractions
    validation = {}
    for fraction in fractions:
        method = Representation(run, top_fraction=fraction)
        method.prepare()
        validation[fraction] = by_hand(method.score(slice(0, run.n_test)).astype(np.float64), heldout, run.n_train,
                                       slice(0, 12))
    assert [p["lds_validation"] for p in entry["selection"]["grid"]] == pytest.approx(list(validation.values()), abs=1e-6)
    best = max(validation, key=validation.get)
    assert entry["selection"]["chosen"] == {"top_fraction": best}
    assert store.read_meta(run, "representation")["config"]["top_fraction"] == best == entry["config"]["top_fraction"]
    stored = np.asarray(store.read_scores(run, "representation"), dtype=np.float64)
    assert entry["lds"]["mean"] == pytest.approx(by_hand(stored, heldout, run.n_train, slice(12, None)), abs=1e-6)
    assert entry["lds_validation"]["mean"] == pytest.approx(validation[best], abs=1e-6)
    [row] = [row for row in yardsticks.table_rows(read_json(run.dir, METHODS_EVAL)) if row["method"] == "representation"]
    assert row["setting"] == f"top_fraction {best:g} (chosen on validation)"
    # A later methods-eval without --select keeps the record while the scores and the split stand.
    run_cli("methods-eval", "--run", run.dir, "--heldout", heldout.dir, "--methods", "representation",
            "--validation-models", "12", "--modes", "none", "--device", "cpu", in_process=True)
    assert read_json(run.dir, METHODS_EVAL)["methods"]["representation"]["selection"] == entry["selection"]


def test_a_setting_not_searched_is_read_from_the_methods_config():
    entry = {"config": {"params": "all", "damping": 0.01, "solver": "cg(40, tol 1e-05)"}}
    assert selection.setting_label("influence", entry) == "influence_params all, damping 0.01"
    assert selection.setting_label("ssl-esvm", {"config": {"C": 0.1, "score": "svm"}}) == "c 0.1"
    assert selection.setting_label("diff-of-means", {"config": {"n_models": 5000}}) == "—"
    chosen = {"selection": {"chosen": {"checkpoints": 30}, "grid": []}, "config": {"checkpoints": 30}}
    assert selection.setting_label("tracin", chosen) == "checkpoints 30 (chosen on validation)"
