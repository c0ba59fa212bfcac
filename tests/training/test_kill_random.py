"""SIGKILL at seeded random points of train (creation included), fit, merge, analyze and a retrain.

Half of the kill times are drawn over the whole command (from its start to its uninterrupted duration),
half within milliseconds of its first temp file appearing (the writes and the commit). After each kill the
run opens, is consistent, and holds either the old outputs of the stage or the new ones, never a mix; the
rerun finishes, equals the uninterrupted result, and leaves no temp file and no journal. Tiny runs: an npz
of 60 train and 30 test digits, `--epochs 3 --hidden 16`.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from backend.store import schema
from backend.store.run_dir import Run
from tests.conftest import FAST_TRAIN, ROOT, record_count, run_cli

SEED = 20261201
CPU = ["--device", "cpu"]


@pytest.fixture(scope="module")
def small_npz(tmp_path_factory) -> Path:
    from sklearn.datasets import load_digits

    digits = load_digits()
    pick = np.random.default_rng(0).permutation(len(digits.target))[:90]
    path = tmp_path_factory.mktemp("kill") / "digits90.npz"
    np.savez(path, images=np.round(digits.images[pick] * 255 / 16).astype(np.uint8), labels=digits.target[pick],
             split=np.where(np.arange(90) < 60, "train", "test"))
    return path


def train_args(npz: Path, out: Path, models: int) -> list:
    return ["train", "--dataset", f"npz:{npz}", "--models", models, "--out", out, "--batch-models", "4", *FAST_TRAIN]


def temps(run: Path) -> list[Path]:
    return sorted(p for p in run.rglob(".*") if p.name.endswith(".tmp") or p.name.startswith(".transaction-"))


def kill_at_random(argv: list, rng: np.random.Generator, horizon: float, watch: Path) -> float:
    """Start `python -m precompute ARGV`, SIGKILL it at a random point, return when (seconds after start).

    Half of the points are uniform over [0, horizon]; the other half come 0-30 ms after the first temp
    file (or the run directory itself, for creation) appears under `watch`.
    """
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    started = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "precompute", *map(str, argv)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if rng.random() < 0.5:
        time.sleep(rng.uniform(0, horizon))
    else:
        while proc.poll() is None and time.time() - started < horizon * 3:
            if watch.exists() and (not watch.is_dir() or temps(watch) or not any(watch.glob("manifest.json"))):
                break
            time.sleep(0.001)
        time.sleep(rng.uniform(0, 0.03))
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return time.time() - started


def timed(argv: list) -> float:
    started = time.time()
    run_cli(*argv)
    return time.time() - started


# How long a stage took, its CPU time and peak memory, and how many blocks a resumed fit found done: all a rerun changes.
CLOCK_KEYS = ("seconds", "wall_time_s", "cpu_seconds", "peak_rss_mib", "resumed_blocks")


def digest(run: Path, artifacts) -> dict[str, str | None]:
    """Each artifact's content hash (None if absent); JSON without its timings."""
    def content(path: Path) -> bytes:
        if path.suffix != ".json":
            return path.read_bytes()
        def untimed(obj):
            if isinstance(obj, dict):
                return {k: untimed(v) for k, v in obj.items() if k not in CLOCK_KEYS}
            return [untimed(v) for v in obj] if isinstance(obj, list) else obj
        return json.dumps(untimed(json.loads(path.read_text())), sort_keys=True).encode()
    return {a.name: (hashlib.sha256(content(a.path(run))).hexdigest() if a.path(run).exists() else None)
            for a in artifacts}


def keep(run: Path, artifacts) -> dict[Path, bytes]:
    return {a.path(run): a.path(run).read_bytes() for a in artifacts if a.path(run).exists()}


def put_back(kept: dict[Path, bytes]) -> None:
    """Restore a stage's old files (a copy, not a rerun: the next kill then starts from the old state again)."""
    for path, data in kept.items():
        path.write_bytes(data)


