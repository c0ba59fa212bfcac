"""The published `datamodels-data` release (Ilyas et al. 2022) imported as a run the dashboard browses.

Release layout (https://github.com/MadryLab/datamodels-data, README "Training data", "Datamodels"),
under one dataset folder (`cifar/` in the bucket), M models of which the last 10,000 are the
evaluation models:

    data/train_masks_{PCT}pct.npy     bool    [M, N_train]
    data/train_margins_{PCT}pct.npy   float16 [M, N_train]
    data/test_margins_{PCT}pct.npy    float16 [M, N_test]
    datamodels/{train,test}_{PCT}pct.pt   {"weight": [N_train, N] (features x targets), "bias": [N], "lam": [N]}

Examples are in CIFAR-10's official order (data_batch_1..5, then test_batch), the order our targets use.
The masks and margins are not copied: external.json (backend.store.external) maps masks.npy and
margins.npy to row ranges of the release's files, the first M - H rows for the run and the last H for
RUN/heldout. The datamodels are transposed into weights.npy (target-major) in blocks of feature rows.

Convention. fast_l1, the solver behind the release, fits on standardised masks: `train_saga` copies each
boolean batch into X and calls `normalize(X, mm_mu, mm_sig, X)` with the per-feature mean and standard
deviation of its loader (`calc_stats`), `out = (X_bool - mean) / (std + 1e-32)` (MadryLab/fast_l1,
fast_l1/regressor.py: normalize_kernel, calc_stats, train_saga), and the final refit of
datamodels/regression/compute_datamodels.py passes the loader of all non-evaluation models. Our
weights act on raw 0/1 masks, so "standardized" weights are converted with the fit models' μ and σ:
w_raw = w / σ, b_raw = b - Σ_i w_i μ_i / σ_i (a feature with σ = 0 is constant and gets w_raw = 0).
"""
from __future__ import annotations

import os
import pickle
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from backend.datasets import DatasetError, load_dataset
from backend.progress import Progress
from backend.store import external
from backend.store.artifacts import read_json, write_array, write_json
from backend.store.atomic import DIR_MODE
from backend.store.errors import RunError
from backend.store.manifest import FORMAT_VERSION, init_run, update_manifest
from backend.store.run_dir import Run
from backend.store.rows import read_rows
from backend.store.provenance import package_versions
from backend.store.schema import (BIAS, EXTERNAL, FIT, HELDOUT, IMAGES, LABELS, LAM, MANIFEST, MARGINS, MASKS, WEIGHTS,
                                  WEIGHTS_BY_TRAIN)
from backend.training.architectures import DEFAULT_HPARAMS
from backend.training.target_stats import save_target_stats
from backend.training.train_stage import run_manifest

CONVENTIONS = ("standardized", "raw")
PCTS = (10, 20, 50, 75)
EVAL_MODELS = 10_000  # the release's last 10,000 models of every matrix
CHUNK_BYTES = 128 << 20
CHECK_MODELS, CHECK_TARGETS = 1000, 1000


def release_files(release: Path, pct: int) -> dict[str, Path]:
    """The release's file of each kind for one α (`{PCT}pct`), present or not."""
    return {"masks": release / "data" / f"train_masks_{pct}pct.npy",
            "train_margins": release / "data" / f"train_margins_{pct}pct.npy",
            "test_margins": release / "data" / f"test_margins_{pct}pct.npy",
            "train": release / "datamodels" / f"train_{pct}pct.pt",
            "test": release / "datamodels" / f"test_{pct}pct.pt"}


def load_datamodels(path: Path, mmap: bool = True) -> dict:
    """A release .pt as {weight, bias, lam} torch tensors, loaded with weights_only=True (never plain unpickling).

    mmap : map the tensors instead of reading them (the file must be torch.save's zip format).
    """
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise DatasetError(f"{path} is not a datamodels .pt that torch.load(weights_only=True) reads "
                           f"({' '.join(str(exc).split())[:160]}): download it again from the release") from None
    if not isinstance(obj, dict) or set(obj) < {"weight", "bias", "lam"}:
        raise DatasetError(f"{path} holds {type(obj).__name__} {sorted(obj) if isinstance(obj, dict) else ''}, not a "
                           "dict with weight, bias and lam: download it again from the release")
    for key in ("weight", "bias", "lam"):
        if not isinstance(obj[key], torch.Tensor):
            raise DatasetError(f"{path}: {key} is a {type(obj[key]).__name__}, not a tensor: download it again")
    return obj


