"""Shared fixtures: tiny real runs built in seconds by the real CLI."""
from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Tiny but real: few models, few epochs, a narrow MLP.
# fp32 pinned: tiny runs come out the same on every CI machine (tests/training/test_precision.py covers bf16)
# The selection Chromium sends for a click on an image grid's image, recorded by tests/pages/test_browser.py
# (test_a_click_on_an_image_sends_the_recorded_selection checks a live click still sends it); AppTests replay it.
RECORDED_SELECTION = ROOT / "tests" / "pages" / "chromium_selection.json"
FAST_TRAIN = ["--epochs", "3", "--hidden", "16", "--precision", "fp32"]
# The browser tests (tests/pages/test_browser.py) drive Debian's Chromium through Playwright (browser downloads do not
# work here); DATAMODELS_CHROMIUM points them at another binary. Without one they skip with NO_CHROMIUM as the reason,
# and the session's summary says so loudly (pytest_terminal_summary).
CHROMIUM = Path(os.environ.get("DATAMODELS_CHROMIUM", "/usr/bin/chromium"))
NO_CHROMIUM = f"no Chromium at {CHROMIUM}"
ENABLE_BROWSER_TESTS = "sudo apt-get install chromium (.ci/run does), or set DATAMODELS_CHROMIUM to a Chromium binary"


_CASE_COUNTS: Counter = Counter()


def record_count(matrix: str, outcome: str) -> None:
    """Count one case of a fuzz matrix; the counts are printed at the end of the session."""
    _CASE_COUNTS[matrix, outcome] += 1


def pytest_terminal_summary(terminalreporter) -> None:
    browser_skips = [r for r in terminalreporter.stats.get("skipped", []) if NO_CHROMIUM in str(r.longrepr)]
    if browser_skips:
        terminalreporter.section("browser tests skipped", red=True, bold=True)
        terminalreporter.write_line(f"{len(browser_skips)} browser tests skipped: {NO_CHROMIUM}. To run them: "
                                    f"{ENABLE_BROWSER_TESTS}.", red=True, bold=True)
    if _CASE_COUNTS:
        terminalreporter.section("fuzz case counts")
        for (matrix, outcome), n in sorted(_CASE_COUNTS.items()):
            terminalreporter.write_line(f"{matrix}: {n} cases {outcome}")


