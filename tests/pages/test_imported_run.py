"""The dashboard on a run imported from a datamodels-data release (masks and margins read in place)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from backend.datamodels.queries import top_weights
from backend.store.run_dir import Run
from backend.store.schema import MARGINS, MASKS, WEIGHTS
from precompute.cli import main
from tests.importers.test_release import CLASSES, HELDOUT, N_TEST, N_TRAIN, PCT, write_release
from tests.pages import test_apptest
from tests.pages.test_apptest import grid, title

app = test_apptest.app  # the pages' AppTest fixture (server mode), shared rather than copied

RUN = "cifar10-dm50"


@pytest.fixture(scope="module")
def imported_root(tmp_path_factory):
    """A data dir whose runs/cifar10-dm50 is a small release imported and evaluated by the real CLI."""
    from tests.dataset_files import write_cifar10_binary

    root = tmp_path_factory.mktemp("imported")
    rng = np.random.default_rng(0)
    write_cifar10_binary(root / "cifar10", rng.integers(0, 256, (N_TRAIN, 32, 32, 3), dtype=np.uint8),
                         np.arange(N_TRAIN) % 10, rng.integers(0, 256, (N_TEST, 32, 32, 3), dtype=np.uint8),
                         np.arange(N_TEST) % 10, CLASSES)
    write_release(root / "release" / "cifar", np.random.default_rng(1))
    out = root / "data" / "runs" / RUN
    assert main(["import-datamodels-data", "--release", str(root / "release" / "cifar"), "--pct", str(PCT),
                 "--cifar-dir", str(root / "cifar10"), "--out", str(out), "--heldout-models", str(HELDOUT)]) == 0
    assert main(["eval", "--run", str(out), "--heldout", str(out / "heldout"), "--no-complexity"]) == 0
    return root / "data"


def test_overview_shows_the_imported_run_and_its_held_out_lds(app, imported_root):
    at = app(root=imported_root, run=RUN)
    assert not at.error
    shown = {m.label: m.value for m in at.metric}
    metrics = json.loads((imported_root / "runs" / RUN / "metrics.json").read_text())
    assert shown["Models"] == f"{Run(imported_root / 'runs' / RUN).manifest['n_models']}"
    assert shown["Mean test LDS"] == f"{metrics['lds']['test']['mean']:.3f}" and shown["Held-out models"] == str(HELDOUT)


def test_neighbours_and_quality_read_the_release_in_place(app, imported_root):
    run = Run(imported_root / "runs" / RUN)
    assert not MASKS.path(run.dir).exists() and not MARGINS.path(run.dir).exists()
    at = app("neighbours", root=imported_root, run=RUN, target="test:3")
    assert not at.error and title(at) == "Neighbours of test:3"
    positive, _ = top_weights(np.asarray(run.array(WEIGHTS))[N_TRAIN + 3], 12)
    assert sorted(grid(at, "positive")) == sorted(f"train:{j}" for j in positive)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Mean margin over models"] == f"{np.asarray(run.margins)[:, N_TRAIN + 3].astype(np.float64).mean():+.3f}"
    assert not app("quality", root=imported_root, run=RUN).error
