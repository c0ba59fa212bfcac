"""Training a run's models in resumable, atomic shards (the `train` stage).

Models are numbered; model i's subset and randomness come from (seed, i) only. Work is split
into chunks of K consecutive models; each finished chunk is one shard file. A restart trains only
the indices no shard holds, so a run killed at any moment loses at most the chunk in flight.
"""
from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Iterator

import numpy as np

from backend.cluster.executor import LocalExecutor, ProcessExecutor
from backend.datasets import Dataset, dataset_fingerprint
from backend.progress import Progress, part
from backend.store.manifest import init_run, margins_dtype, read_manifest, run_precision, update_manifest
from backend.store.merge import merge_lock
from backend.store.provenance import code_version, package_versions
from backend.store.run_dir import Run
from backend.store.schema import MANIFEST, MARGINS
from backend.store.shards import missing_ranges, write_shard
from backend.training import architectures
from backend.training.engine import (TrainingData, cpu_workers, default_batch_models, resolve_device, resolve_precision,
                                     train_models, use_all_cores)
from backend.training.merge_stage import merge_run
from backend.training.subsets import model_seed, model_subset, subset_size, subsets_to_masks
from backend.training.target_stats import stored_target_stats

def run_manifest(ds: Dataset, spec: str, alpha: float, seed: int, arch: str, hparams: dict,
                 dtype: str = "float32", precision: str = "fp32") -> dict:
    return {
        "dataset": {"spec": spec, "name": ds.name, "n_train": ds.n_train, "n_test": ds.n_test,
                    "image_shape": list(ds.image_shape), "class_names": list(ds.class_names),
                    "n_classes": ds.n_classes, "fingerprint": dataset_fingerprint(ds)},
        "alpha": alpha, "subset_size": subset_size(ds.n_train, alpha), "seed": seed,
        "arch": arch, "hparams": hparams, "margins_dtype": dtype, "precision": precision,
    }


def resolve_hparams(arch: str, overrides: dict) -> dict:
    hparams = dict(architectures.DEFAULT_HPARAMS[arch])
    unknown = set(overrides) - set(hparams)
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) {sorted(unknown)} for {arch}: known are {sorted(hparams)}")
    hparams.update({k: type(hparams[k])(v) for k, v in overrides.items() if v is not None})
    return hparams


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' -> (i, n): this worker trains the i-th of n equal, disjoint index ranges."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"bad --shard {text!r}: write i/n with 0 <= i < n, e.g. 0/4") from None
    if not 0 <= i < n:
        raise ValueError(f"bad --shard {text!r}: need 0 <= i < n, e.g. 0/4")
    return i, n


def _chunk_data(ds: Dataset, device: str, precision: str, workers: int = 1) -> tuple[int, TrainingData]:
    """A worker's state for training chunks: the dataset resident on its device (its GPU when it was given one);
    on a CPU, its share of the cores as torch threads, `workers` processes sharing them."""
    dev = resolve_device(device)
    if dev.type == "cpu":
        use_all_cores(workers)
    return ds.n_train, TrainingData.from_dataset(ds, dev, precision)


def _chunk_task(state: tuple[int, TrainingData], start: int, end: int, seed: int, alpha: float, arch: str,
                hparams: dict, progress=None) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """One chunk on an executor: (start, masks, margins, predictions) of models [start, end)."""
    n_train, data = state
    return (start, *train_chunk(data, n_train, seed, start, end, alpha, arch, hparams, progress))


def train_chunks(executor, ds: Dataset, chunks: list[tuple[int, int]], *, seed: int, alpha: float, arch: str,
                 hparams: dict, device: str, precision: str, progress: Progress | None = None, workers: int = 1
                 ) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """Train the chunks [start, end) on `executor`; yields (start, masks, margins, predictions) as they come back.

    precision : the run's resolved precision ("fp32" or "bf16"), which every worker trains in. workers : processes
    of this machine sharing its cores (a ProcessExecutor's), so each takes its share as threads. In this process a
    chunk reports progress ("model") as its models train; elsewhere only finished chunks are counted (by the caller).
    """
    offsets = np.cumsum([0] + [e - s for s, e in chunks])
    total = int(offsets[-1])
    items = [(s, e, seed, alpha, arch, hparams,
              part(progress, int(offsets[c]), e - s, total) if executor.in_process else None)
             for c, (s, e) in enumerate(chunks)]
    for _, result in executor.map(_chunk_task, items, setup=partial(_chunk_data, device=device, precision=precision, workers=workers),
                                  shared=ds, name="train_chunk", what="training", sizes=[e - s for s, e in chunks],
                                  unit="models"):
        yield result