def assert_consistent(run_dir: Path) -> Run:
    run = Run(run_dir)  # finishes an interrupted commit
    assert not list(run_dir.glob(".transaction-*.json"))
    if run.has(schema.MASKS):
        assert len(run.masks) == len(run.margins) == run.manifest["n_models"]
    return run


@pytest.mark.slow
def test_train_killed_20_times_including_creation_resumes_to_the_uninterrupted_run(small_npz, tmp_path):
    rng = np.random.default_rng(SEED)
    reference = tmp_path / "reference"
    horizon = timed(train_args(small_npz, reference, 16))
    for chain in range(2):  # 2 runs, each killed 10 times, then finished
        out = tmp_path / f"killed{chain}"
        for _ in range(10):
            kill_at_random(train_args(small_npz, out, 16), rng, horizon, out)
            record_count("SIGKILL train", "consistent after the kill")
            if (out / schema.MANIFEST.name).exists():
                assert_consistent(out)
        run_cli(*train_args(small_npz, out, 16))
        assert not temps(out), temps(out)
        assert np.array_equal(np.load(out / "masks.npy"), np.load(reference / "masks.npy"))
        np.testing.assert_allclose(np.load(out / "margins.npy"), np.load(reference / "margins.npy"), atol=1e-4)
        assert assert_consistent(out).manifest["n_models"] == 16


FIT_FILES = (schema.WEIGHTS, schema.BIAS, schema.LAM, schema.FIT)


@pytest.fixture(scope="module")
def fitted(small_npz, tmp_path_factory) -> tuple[Path, float]:
    """A 24-model run of the small dataset with datamodels fitted (5 λ values), and the fit's seconds: the old fit
    that fit's kills must keep or replace whole, and what analyze and retrains read. Each test writes to a copy."""
    run = tmp_path_factory.mktemp("fitted") / "run"
    run_cli(*train_args(small_npz, run, 24))
    return run, timed(["fit", "--run", run, "--n-lambdas", "5", *CPU])


@pytest.mark.slow
def test_fit_killed_10_times_leaves_the_old_fit_or_the_new_one(fitted, tmp_path):
    rng = np.random.default_rng(SEED + 1)
    run = shutil.copytree(fitted[0], tmp_path / "run")
    new_args, horizon = ["fit", "--run", run, "--n-lambdas", "8", *CPU], fitted[1]
    old, states, kept = digest(run, FIT_FILES), [], keep(run, FIT_FILES)
    for _ in range(10):
        kill_at_random(new_args, rng, horizon, run)
        assert_consistent(run)
        states.append(digest(run, FIT_FILES))
        if states[-1] != old:  # the new fit committed: back to the old one for the next kill
            put_back(kept)
    run_cli(*new_args)
    new = digest(run, FIT_FILES)
    assert old != new and None not in old.values() and not temps(run)
    for state in states:
        record_count("SIGKILL fit", "old or new, not mixed" if state in (old, new) else "MIXED")
        assert state in (old, new), "a kill mixed the old fit with the new one"


MERGE_FILES = (schema.MASKS, schema.MARGINS, schema.TARGET_MEAN_MARGIN, schema.TARGET_ACCURACY)


@pytest.mark.slow
def test_merge_killed_5_times_leaves_the_old_merge_or_the_new_one(small_npz, tmp_path):
    """masks.npy/margins.npy grow in place, so what a kill leaves is judged by what np.load reads (the rows
    the header covers): each file reads as the old merge or the new one, and a rerun finishes the new one."""
    rng = np.random.default_rng(SEED + 2)
    half = tmp_path / "half"
    run_cli(*train_args(small_npz, half, 16), "--shard", "0/2", "--keep-shards")  # merges models 0-7
    full = shutil.copytree(half, tmp_path / "full")
    run_cli(*train_args(small_npz, full, 16), "--shard", "1/2", "--keep-shards")  # and then 0-15
    old, new = readable(half, MERGE_FILES), readable(full, MERGE_FILES)
    run = tmp_path / "run"
    horizon = None
    for _ in range(6):  # the first copy times an uninterrupted merge
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(half, run)
        for shard in (full / "shards").iterdir():
            shutil.copy2(shard, run / "shards" / shard.name)
        if horizon is None:
            horizon = timed(["merge", "--run", run])
            shutil.rmtree(run)
            continue
        kill_at_random(["merge", "--run", run], rng, horizon, run)
        state = readable(run, MERGE_FILES)
        whole = all(state[name] in (old[name], new[name]) for name in state)
        record_count("SIGKILL merge", "each file old or new, none torn" if whole else "TORN")
        assert whole
        run_cli("merge", "--run", run)
        opened = assert_consistent(run)
        assert readable(run, MERGE_FILES) == new and opened.manifest["n_models"] == 16 and not temps(run)