def run_cli(*args: str, check: bool = True, timeout: float = 600,
            in_process: bool = False) -> subprocess.CompletedProcess:
    """Run `python -m precompute ARGS` in a fresh process, as a user would. With `in_process`, the same main() runs
    in this process (no timeout), without a fresh interpreter's imports (5.4 s of CPU for a tiny `train` here, 0.05
    in-process): for fixtures that build a run, and tests that ask about a verb's files or output, not about its
    process (kills, the one line a refusal prints, exit codes); every verb still runs fresh in some test."""
    if in_process:
        import contextlib
        import io

        from precompute.cli import main

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(map(str, args)))
            except SystemExit as exc:  # argparse's exit on a bad flag
                code = exc.code
        proc = subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())
    else:
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        proc = subprocess.run([sys.executable, "-m", "precompute", *map(str, args)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"precompute {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def open_app(params: dict, page: str | None = None, *, timeout: float = 60, check: bool = True,
             user: str | None = None):
    """An AppTest that has run app.py with these query parameters, then `pages/<page>.py` through the shell,
    as a browser opening a shared link does; with `check`, no script run may have raised. `user` is the
    email of an st.login (OIDC) user who is logged in."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=timeout)
    if user is not None:
        at.user = {"is_logged_in": True, "email": user, "email_verified": True}
    at.query_params.update(params)
    at.run()
    if page is not None:
        at.switch_page(f"pages/{page}.py").run()
    if check:
        assert not at.exception, at.exception
    return at



def image_grids(at) -> dict[str, tuple[str, list[str]]]:
    """Every image grid (widgets.image_grid.image_grid) an AppTest drew: its key → (the widget key, the target
    names of its images in reading order), read from the figure the browser gets (each cell's invisible
    point carries the image's column; its caption's first line names it)."""
    import json

    grids = {}
    for chart in at.get("plotly_chart"):
        figure = json.loads(chart.proto.spec)
        if figure["data"][0]["type"] == "image":
            widget = chart.proto.id.split("-", 2)[2]  # "$$ID-<hash>-<key>"; image_grid appends "-<digest>"
            grids[widget.rsplit("-", 1)[0]] = (widget, [t.split("<br>")[0] for t in figure["data"][1]["text"]])
    return grids


def plotly_charts(at) -> list:
    """The plotly charts of an AppTest that are not image grids."""
    import json

    return [c for c in at.get("plotly_chart") if json.loads(c.proto.spec)["data"][0]["type"] != "image"]


def click_image(at, grid: str, name: str, n_train: int):
    """Click image `name` of grid `grid` as Chromium does: the recorded selection (RECORDED_SELECTION) of its
    cell's point, whose customdata is the image's margins column. Returns the AppTest after the rerun."""
    widget, names = image_grids(at)[grid]
    split, index = name.split(":")
    column = int(index) + (n_train if split == "test" else 0)
    at.session_state[widget] = recorded_selection([(column, names.index(name))])
    return at.run()


def recorded_selection(points: list[tuple[int, int]]) -> dict:
    """The recorded Chromium selection with its one point replaced by `points` ((customdata, point index) pairs)."""
    import copy
    import json

    recorded = json.loads(RECORDED_SELECTION.read_text())
    template = recorded["selection"]["points"][0]
    selection = copy.deepcopy(recorded)
    selection["selection"]["points"] = [dict(template, customdata=c, point_index=i, point_number=i) for c, i in points]
    selection["selection"]["point_indices"] = [i for _, i in points]
    return selection


@pytest.fixture(autouse=True, scope="session")
def loopback_server_address():
    """AppTests run in this process without a server: give them the address `make run` serves on, so the
    dashboard is the local, unauthenticated one (tests/pages/test_auth.py sets other addresses itself)."""
    from streamlit import config

    config.set_option("server.address", "127.0.0.1")
    yield
    config.set_option("server.address", None)


@pytest.fixture(autouse=True, scope="session")
def pages_run_through_the_shell():
    """Every AppTest script run goes through app.py, as a server runs it (open_app's switch_page included).

    Streamlit 1.67's AppTest sets PagesManager.uses_pages_directory to None before each run, and PagesManager
    then sets it from whether a folder named pages/ sits beside the main script, whatever it holds (so moving
    the shared components to widgets/ did not change it). True makes the script runner take Streamlit's old
    pages/-folder mode (`_mpa_v1`): after switch_page the page runs alone, without app.py's sidebar, run picker
    and error handling. A server leaves that mode for good once app.py calls st.navigation; this does the same.
    """
    from streamlit.runtime.pages_manager import PagesManager

    detect = PagesManager.__init__

    def server_mode(self, *args, **kwargs):
        detect(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(PagesManager, "__init__", server_mode)
        yield


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A digits run of 60 fast models (alpha 0.5, seed 0), trained once per test session; its shards are
    kept (the tests of shards and of prediction counts read them)."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    run_cli("train", "--dataset", "digits", "--alpha", "0.5", "--models", "60", "--seed", "0",
            "--out", out, "--batch-models", "30", "--keep-shards", *FAST_TRAIN, in_process=True)
    return out


@pytest.fixture(scope="session")
def structure_run(tmp_path_factory) -> Path:
    """A small digits run with scikit-learn LASSO datamodels and its structure analysis (tests/structure).

    300 train / 150 test digits (an npz dataset), 100 models; each target's datamodel is sklearn's Lasso
    on the masks (a training target only on the models that did not see it, eq. 9 of the paper); then
    `analyze_structure` with 10 components and 3 clusters per class. About half a minute.
    """
    import numpy as np
    from sklearn.datasets import load_digits

    from backend.store.run_dir import Run
    from backend.structure.analyze import analyze_structure
    from tests.oracles import sklearn_datamodels

    tmp = tmp_path_factory.mktemp("structure")
    digits = load_digits()
    pick = np.random.default_rng(0).permutation(len(digits.target))[:450]
    np.savez(tmp / "digits450.npz", images=np.round(digits.images[pick] * 255 / 16).astype(np.uint8),
             labels=digits.target[pick], split=np.where(np.arange(450) < 300, "train", "test"))
    out = tmp / "run"
    run_cli("train", "--dataset", f"npz:{tmp / 'digits450.npz'}", "--models", "100", "--out", out,
            "--epochs", "20", "--hidden", "32", in_process=True)
    masks, margins = np.load(out / "masks.npy"), np.load(out / "margins.npy")
    np.save(out / "weights.npy", sklearn_datamodels(masks, margins, np.arange(margins.shape[1]), 0.01)[0])
    np.save(out / "lam.npy", np.full(margins.shape[1], 0.01, dtype=np.float32))
    analyze_structure(Run(out), n_components=10, k_per_class=3, device="cpu")
    return out


@pytest.fixture(scope="session")
def counterfactual_run(tiny_run, tmp_path_factory) -> Path:
    """A private copy of tiny_run with test-target LASSO datamodels and 8 control models (tests/counterfactuals).

    One multi-output scikit-learn Lasso on the 60 masks gives every *test* target a datamodel; training
    targets keep empty ones (the counterfactual tests ask about test targets only). A few seconds.
    """
    import shutil

    import numpy as np

    from backend.training.control import ensure_control
    from backend.store.run_dir import Run
    from tests.oracles import sklearn_datamodels

    out = tmp_path_factory.mktemp("runs") / "counterfactual"
    shutil.copytree(tiny_run, out)
    masks, margins = np.load(out / "masks.npy"), np.load(out / "margins.npy")
    n_train = masks.shape[1]
    weights = np.zeros((margins.shape[1], n_train), dtype=np.float32)
    bias = margins.mean(axis=0)
    weights[n_train:], bias[n_train:] = sklearn_datamodels(masks, margins, np.arange(n_train, margins.shape[1]), 0.05,
                                                           max_iter=2000)
    np.save(out / "weights.npy", weights)
    np.save(out / "bias.npy", bias.astype(np.float32))
    np.save(out / "lam.npy", np.full(len(bias), 0.05, dtype=np.float32))
    ensure_control(Run(out), n_control=8, device="cpu")
    return out


@pytest.fixture
def cf_run(counterfactual_run, tmp_path) -> Path:
    """A fresh copy of counterfactual_run for a test that writes to the run (log, support results)."""
    import shutil
    return Path(shutil.copytree(counterfactual_run, tmp_path / "run"))


@pytest.fixture(scope="session")
def dashboard_data_dir(tiny_run, tmp_path_factory) -> Path:
    """A DATAMODELS_DATA_DIR for the dashboard tests (tests/dashboard): runs/ holds four runs.

    - `digits-tiny`: a copy of tiny_run with datamodels, 30 held-out models (seed 1) in heldout/ and the
      real eval stage's metrics.json and lds.npy (`eval --no-complexity`). The datamodels are one
      multi-output scikit-learn Lasso (λ = 0.1) on all 60 models, every target but train:0-4, which are
      left unfitted (zero weights, NaN bias and λ, as save_datamodels leaves them): the pages need the
      contract's files and shapes, not the paper's λ selection, and backend.datamodels.fit' path fit takes
      minutes at this size. About half a minute with the held-out run. Then the real analyze stage, kept
      small (8 control models, 10 components, 3 clusters per class; about 10 s): control margins, structure/
      and leakage/ for the PCA, Clusters, Counterfactuals, Review and Leakage results pages.
      Then attribution scores (`add_fixture_attributions`): `datamodels` by the real attribute verb, a second
      method's scores written through the store, and the real methods-eval with tiny budgets.
    - `no-datamodels`: tiny_run itself (masks and margins only).
    - `truncated`: digits-tiny (without heldout/) with weights.npy cut short.
    - `bad-manifest`: a manifest.json that is not JSON.
    """
    import json
    import shutil

    import numpy as np

    from tests.oracles import sklearn_datamodels

    root = tmp_path_factory.mktemp("dashboard")
    runs = root / "runs"
    runs.mkdir()
    fitted = runs / "digits-tiny"
    shutil.copytree(tiny_run, fitted)
    masks, margins = np.load(fitted / "masks.npy"), np.load(fitted / "margins.npy")
    n_train, n_targets = masks.shape[1], margins.shape[1]
    columns = np.arange(5, n_targets)
    weights = np.zeros((n_targets, n_train), dtype=np.float32)
    bias, lam = np.full(n_targets, np.nan, dtype=np.float32), np.full(n_targets, np.nan, dtype=np.float32)
    weights[columns], bias[columns] = sklearn_datamodels(masks, margins, columns, 0.1, eq9=False, tol=1e-3, max_iter=2000)
    lam[columns] = 0.1
    np.save(fitted / "weights.npy", weights)
    np.save(fitted / "bias.npy", bias)
    np.save(fitted / "lam.npy", lam)
    run_cli("train", "--dataset", "digits", "--alpha", "0.5", "--models", "30", "--seed", "1",
            "--out", fitted / "heldout", "--batch-models", "30", *FAST_TRAIN, in_process=True)
    run_cli("eval", "--run", fitted, "--heldout", fitted / "heldout", "--no-complexity", in_process=True)
    run_cli("analyze", "--run", fitted, "--n-control", "8", "--components", "10", "--clusters-per-class", "3",
            "--device", "cpu", in_process=True)
    add_fixture_attributions(fitted)
    (runs / "no-datamodels").symlink_to(tiny_run, target_is_directory=True)
    truncated = runs / "truncated"
    shutil.copytree(fitted, truncated, ignore=shutil.ignore_patterns("heldout"))
    with open(truncated / "weights.npy", "r+b") as f:
        f.truncate(4096)
    (runs / "bad-manifest").mkdir()
    (runs / "bad-manifest" / "manifest.json").write_text(json.dumps({"dataset": "x"})[:-3])
    return root


class PermutedScores:
    """A test fixture's second attribution method (not a real one): the datamodel rows with the training
    columns shuffled by a fixed permutation, so its top images differ from the datamodels' ones."""

    name = "fixture-permuted"
    config = {"permutation_seed": 0}
    models = {"kind": "alpha-subset", "n_models": 60, "trained": 0}

    def __init__(self, run):
        import numpy as np

        self.run = run
        self.order = np.random.default_rng(0).permutation(run.n_train)

    def prepare(self, progress=None) -> None:
        from backend.store.schema import WEIGHTS

        self.weights = self.run.array(WEIGHTS)

    def score(self, rows):
        import numpy as np

        n = self.run.n_train
        return np.asarray(self.weights[n + rows.start:n + rows.stop][:, self.order], dtype=np.float32)

    def self_scores(self):
        import numpy as np

        return np.zeros(self.run.n_train, dtype=np.float32)  # the fixture's dataset has no planted label noise


def add_fixture_attributions(run_dir: Path) -> None:
    """Stored scores of two methods and their methods_eval.json in a fitted run with heldout/ and control models.

    The fixture's datamodels come from scikit-learn, not the fit stage, so fit.json is written here (saying so)
    for the `datamodels` method to read; methods-eval runs on 3 targets, 2 models per step and 2 steps.
    """
    import json

    from backend.attribution.compute import attribute
    from backend.store.run_dir import Run

    run = Run(run_dir)
    (run_dir / "fit.json").write_text(json.dumps({"n_targets": run.n_targets - 5, "targets": "all but train:0-4",
                                                  "iterations": {}, "solver": "scikit-learn Lasso (test fixture)"}))
    run_cli("attribute", "--run", run_dir, "--method", "datamodels", in_process=True)
    attribute(run, PermutedScores(run))
    run_cli("methods-eval", "--run", run_dir, "--targets", "3", "--models", "2", "--budget", "2",
            "--device", "cpu", in_process=True)


@pytest.fixture(scope="session")
def leakage_data_dir(tmp_path_factory) -> Path:
    """A data directory whose runs/planted is a digits run with 12 planted exact copies, analysed for leaks.

    `plant-leaks --noise 0 --no-shift` makes the copies exact, so the feature baseline must find each
    at rank 1. 60 fast models; test-target datamodels from one multi-target scikit-learn Lasso; the
    control model (its features are the baseline) is trained by analyze_leakage itself.
    """
    from backend.leakage.analysis import analyze_leakage
    from backend.store.run_dir import Run
    from tests.oracles import save_test_target_lasso

    root = tmp_path_factory.mktemp("leakage")
    npz = root / "planted.npz"
    run_cli("plant-leaks", "--dataset", "digits", "--n", "12", "--noise", "0", "--no-shift", "--seed", "3",
            "--out", npz, in_process=True)
    out = root / "runs" / "planted"
    run_cli("train", "--dataset", f"npz:{npz}", "--alpha", "0.5", "--models", "60", "--seed", "0",
            "--out", out, "--batch-models", "30", *FAST_TRAIN, in_process=True)
    save_test_target_lasso(out, alpha=0.05)
    analyze_leakage(Run(out), device="cpu")
    return root


# Two of the real train-test near-duplicates of Fashion-MNIST, (test, train) positions in the official files, each
# the same product photo twice: near_duplicates(radius=10) over all 60,000 × 10,000 pairs finds them among 25
# (README, "Datasets"); the second-nearest training images stand 27.9 and 39.3 grey levels away.
FASHION_MNIST_PAIRS = ((4998, 13360), (7799, 14928))
FASHION_SLICE = (2000, 500)  # the first training and test images the slice takes, beside the pairs


def require_fashion_mnist() -> Path:
    """Debian's Fashion-MNIST folder. Without dataset-fashion-mnist the test skips, except in CI (CI=true), where
    .ci/run installs the package and the test must run."""
    from backend.datasets.fashion_mnist import DEBIAN_DIR

    if not DEBIAN_DIR.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{DEBIAN_DIR} is missing: .ci/run installs dataset-fashion-mnist")
        pytest.skip(f"no {DEBIAN_DIR}: apt-get install dataset-fashion-mnist (.ci/run does)")
    return DEBIAN_DIR


@pytest.fixture(scope="session")
def fashion_mnist_slice(tmp_path_factory) -> tuple[Path, list[tuple[int, int]]]:
    """A fixed slice of the real Fashion-MNIST files as an `idx:DIR` dataset (gzipped IDX files and class_names.txt):
    the first 2,000 training and 500 test images plus both images of each pair in FASHION_MNIST_PAIRS, in file order.
    Returns (the folder, the pairs as (test, train) positions in the slice)."""
    return write_fashion_slice(tmp_path_factory.mktemp("fashion-mnist-slice"), *FASHION_SLICE)


def write_fashion_slice(out: Path, n_train: int, n_test: int) -> tuple[Path, list[tuple[int, int]]]:
    """The first n_train training and n_test test images of the real Fashion-MNIST files plus both images of each
    pair in FASHION_MNIST_PAIRS, in file order, as an `idx:DIR` dataset in `out`. Returns (out, the pairs as
    (test, train) positions in the slice)."""
    import numpy as np

    from backend.datasets import load_dataset
    from backend.datasets import idx
    from backend.datasets.fashion_mnist import CLASS_NAMES
    from tests.dataset_files import write_idx

    require_fashion_mnist()
    ds = load_dataset("fashion-mnist")
    train = np.union1d(np.arange(n_train), [t for _, t in FASHION_MNIST_PAIRS])
    test = np.union1d(np.arange(n_test), [t for t, _ in FASHION_MNIST_PAIRS])
    for name, array in ((idx.TRAIN_IMAGES, ds.train_images[train, ..., 0]), (idx.TRAIN_LABELS, ds.train_labels[train]),
                        (idx.TEST_IMAGES, ds.test_images[test, ..., 0]), (idx.TEST_LABELS, ds.test_labels[test])):
        write_idx(out / f"{name}.gz", array.astype(np.uint8))
    (out / idx.CLASS_NAMES_FILE).write_text("".join(f"{name}\n" for name in CLASS_NAMES))
    pairs = [(int(np.searchsorted(test, a)), int(np.searchsorted(train, b))) for a, b in FASHION_MNIST_PAIRS]
    return out, pairs


@pytest.fixture(scope="session")
def fashion_slice_data_dir(fashion_mnist_slice, tmp_path_factory) -> Path:
    """A data directory whose runs/fashion-slice is a run on the Fashion-MNIST slice, analysed for leaks.

    300 α = ½ models of a 32-unit MLP for 10 epochs (enough to memorise a training image, so a duplicate's own
    weight stands out); test-target datamodels from one multi-target scikit-learn Lasso; the control model
    (the feature baseline) is trained by analyze_leakage itself. About 20 s of 2 idle cores.
    """
    from backend.leakage.analysis import analyze_leakage
    from backend.store.run_dir import Run
    from tests.oracles import save_test_target_lasso

    folder, _ = fashion_mnist_slice
    root = tmp_path_factory.mktemp("fashion")
    out = root / "runs" / "fashion-slice"
    run_cli("train", "--dataset", f"idx:{folder}", "--arch", "mlp", "--alpha", "0.5", "--models", "300",
            "--seed", "0", "--out", out, "--batch-models", "150", "--epochs", "10", "--hidden", "32", in_process=True)
    save_test_target_lasso(out, alpha=0.1)
    analyze_leakage(Run(out), device="cpu")
    return root