def worker_chunk_size(batch_models: int, total: int, workers: int) -> int:
    """Models per chunk on worker processes, which report only finished chunks: at most `batch_models`, and at
    least 8 chunks a worker, so the bar moves (a chunk of 500 Fashion-shaped MLPs is minutes of silence) and the
    workers finish together. A model's result does not depend on its chunk."""
    return max(1, min(batch_models, -(-total // (8 * workers))))


def _chunks(todo: list[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    """The model ranges `todo` cut into chunks [start, end) of at most `size` models."""
    return [(a, min(a + size, e)) for s, e in todo for a in range(s, e, size)]


def train_chunk(data: TrainingData, n_train: int, seed: int, start: int, end: int, alpha: float, arch: str,
                hparams: dict, progress=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Models [start, end) of the run: masks, margins and predicted classes (what one shard holds)."""
    subsets = np.stack([model_subset(seed, m, n_train, alpha) for m in range(start, end)])
    seeds = [model_seed(seed, m) for m in range(start, end)]
    margins, _, predictions = train_models(data, subsets, seeds, arch, hparams, with_predictions=True,
                                           progress=progress)
    return subsets_to_masks(subsets, n_train), margins, predictions


def train_run(
    ds: Dataset,
    spec: str,
    run_dir: Path,
    *,
    alpha: float,
    n_models: int,
    seed: int = 0,
    arch: str | None = None,
    hparams: dict | None = None,
    device: str = "auto",
    batch_models: int | None = None,
    shard: tuple[int, int] = (0, 1),
    dtype: str | None = None,
    precision: str | None = None,
    keep_shards: bool = False,
    progress: Progress | None = None,
    executor=None,
) -> dict:
    """Bring run_dir up to n_models models (this worker's shard of them) and merge; return a summary.

    dtype : margins stored as "float32" or "float16"; None: the run's own (float32 for a new run). A top-up
    with another dtype than the run's is refused. precision : "fp32", "bf16" or "auto" (resolve_precision); None:
    the run's own (auto for a new run); a top-up in another precision than the run's is refused. keep_shards : keep the shards after their merge.

    progress counts the models to train ("model"; backend.progress), fractional while a chunk trains.
    executor : runs the chunks (backend.cluster.executor; default on a CPU `engine.cpu_workers` processes of this
          machine, ProcessExecutor, when more than one pays, else this process, LocalExecutor); whichever runs
          them, this process writes each chunk's shard as it comes back.
    """
    k = subset_size(ds.n_train, alpha)
    if not 0 < k < ds.n_train:
        raise ValueError(f"--alpha {alpha} gives subsets of {k} of the {ds.n_train} training examples: choose alpha "
                         f"between {1.5 / ds.n_train:.2g} and {1 - 1.5 / ds.n_train:.4g}")
    dev = resolve_device(device)
    arch = arch or architectures.default_arch(ds.name, ds.image_shape, dev)
    hparams = resolve_hparams(arch, hparams or {})
    architectures.check_image_shape(arch, ds.image_shape)
    if dev.type == "cpu":
        use_all_cores()
    if precision is not None:
        precision = resolve_precision(precision, dev)
    if MANIFEST.path(run_dir).exists():
        existing = read_manifest(run_dir)
        stored = margins_dtype(existing)
        if dtype is not None and dtype != stored:
            raise ValueError(f"{run_dir} stores {stored} margins: top it up with --dtype {stored} (or start a new --out)")
        dtype = stored
        trained_in = run_precision(existing)
        if precision is not None and precision != trained_in:
            raise ValueError(f"{run_dir} was trained in {trained_in}: top it up with --precision {trained_in} "
                             f"(or start a new --out), not {precision}")
        precision = trained_in
    dtype = dtype or MARGINS.dtype[0]
    precision = precision or resolve_precision("auto", dev)
    manifest = init_run(run_dir, run_manifest(ds, spec, alpha, seed, arch, hparams, dtype, precision),
                        ds.target_labels(), ds.target_images())
    with merge_lock(run_dir):  # another --shard worker's merge may be committing n_models
        update_manifest(run_dir, n_models_requested=max(n_models, manifest.get("n_models_requested", 0)),
                        versions=package_versions(), **code_version())
    K = batch_models or default_batch_models(arch, dev)
    i, n_shards = shard
    lo, hi = (n_models * i) // n_shards, (n_models * (i + 1)) // n_shards
    todo = [(s, e) for s, e in missing_ranges(run_dir, hi, lo)]
    chunks = _chunks(todo, K)
    total = sum(e - s for s, e in chunks)
    if progress:
        progress(0, total, "model")
    started, done = time.time(), 0
    workers = 1
    if executor is None:
        workers = cpu_workers(arch, total, len(chunks)) if dev.type == "cpu" else 1
        if workers > 1:
            executor = ProcessExecutor(workers)
            chunks = _chunks(todo, worker_chunk_size(K, total, workers))
        else:
            executor = LocalExecutor()
    trained = train_chunks(executor, ds, chunks, seed=seed, alpha=alpha, arch=arch, hparams=hparams,
                           device=device, precision=precision, progress=progress, workers=workers)
    for s, masks, margins, predictions in trained:
        write_shard(run_dir, s, masks, margins, predictions, dtype)
        done += len(masks)
        if progress:
            progress(done, total, "model")
    elapsed = time.time() - started
    merge = merge_run(run_dir, ds.n_train, ds.n_train + ds.n_test, keep_shards)
    n_merged = merge["n_models"]
    summary = {"run": str(run_dir), "trained_now": done, "seconds": round(elapsed, 2),
               "models_per_second": round(done / elapsed, 2) if done else None,
               "n_models": n_merged, "device": str(dev), "margins_dtype": dtype, "precision": precision,
               "merge_bytes_written": merge["bytes_written"], "run_bytes": merge["run_bytes"],
               "shards_deleted": merge["shards_deleted"]}
    if n_merged:
        _, accuracy = stored_target_stats(Run(run_dir))
        summary["mean_test_accuracy"] = round(float(accuracy[ds.n_train:].astype(np.float64).mean()), 4)
        with merge_lock(run_dir):
            update_manifest(run_dir, mean_test_accuracy=summary["mean_test_accuracy"])
    if n_merged < n_models:
        summary["note"] = (f"{n_models - n_merged} of the requested models are not yet trained (other --shard workers"
                           " or an interrupted run); rerun train to finish, then merge")
    return summary
