"""A synthetic run for the embeddings map at scale (tests/pages, benchmarks/bench_pages.py): 70,000 targets with
a stored map layout and prediction counts, written in seconds. A fixture, not a run the project makes: it has no
models, so only the pages that read labels, images, predictions and the map draw on it."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from backend.store.artifacts import read_json, write_array, write_json
from backend.store.manifest import init_run
from backend.store.schema import MANIFEST, MAP_LAYOUT, MARGINS, MASKS, TARGET_PREDICTIONS


def write_map_run(run_dir: str | Path, n_train: int = 60_000, n_test: int = 10_000, n_classes: int = 10,
                  n_models: int = 10, seed: int = 0) -> Path:
    """A run of n_train + n_test 8×8 grey images in n_classes classes, each class a blob on the map, each image its
    class's stripe pattern plus noise, with majority predictions right 90 % of the time."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    labels = rng.integers(0, n_classes, n)
    pattern = (np.arange(64).reshape(1, 8, 8) % (labels[:, None, None] + 2) == 0) * 200
    images = np.clip(pattern + rng.integers(0, 56, (n, 8, 8)), 0, 255).astype(np.uint8)[..., None]
    manifest = {"dataset": {"name": "synthetic-map", "spec": "synthetic-map", "n_train": n_train, "n_test": n_test,
                            "n_classes": n_classes, "class_names": [str(c) for c in range(n_classes)],
                            "image_shape": [8, 8, 1]},
                "alpha": 0.5, "seed": seed, "arch": "mlp", "hparams": {"epochs": 1, "batch_size": 64, "hidden": 16}}
    run_dir = Path(run_dir)
    init_run(run_dir, manifest, labels, images)
    centres = 30 * np.column_stack([np.cos(labels * 2 * np.pi / n_classes), np.sin(labels * 2 * np.pi / n_classes)])
    write_array(run_dir, MAP_LAYOUT, (centres + rng.normal(0, 5, (n, 2))).astype(np.float32))
    predicted = np.where(rng.random(n) < 0.9, labels, (labels + 1) % n_classes)
    counts = np.zeros((n, n_classes), dtype=np.int32)
    counts[np.arange(n), predicted] = n_models - n_models // 3
    counts[np.arange(n), (predicted + 3) % n_classes] = n_models // 3
    write_array(run_dir, TARGET_PREDICTIONS, counts)
    # Random masks and margins: prediction counts are read only beside the models they count.
    write_array(run_dir, MASKS, rng.random((n_models, n_train)) < 0.5)
    write_array(run_dir, MARGINS, rng.normal(1, 1, (n_models, n)).astype(np.float32))
    write_json(run_dir, MANIFEST, dict(read_json(run_dir, MANIFEST), n_models=n_models))
    return run_dir