def _check_datamodels(path: Path, n_train: int, n_targets: int) -> None:
    obj = load_datamodels(path)
    shapes = {key: tuple(obj[key].shape) for key in ("weight", "bias", "lam")}
    if shapes != {"weight": (n_train, n_targets), "bias": (n_targets,), "lam": (n_targets,)}:
        raise DatasetError(f"{path} has weight {shapes['weight']}, bias {shapes['bias']}, lam {shapes['lam']}; "
                           f"expected weight ({n_train}, {n_targets}) (features x targets), bias and lam "
                           f"({n_targets},): is it another dataset's or split's file?")
    if not obj["weight"].is_floating_point():
        raise DatasetError(f"{path}: weight is {obj['weight'].dtype}, not a floating-point tensor")


def _check_npy(path: Path, dtypes: tuple, width: int, what: str) -> int:
    """Rows of a release matrix after checking its dtype and width; a bad file is a DatasetError."""
    try:
        dtype, shape, offset = external.npy_layout(path)
    except (ValueError, OSError, SyntaxError) as exc:
        raise DatasetError(f"{path} is not a readable .npy file ({exc}): download it again") from None
    if dtype not in [np.dtype(d) for d in dtypes] or len(shape) != 2 or shape[1] != width:
        raise DatasetError(f"{path} holds {dtype} {shape}, expected {' or '.join(dtypes)} [M, {width}] ({what}): "
                           "is it another dataset's file?")
    if os.path.getsize(path) < offset + shape[0] * shape[1] * dtype.itemsize:
        raise DatasetError(f"{path} is shorter than its header's {shape}: the download is truncated; fetch it again")
    return shape[0]


def check_release(release: Path, pct: int, n_train: int, n_test: int, convention: str, heldout_models: int) -> dict:
    """Which parts of the release are present, each checked against CIFAR-10's sizes; nothing is read but headers.

    Returns {"files": present kind -> path, "n_models": M or 0, "splits": the .pt splits present}.
    """
    if pct not in PCTS:
        raise DatasetError(f"--pct {pct}: the release has {', '.join(map(str, PCTS))}")
    if not release.is_dir():
        raise DatasetError(f"--release {release} is not a folder: give the dataset folder that holds data/ and "
                           "datamodels/ (e.g. datamodels-data/cifar)")
    files = {k: p for k, p in release_files(release, pct).items() if p.is_file()}
    arrays = [k for k in ("masks", "train_margins", "test_margins") if k in files]
    if arrays and len(arrays) < 3:
        lacking = [str(release_files(release, pct)[k]) for k in ("masks", "train_margins", "test_margins") if k not in files]
        raise DatasetError(f"the release's masks and margins come together: {', '.join(lacking)} missing; "
                           "download it (README: Importing the published CIFAR-10 datamodels)")
    splits = [s for s in ("train", "test") if s in files]
    if not arrays and not splits:
        raise DatasetError(f"{release} holds none of the release's {pct}pct files (data/train_masks_{pct}pct.npy, ..., "
                           f"datamodels/test_{pct}pct.pt): check --release and --pct")
    n_models = 0
    if arrays:
        rows = {"masks": _check_npy(files["masks"], ("bool",), n_train, "train masks"),
                "train_margins": _check_npy(files["train_margins"], ("float16", "float32"), n_train, "train margins"),
                "test_margins": _check_npy(files["test_margins"], ("float16", "float32"), n_test, "test margins")}
        if len(set(rows.values())) != 1:
            raise DatasetError("the release's masks and margins hold different numbers of models (" +
                               ", ".join(f"{files[k].name}: {v}" for k, v in rows.items()) + "): download them again")
        dtypes = {external.npy_layout(files[k])[0] for k in ("train_margins", "test_margins")}
        if len(dtypes) != 1:
            raise DatasetError("the release's train and test margins have different dtypes: download them again")
        n_models = rows["masks"]
        if n_models <= heldout_models:
            raise DatasetError(f"the release holds {n_models} models, not more than the {heldout_models} evaluation "
                               "models: lower --heldout-models, or check the download")
    for split in splits:
        _check_datamodels(files[split], n_train, n_train if split == "train" else n_test)
    if splits and convention == "standardized" and not arrays:
        raise DatasetError("--convention standardized needs the release's masks (the fit models' mean and spread "
                           "of every feature): download data/train_masks too, or pass --convention raw")
    return {"files": files, "n_models": n_models, "splits": splits}


