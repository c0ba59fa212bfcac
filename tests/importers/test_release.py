"""The datamodels-data importer on a small release written in exactly the release's format (own generator)."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from backend.importers import release as rel
from backend.datasets.cifar10 import TRAIN_FILES
from tests.dataset_files import write_cifar10_binary
from backend.store import external
from backend.store.errors import RunError
from backend.store.run_dir import Run
from backend.store.schema import BIAS, EXTERNAL, LAM, LDS, MARGINS, MASKS, WEIGHTS, WEIGHTS_BY_TRAIN
from precompute.cli import main

N_TRAIN, N_TEST, N_MODELS, HELDOUT, PCT = 40, 20, 700, 200, 50
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def write_release(root: Path, rng, *, parts=("data", "train", "test"), n_models=N_MODELS) -> dict:
    """A release folder as the datamodels-data README lays it out: bool masks, float16 margins of models whose
    margins follow the published (standardised-mask) datamodels plus noise, and the datamodels as torch.save dicts.

    Returns the arrays written, so tests compare against them."""
    masks = np.zeros((n_models, N_TRAIN), dtype=bool)
    for m in range(n_models):
        masks[m, rng.choice(N_TRAIN, N_TRAIN * PCT // 100, replace=False)] = True
    fit = masks[:n_models - HELDOUT]
    mu, sigma = fit.mean(axis=0), fit.std(axis=0)  # fast_l1's calc_stats: population std of the fit models
    weight = {"train": rng.normal(0, 0.4, (N_TRAIN, N_TRAIN)) * (rng.random((N_TRAIN, N_TRAIN)) < 0.3),
              "test": rng.normal(0, 0.4, (N_TRAIN, N_TEST)) * (rng.random((N_TRAIN, N_TEST)) < 0.3)}
    bias = {"train": rng.normal(1, 0.5, N_TRAIN), "test": rng.normal(1, 0.5, N_TEST)}
    standardized = (masks - mu) / sigma
    margins = {s: (standardized @ weight[s] + bias[s] + rng.normal(0, 0.05, (n_models, len(bias[s])))).astype(np.float16)
               for s in ("train", "test")}
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "datamodels").mkdir(exist_ok=True)
    if "data" in parts:
        np.save(root / "data" / f"train_masks_{PCT}pct.npy", masks)
        np.save(root / "data" / f"train_margins_{PCT}pct.npy", margins["train"])
        np.save(root / "data" / f"test_margins_{PCT}pct.npy", margins["test"])
    for split in ("train", "test"):
        if split in parts:
            torch.save({"weight": torch.tensor(weight[split], dtype=torch.float32),
                        "bias": torch.tensor(bias[split], dtype=torch.float32),
                        "lam": torch.full((len(bias[split]),), 0.01)}, root / "datamodels" / f"{split}_{PCT}pct.pt")
    return {"masks": masks, "margins": margins, "weight": weight, "bias": bias, "mu": mu, "sigma": sigma}


@pytest.fixture(scope="module")
def cifar(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    rng = np.random.default_rng(0)
    write_cifar10_binary(root, rng.integers(0, 256, (N_TRAIN, 32, 32, 3), dtype=np.uint8), np.arange(N_TRAIN) % 10,
                         rng.integers(0, 256, (N_TEST, 32, 32, 3), dtype=np.uint8), np.arange(N_TEST) % 10, CLASSES)
    return root


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("release") / "cifar"
    return root, write_release(root, np.random.default_rng(1))


def run_import(release_dir: Path, cifar_dir: Path, out: Path, *extra: str) -> int:
    return main(["import-datamodels-data", "--release", str(release_dir), "--pct", str(PCT), "--cifar-dir",
                 str(cifar_dir), "--out", str(out), "--heldout-models", str(HELDOUT), *extra])


@pytest.fixture(scope="module")
def imported(release, cifar, tmp_path_factory) -> dict[str, Path]:
    """The release imported under both conventions (float32 weights)."""
    base = tmp_path_factory.mktemp("runs")
    outs = {}
    for convention in rel.CONVENTIONS:
        outs[convention] = base / convention
        assert run_import(release[0], cifar, outs[convention], "--convention", convention) == 0
    return outs


def test_raw_import_transposes_the_published_weights(release, imported):
    _, data = release
    run = Run(imported["raw"])
    weights = np.asarray(run.array(WEIGHTS))
    np.testing.assert_array_equal(weights[:N_TRAIN], data["weight"]["train"].astype(np.float32).T)
    np.testing.assert_array_equal(weights[N_TRAIN:], data["weight"]["test"].astype(np.float32).T)
    np.testing.assert_array_equal(run.array(WEIGHTS_BY_TRAIN), data["weight"]["test"].astype(np.float32))
    np.testing.assert_array_equal(run.array(BIAS), np.r_[data["bias"]["train"], data["bias"]["test"]].astype(np.float32))
    np.testing.assert_allclose(run.array(LAM), 0.01)


def test_masks_and_margins_are_the_release_rows_in_place(release, imported):
    root, data = release
    run, heldout = Run(imported["raw"]), Run(imported["raw"] / "heldout")
    n_fit = N_MODELS - HELDOUT
    full = np.hstack([data["margins"]["train"], data["margins"]["test"]])
    np.testing.assert_array_equal(run.masks, data["masks"][:n_fit])
    np.testing.assert_array_equal(np.asarray(run.margins), full[:n_fit])
    np.testing.assert_array_equal(heldout.masks, data["masks"][n_fit:])  # the held-out split is the last rows
    np.testing.assert_array_equal(np.asarray(heldout.margins), full[n_fit:])
    assert run.margins.dtype == np.float16 and run.margins.shape == (n_fit, N_TRAIN + N_TEST)
    np.testing.assert_array_equal(heldout.labels, run.labels)
    np.testing.assert_array_equal(heldout.images, run.images)
    # Not copied: the run holds no masks or margins file, and its masks map the release's file.
    assert not MASKS.path(run.dir).exists() and not MARGINS.path(run.dir).exists()
    assert Path(run.masks.filename) == root / "data" / f"train_masks_{PCT}pct.npy"
    manifest = run.manifest
    assert manifest["n_models"] == n_fit and manifest["imported"]["convention"] == "raw"
    assert manifest["imported"]["pct"] == PCT and len(manifest["imported"]["checksums"]) == 3
    assert "git_commit" in manifest and Run(heldout.dir).manifest["n_models"] == HELDOUT


def test_an_imported_run_is_not_topped_up_by_train(imported, capsys):
    assert main(["train", "--dataset", "digits", "--models", "2", "--out", str(imported["raw"])]) == 2
    assert "is an imported run: its models are the release's" in capsys.readouterr().err
    assert not MASKS.path(imported["raw"]).exists()


def test_standardized_weights_round_trip_to_the_published_ones(release, imported):
    _, data = release
    run = Run(imported["standardized"])
    w = np.asarray(run.array(WEIGHTS), dtype=np.float64)
    b = np.asarray(run.array(BIAS), dtype=np.float64)
    mu, sigma = data["mu"], data["sigma"]
    published_w = np.hstack([data["weight"]["train"], data["weight"]["test"]])  # features x targets
    published_b = np.r_[data["bias"]["train"], data["bias"]["test"]]
    np.testing.assert_allclose(w.T * sigma[:, None], published_w, rtol=1e-5, atol=1e-6)  # back: w = w_raw σ
    np.testing.assert_allclose(b + w @ mu, published_b, rtol=1e-5, atol=1e-5)  # back: b = b_raw + Σ w_raw μ
    # The raw form predicts what the published datamodels predict on standardised masks.
    x = data["masks"][-HELDOUT:]
    np.testing.assert_allclose(x @ w.T + b, ((x - mu) / sigma) @ published_w + published_b, rtol=1e-4, atol=1e-4)


def test_the_convention_check_prefers_the_true_convention(imported):
    for convention in rel.CONVENTIONS:
        check = Run(imported[convention]).manifest["imported"]["convention_check"]
        assert check["standardized"]["mse"] < 0.01 < check["raw"]["mse"]  # the release was generated standardised
        assert abs(check["standardized"]["mean_error"]) < 0.01
        assert check["models"] == HELDOUT and check["targets"] == N_TEST


def test_eval_lds_equals_an_independent_spearman(release, imported):
    _, data = release
    out = imported["standardized"]
    assert main(["eval", "--run", str(out), "--heldout", str(out / "heldout"), "--no-complexity"]) == 0
    run = Run(out)
    lds = np.asarray(run.array(LDS), dtype=np.float64)
    w, b = np.asarray(run.array(WEIGHTS), np.float64), np.asarray(run.array(BIAS), np.float64)
    x = data["masks"][-HELDOUT:].astype(np.float64)
    y = np.hstack([data["margins"]["train"], data["margins"]["test"]])[-HELDOUT:].astype(np.float64)
    for t in range(N_TRAIN + N_TEST):
        keep = ~data["masks"][-HELDOUT:, t] if t < N_TRAIN else np.ones(HELDOUT, bool)  # eq. 9 for training targets
        expected = spearmanr(x[keep] @ w[t] + b[t], y[keep, t]).statistic
        assert lds[t] == pytest.approx(expected, abs=1e-5), t
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_heldout_models"] == HELDOUT and metrics["heldout_run"] == "heldout"


def test_test_datamodels_alone_import(cifar, tmp_path):
    root = tmp_path / "cifar"
    data = write_release(root, np.random.default_rng(2), parts=("test",))
    killed = tmp_path / ".run.import-999999999-x1y2"  # the staging folder of an import killed before its rename
    (killed / "heldout").mkdir(parents=True)
    assert run_import(root, cifar, tmp_path / "run", "--convention", "raw", "--dtype", "float16") == 0
    assert not killed.exists()
    run = Run(tmp_path / "run")
    weights = run.array(WEIGHTS)
    assert weights.dtype == np.float16 and not np.asarray(weights[:N_TRAIN]).any()
    np.testing.assert_array_equal(weights[N_TRAIN:], data["weight"]["test"].astype(np.float16).T)
    fit = json.loads((run.dir / "fit.json").read_text())
    assert fit["targets"] == list(range(N_TRAIN, N_TRAIN + N_TEST)) and run.manifest["n_models"] == 0
    assert not (run.dir / "heldout").exists()


def test_masks_and_margins_alone_import_and_fit_runs_on_them(cifar, tmp_path):
    root = tmp_path / "cifar"
    write_release(root, np.random.default_rng(3), parts=("data",))
    out = tmp_path / "run"
    assert run_import(root, cifar, out) == 0
    assert not WEIGHTS.path(out).exists()
    assert main(["fit", "--run", str(out), "--n-lambdas", "8"]) == 0
    assert Run(out).array(WEIGHTS).shape == (N_TRAIN + N_TEST, N_TRAIN)
    assert main(["eval", "--run", str(out), "--heldout", str(out / "heldout"), "--no-complexity"]) == 0
    assert np.nanmean(np.asarray(Run(out).array(LDS))[N_TRAIN:]) > 0.5


def _fail(capsys, release_dir, cifar_dir, out, *extra) -> str:
    code = run_import(release_dir, cifar_dir, out, *extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert not out.exists() and not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
    return err[0]


def _copy(src: Path, dst: Path) -> Path:
    import shutil
    shutil.copytree(src, dst)
    return dst


def test_bad_inputs_fail_in_one_line_and_write_nothing(release, cifar, tmp_path, capsys):
    root = release[0]
    out = tmp_path / "runs" / "bad"
    out.parent.mkdir()
    # a missing CIFAR-10 binary
    broken_cifar = _copy(cifar, tmp_path / "cifar-broken")
    (broken_cifar / "cifar-10-batches-bin" / TRAIN_FILES[2]).unlink()
    assert "missing data_batch_3.bin" in _fail(capsys, root, broken_cifar, out)
    # masks of another width (wrong shape)
    bad = _copy(root, tmp_path / "wide")
    np.save(bad / "data" / f"train_masks_{PCT}pct.npy", np.zeros((N_MODELS, N_TRAIN + 1), bool))
    assert f"expected bool [M, {N_TRAIN}]" in _fail(capsys, bad, cifar, out)
    # margins with fewer models than the masks
    bad = _copy(root, tmp_path / "short")
    np.save(bad / "data" / f"test_margins_{PCT}pct.npy", np.zeros((N_MODELS - 1, N_TEST), np.float16))
    assert "different numbers of models" in _fail(capsys, bad, cifar, out)
    # datamodels holding something else than tensors
    bad = _copy(root, tmp_path / "string")
    torch.save({"weight": torch.zeros(N_TRAIN, N_TEST), "bias": torch.zeros(N_TEST), "lam": "0.01"},
               bad / "datamodels" / f"test_{PCT}pct.pt")
    assert "lam is a str, not a tensor" in _fail(capsys, bad, cifar, out)
    # a pickle weights_only refuses (an arbitrary object), never unpickled
    bad = _copy(root, tmp_path / "pickle")
    with open(bad / "datamodels" / f"test_{PCT}pct.pt", "wb") as f:
        pickle.dump({"weight": np.zeros((N_TRAIN, N_TEST))}, f)
    assert "torch.load(weights_only=True)" in _fail(capsys, bad, cifar, out)
    # a weight of the wrong shape
    bad = _copy(root, tmp_path / "transposed")
    torch.save({"weight": torch.zeros(N_TEST, N_TRAIN), "bias": torch.zeros(N_TEST), "lam": torch.zeros(N_TEST)},
               bad / "datamodels" / f"test_{PCT}pct.pt")
    assert f"expected weight ({N_TRAIN}, {N_TEST})" in _fail(capsys, bad, cifar, out)
    # standardised weights without the masks their conversion needs
    bad = _copy(root, tmp_path / "nomasks")
    for name in ("train_masks", "train_margins", "test_margins"):
        (bad / "data" / f"{name}_{PCT}pct.npy").unlink()
    assert "--convention raw" in _fail(capsys, bad, cifar, out)
    # an --out that already holds something
    out.mkdir()
    (out / "x").write_text("")
    assert run_import(root, cifar, out) == 2 and "choose a new directory" in capsys.readouterr().err


def test_a_changed_release_file_is_refused_on_open(release, cifar, tmp_path):
    root = _copy(release[0], tmp_path / "cifar")
    assert run_import(root, cifar, tmp_path / "run", "--convention", "raw") == 0
    path = root / "data" / f"test_margins_{PCT}pct.npy"
    margins = np.load(path)
    margins[-1, -1] += 1
    np.save(path, margins)
    with pytest.raises(RunError, match="is not the file .* imported"):
        Run(tmp_path / "run").margins
    path.unlink()
    with pytest.raises(RunError, match=r"is missing: put it back, or fix its `release` folder in .*external.json if it moved"):
        Run(tmp_path / "run").margins
    assert json.loads(EXTERNAL.path(tmp_path / "run").read_text())["release"] == str(root)


@pytest.mark.parametrize("text", ["", "{not json", "[]", '{"release": 3}'])
def test_a_corrupt_external_json_is_a_run_error_naming_it(release, cifar, tmp_path, text):
    assert run_import(release[0], cifar, tmp_path / "run", "--convention", "raw") == 0
    EXTERNAL.path(tmp_path / "run").write_text(text)
    with pytest.raises(RunError, match="external.json"):
        Run(tmp_path / "run").margins


def test_column_concat_indexes_as_hstack(tmp_path):
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(30, 7)).astype(np.float16), rng.normal(size=(30, 5)).astype(np.float16)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    view = external.ColumnConcat([np.load(tmp_path / "a.npy", mmap_mode="r"), np.load(tmp_path / "b.npy", mmap_mode="r")])
    whole = np.hstack([a, b])
    assert view.shape == whole.shape and view.dtype == whole.dtype and len(view) == 30
    rows, cols = np.array([0, 3, 4, 29]), np.array([11, 0, 6, 7, 8])
    for key in ((slice(None), cols), (slice(2, 9), slice(5, 10)), (3,), (-1, 8), (slice(None), 2), (rows,),
                np.ix_(rows, cols), (slice(None), np.arange(12) % 2 == 0), (slice(1, 20, 3), slice(None))):
        np.testing.assert_array_equal(np.asarray(view[key]), whole[key], err_msg=str(key))
    prefix = view[:10]
    assert isinstance(prefix, external.ColumnConcat) and prefix.shape == (10, 12)
    np.testing.assert_array_equal(prefix[np.ix_(np.array([1, 9]), cols)], whole[:10][np.ix_([1, 9], cols)])
    np.testing.assert_array_equal(np.asarray(view[5:][::2]), whole[5:][::2])
    with pytest.raises(IndexError, match="np.ix_"):
        view[rows, rows]