def readable(run: Path, artifacts) -> dict[str, str | None]:
    """Each npy artifact's hash as np.load reads it (dtype, shape, values; None if absent)."""
    def content(path: Path) -> str | None:
        if not path.exists():
            return None
        array = np.load(path)
        return hashlib.sha256(f"{array.dtype}{array.shape}".encode() + array.tobytes()).hexdigest()
    return {a.name: content(a.path(run)) for a in artifacts}


@pytest.mark.slow
def test_analyze_killed_5_times_commits_all_of_its_outputs_or_none(fitted, tmp_path):
    rng = np.random.default_rng(SEED + 3)
    run = shutil.copytree(fitted[0], tmp_path / "run")
    run_cli("control", "--run", run, "--control-models", "2", *CPU)
    analyze = ["analyze", "--run", run, "--n-control", "2", "--clusters-per-class", "2", *CPU]
    outputs = [a for a in schema.ARTIFACTS if a.stage == "analyze"
               and (a.kind != "npy" or a.path(run).name != "representation_explained_variance_ratio.npy")]
    horizon = timed([*analyze, "--components", "4"])
    old, states, kept = digest(run, outputs), [], keep(run, outputs)
    for _ in range(5):
        kill_at_random([*analyze, "--components", "6"], rng, horizon, run / "structure")
        assert_consistent(run)
        states.append(digest(run, outputs))
        if states[-1] != old:
            put_back(kept)
    run_cli(*analyze, "--components", "6")
    new = digest(run, outputs)
    assert old != new and not temps(run)
    for state in states:
        record_count("SIGKILL analyze", "old or new, not mixed" if state in (old, new) else "MIXED")
        assert state in (old, new), "a kill mixed old and new analyze outputs"


@pytest.mark.slow
def test_a_retrain_killed_5_times_stores_its_pair_whole_and_resumes(fitted, tmp_path):
    rng = np.random.default_rng(SEED + 4)
    run = shutil.copytree(fitted[0], tmp_path / "run")
    # A fixed set: this 24-model, 5-λ fit may leave test:0 without the five positive weights top:5 needs.
    retrain = ["counterfactual", "--run", run, "--target", "test:0", "--remove", "train:0-4", "--models", "3",
               "--control-models", "2", *CPU]
    run_cli("control", "--run", run, "--control-models", "2", *CPU)
    reference = shutil.copytree(run, tmp_path / "reference")
    horizon = timed([a if a != run else reference for a in retrain])
    for _ in range(5):
        kill_at_random(retrain, rng, horizon, run / "counterfactuals")
        assert_consistent(run)
        npz = sorted(p.stem for p in schema.COUNTERFACTUAL.glob(run))
        meta = sorted(p.stem for p in schema.COUNTERFACTUAL_META.glob(run))
        record_count("SIGKILL retrain", "pair whole" if npz == meta else "HALF A PAIR")
        assert npz == meta, "a kill left half of a retrain's pair"
        for path in (run / "counterfactuals").glob("*.*"):
            path.unlink()
    run_cli(*retrain)
    assert not temps(run)
    for ours, theirs in zip(schema.COUNTERFACTUAL.glob(run), schema.COUNTERFACTUAL.glob(reference)):
        with np.load(ours) as a, np.load(theirs) as b:
            assert np.array_equal(a["margins"], b["margins"])