def mask_moments(masks, progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation (population, as fast_l1's calc_stats) of bool masks (M, n_train),
    read CHUNK_BYTES of rows at a time, each through a mapping of its own. Returns float64 (n_train,) twice."""
    n_models, n_train = masks.shape
    count = np.zeros(n_train, dtype=np.int64)
    step = max(1, CHUNK_BYTES // n_train)
    for lo in range(0, n_models, step):
        rows = external.fresh_map(masks)
        count += rows[lo:lo + step].sum(axis=0, dtype=np.int64)
        del rows
        if progress:
            progress(min(lo + step, n_models), n_models, "model")
    mu = count / max(1, n_models)
    return mu, np.sqrt(np.maximum(mu - mu * mu, 0.0))  # x ∈ {0, 1}: E[x²] = E[x]


def _weight_rows(path: Path, lo: int, hi: int) -> np.ndarray:
    """Rows [lo, hi) of a .pt's weight as float32, through a mapping opened for this read alone: its pages leave
    the resident set with it (a 10 GB train weight read through one long-lived map would stay resident)."""
    obj = load_datamodels(path)
    rows = obj["weight"][lo:hi].float().numpy().copy()
    del obj
    return rows


def write_datamodels(path: Path, split: str, n_train: int, moments: tuple | None, convention: str, weights_path: Path,
                     by_train_path: Path | None, progress: Progress | None = None, done: int = 0, total: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Transpose one split's published weight [n_train, N] into rows of weights.npy, converted to raw-mask form.

    Feature rows are read CHUNK_BYTES at a time; each chunk becomes columns of the target-major output
    (created by the caller in its storage dtype), written through a mapping opened for that chunk, and
    (test split) rows of weights_test_by_train.npy. moments : the fit models' (μ, σ), for "standardized".
    Returns (bias, lam) float32 (N,) of the raw form.
    """
    obj = load_datamodels(path)
    n = int(obj["weight"].shape[1])
    bias, lam = obj["bias"].double().numpy().copy(), obj["lam"].float().numpy().copy()
    del obj
    first = 0 if split == "train" else n_train
    step = max(1, CHUNK_BYTES // (4 * n))
    layouts = {p: _layout(p) for p in (weights_path, by_train_path) if p is not None}
    for lo in range(0, n_train, step):
        hi = min(lo + step, n_train)
        w = _weight_rows(path, lo, hi)
        if convention == "standardized":  # in float32 and in place: a float64 temp would double the chunk
            mu, sigma = moments[0][lo:hi], moments[1][lo:hi]
            w *= np.divide(1.0, sigma, out=np.zeros_like(sigma), where=sigma > 0).astype(np.float32)[:, None]
            bias -= mu.astype(np.float32) @ w
        # Both outputs are mapped for this chunk alone, so its dirty pages leave the resident set with it.
        out = np.memmap(weights_path, mode="r+", **layouts[weights_path])
        out[first:first + n, lo:hi] = w.T
        out.flush()
        del out
        if by_train_path is not None:
            out = np.memmap(by_train_path, mode="r+", **layouts[by_train_path])
            out[lo:hi] = w
            out.flush()
            del out
        if progress:
            progress(done + hi, total, "feature row")
    return bias.astype(np.float32), lam


def _layout(path: Path) -> dict:
    dtype, shape, offset = external.npy_layout(path)
    return {"dtype": dtype, "shape": shape, "offset": offset}


def convention_check(run: Run, heldout: Run, moments: tuple, convention: str,
                     columns: np.ndarray) -> dict:
    """MSE and mean error of both conventions' predicted margins on (a sample of) the evaluation models.

    The stored weights are the chosen convention read in raw form; the other convention reads the published
    numbers the other way. Not LDS: with α-masks every feature has about the same μ and σ, so the two
    predictions differ by nearly an affine map and a rank correlation barely tells them apart.
    columns : the target columns checked. Returns {convention: {"mse", "mean_error"}, "models", "targets"}.
    """
    mu, sigma = (m.astype(np.float32) for m in moments)
    n_models = len(heldout.masks)
    models = np.unique(np.linspace(0, n_models - 1, min(CHECK_MODELS, n_models)).astype(np.int64))
    x = read_rows(heldout.masks, models)  # float32 throughout: 1,000 x 50,000 rows are 200 MB each
    actual = np.asarray(heldout.margins[np.ix_(models, columns)], dtype=np.float64)
    scale = np.divide(1.0, sigma, out=np.zeros_like(sigma), where=sigma > 0)
    other = "raw" if convention == "standardized" else "standardized"
    predicted = {convention: np.empty(actual.shape, np.float32), other: np.empty(actual.shape, np.float32)}
    x_std = (x - mu) * scale if convention == "raw" else None
    for lo in range(0, len(columns), 250):  # 250 weight rows at a time: 50 MB at CIFAR size
        cols = columns[lo:lo + 250]
        w = read_rows(run.array(WEIGHTS), cols)  # (T, n_train), raw form
        b = np.asarray(run.array(BIAS)[cols], dtype=np.float32)
        predicted[convention][:, lo:lo + 250] = x @ w.T + b
        # The published numbers behind the stored raw form, read the other way.
        if convention == "standardized":
            predicted["raw"][:, lo:lo + 250] = x @ (w * sigma).T + (b + w @ mu)
        else:
            predicted["standardized"][:, lo:lo + 250] = x_std @ w.T + b
    report = {name: {"mse": float(np.mean((p - actual) ** 2)), "mean_error": float(np.mean(p - actual))}
              for name, p in predicted.items()}
    return dict(report, models=len(models), targets=len(columns))


def _stage_dir(out: Path) -> Path:
    """A hidden folder beside `out` to build the run in, with the permissions a plain mkdir gives (not mkdtemp's 0700).

    It carries this process's pid: the folders of killed imports of the same --out are removed first.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    for old in out.parent.glob(f".{out.name}.import-*-*"):
        pid = old.name.rsplit(".import-", 1)[1].split("-")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(old, ignore_errors=True)
    stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.import-{os.getpid()}-"))
    stage.chmod(DIR_MODE)
    return stage


def import_release(release: Path, pct: int, cifar_dir: Path, out: Path, *, convention: str = "standardized",
                   dtype: str = "float32", heldout_models: int = EVAL_MODELS, progress: Progress | None = None,
                   code_version: dict | None = None) -> dict:
    """Build the run `out` (and out/heldout) from the release; return the import's summary (also in the manifest).

    Every input is checked before anything is written; the run is built in a hidden folder beside `out`
    and renamed to `out` at the end, so a failure leaves nothing behind.
    """
    started = time.perf_counter()
    release, out = Path(os.path.abspath(release)), Path(out)
    if convention not in CONVENTIONS:
        raise DatasetError(f"--convention {convention!r}: use one of {', '.join(CONVENTIONS)}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunError(f"--out {out} exists: choose a new directory for the imported run")
    ds = load_dataset("cifar10", cifar_dir)
    n_train, n_test = ds.n_train, ds.n_test
    found = check_release(release, pct, n_train, n_test, convention, heldout_models)
    files, n_models, splits = found["files"], found["n_models"], found["splits"]
    n_fit = n_models - heldout_models if n_models else 0
    margins_dtype = external.npy_layout(files["train_margins"])[0].name if n_models else MARGINS.dtype[1]
    stage = _stage_dir(out)
    try:
        manifest = run_manifest(ds, "cifar10", pct / 100, 0, "resnet9", dict(DEFAULT_HPARAMS["resnet9"]), margins_dtype)
        imported = {"release": str(release), "pct": pct, "convention": convention if splits else None,
                    "files": {k: os.path.relpath(p, release) for k, p in files.items()},
                    "checksums": {}, "n_release_models": n_models, "heldout_models": heldout_models if n_models else 0,
                    "note": "the release's models were trained by its authors (ResNet-9, their seeds); seed, arch "
                            "and hparams here are this code's, used only for retraining from the dashboard"}
        init_run(stage, manifest, ds.target_labels(), ds.target_images())
        del ds  # its images are in the run now: not held through the import (370 MB at CIFAR-10 size)
        steps = {}
        if n_models:
            _write_external(stage, release, files, (0, n_fit), n_train, n_test, heldout=False)
            heldout = HELDOUT.path(stage)
            heldout.mkdir()
            _write_external(heldout, release, files, (n_fit, n_models), n_train, n_test, heldout=True)
            # seed + 1, as `all` gives its held-out run: eval refuses a held-out run under the run's own seed.
            write_json(heldout, MANIFEST, dict(manifest, format_version=FORMAT_VERSION, seed=1,
                                                       n_models=heldout_models,
                                                       imported=dict(imported, split="evaluation models")))
            update_manifest(stage, n_models=n_fit)
            for entry in read_json(stage, EXTERNAL)["arrays"].values():
                for p in entry["parts"]:
                    imported["checksums"][p["path"]] = p["sha256_sampled"]
            t = time.perf_counter()
            save_target_stats(Run(stage))
            steps["target_stats"] = round(time.perf_counter() - t, 2)
        summary = {"run": str(out), "n_fit_models": n_fit, "n_heldout_models": heldout_models if n_models else 0,
                   "datamodels": splits, "convention": imported["convention"]}
        if splits:
            summary.update(_import_datamodels(stage, files, splits, n_train, n_test, dtype, convention, progress, steps))
            imported["convention_check"] = summary.get("convention_check")
        summary["seconds_by_step"] = steps
        update_manifest(stage, imported=imported, versions=package_versions(), **(code_version or {}))
        os.replace(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    summary["seconds"] = round(time.perf_counter() - started, 2)
    # Allocated bytes: weights.npy of a test-only import is a sparse file whose training rows read as zeros.
    summary["bytes_written"] = sum(p.stat().st_blocks * 512 for p in out.rglob("*") if p.is_file())
    return summary


def _write_external(run_path: Path, release: Path, files: dict, rows: tuple, n_train: int, n_test: int,
                    heldout: bool) -> None:
    """external.json of a run whose masks and margins are rows [rows) of the release's files (heldout: the
    held-out run, whose labels and images are its parent's too)."""
    arrays = {MASKS.name: {"parts": [external.part(files["masks"].relative_to(release), rows, (0, n_train), "release", release)]},
              MARGINS.name: {"parts": [
                  external.part(files["train_margins"].relative_to(release), rows, (0, n_train), "release", release),
                  external.part(files["test_margins"].relative_to(release), rows, (n_train, n_train + n_test), "release", release)]}}
    if heldout:
        n_targets = n_train + n_test
        for artifact in (LABELS, IMAGES):  # the held-out run's are its parent's, read in place
            arrays[artifact.name] = {"parts": [external.part(Path("..") / artifact.name, (0, n_targets), None, "run",
                                                             run_path)]}
    write_json(run_path, EXTERNAL, {"release": str(release), "arrays": arrays})


def _import_datamodels(stage: Path, files: dict, splits: list, n_train: int, n_test: int, dtype: str,
                       convention: str, progress: Progress | None, steps: dict) -> dict:
    """weights.npy, weights_test_by_train.npy, bias.npy, lam.npy and fit.json from the release's .pt files;
    each step's seconds go into `steps`."""
    run = Run(stage)
    n_targets = n_train + n_test
    moments = None
    t = time.perf_counter()
    if run.has(MASKS):
        moments = mask_moments(run.masks, progress)
        steps["mask_moments"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    weights_path = WEIGHTS.path(stage)
    np.lib.format.open_memmap(weights_path, mode="w+", dtype=np.dtype(dtype), shape=(n_targets, n_train)).flush()
    by_train_path = WEIGHTS_BY_TRAIN.path(stage)
    np.lib.format.open_memmap(by_train_path, mode="w+", dtype=np.dtype(dtype), shape=(n_train, n_test)).flush()
    bias, lam = np.zeros(n_targets, np.float32), np.full(n_targets, np.nan, np.float32)
    total = n_train * len(splits)
    if progress:
        progress(0, total, "feature row")
    for i, split in enumerate(splits):
        lo = 0 if split == "train" else n_train
        b, l = write_datamodels(files[split], split, n_train, moments, convention,
                                weights_path, by_train_path if split == "test" else None, progress, i * n_train, total)
        bias[lo:lo + len(b)], lam[lo:lo + len(l)] = b, l
    write_array(stage, BIAS, bias)
    write_array(stage, LAM, lam)
    steps["datamodels"] = round(time.perf_counter() - t, 2)
    columns = np.concatenate([np.arange(0, n_train) if "train" in splits else np.zeros(0, np.int64),
                              np.arange(n_train, n_targets) if "test" in splits else np.zeros(0, np.int64)])
    write_json(stage, FIT, {
        "n_targets": len(columns), "targets": "all" if len(columns) == n_targets else columns.tolist(),
        "n_train": n_train, "n_test": n_test, "iterations": {}, "weights_dtype": dtype,
        "solver": "fast_l1 (the release's datamodels, imported)", "convention": convention,
        "lam_units": "the release's (fast_l1 SAGA on standardised masks), not scikit-learn Lasso units"})
    summary = {"weights_dtype": dtype}
    heldout_dir = HELDOUT.path(stage)
    if moments is not None and heldout_dir.is_dir():
        checked = np.arange(n_train, n_targets) if "test" in splits else np.arange(0, n_train)
        sample = checked[np.unique(np.linspace(0, len(checked) - 1, min(CHECK_TARGETS, len(checked))).astype(np.int64))]
        t = time.perf_counter()
        summary["convention_check"] = convention_check(Run(stage), Run(heldout_dir), moments,
                                                       convention, sample)
        steps["convention_check"] = round(time.perf_counter() - t, 2)
    return summary
