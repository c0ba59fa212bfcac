"""The Dataset page at Fashion-MNIST size (70,000 targets) in Chromium: a synthetic run, then bench_pages.py on it.

Run: .venv/bin/python benchmarks/bench_dataset_page.py [--dir /tmp/dataset-70k]

The run has Fashion-MNIST's shape (60,000 training and 10,000 test targets, 28×28 grey images, 10 classes) and
every field the Dataset page reads: 50 models' masks and margins with their per-target summaries and prediction
counts, per-target LDS, one method's self-scores, the leak queue's scores and whole-test-set clusters, random but
well-formed (the page's cost depends on the number of targets, not on the values). Then bench_pages.py times the
Dataset page (first visit and warm, each by its sidebar link, with the server's CPU seconds beside the wall time)
and a view that filters, sorts by a float field and opens a late page, with the load average.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backend.store import schema  # noqa: E402
from backend.store.artifacts import write_array, write_json  # noqa: E402
from backend.store.atomic import save_json, save_npy  # noqa: E402
from backend.store.manifest import init_run, read_manifest  # noqa: E402
from backend.store.run_dir import Run  # noqa: E402
from backend.training import target_stats  # noqa: E402

N_TRAIN, N_TEST, N_MODELS, N_CLASSES = 60_000, 10_000, 50, 10
RUN = "fashion-70k"
VIEW = "split=test&correct=no&sort=lds&desc=1&range=margin:-5:5&page=3"


def build_run(run_dir: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    n_targets = N_TRAIN + N_TEST
    labels = rng.integers(N_CLASSES, size=n_targets)
    images = rng.integers(256, size=(n_targets, 28, 28, 1), dtype=np.uint8)
    init_run(run_dir, {"dataset": {"spec": "synthetic", "name": "synthetic", "n_train": N_TRAIN, "n_test": N_TEST,
                                   "image_shape": [28, 28, 1], "class_names": [f"class {c}" for c in range(N_CLASSES)],
                                   "n_classes": N_CLASSES},
                       "alpha": 0.5, "seed": seed, "arch": "mlp", "hparams": {}}, labels, images)
    save_npy(schema.MASKS.path(run_dir), rng.random((N_MODELS, N_TRAIN)) < 0.5)
    save_npy(schema.MARGINS.path(run_dir), rng.normal(1.0, 2.0, (N_MODELS, n_targets)).astype(np.float32))
    save_json(schema.MANIFEST.path(run_dir), dict(read_manifest(run_dir), n_models=N_MODELS))
    run = Run(run_dir)
    target_stats.save_target_stats(run)
    counts = rng.multinomial(N_MODELS, np.full(N_CLASSES, 1 / N_CLASSES), size=n_targets).astype(np.int32)
    write_array(run_dir, schema.TARGET_PREDICTIONS, counts)
    write_array(run_dir, schema.LDS, rng.uniform(-1, 1, n_targets).astype(np.float32))
    write_array(run_dir, schema.ATTRIBUTION_SELF_SCORES, rng.random(N_TRAIN, dtype=np.float32), method="trak")
    write_json(run_dir, schema.ATTRIBUTION_META, {"method": "trak", "config": {}, "models": {}, "seconds": 1.0,
                                                 "bytes": 0, "code_version": {}}, method="trak")
    write_array(run_dir, schema.LEAKAGE_QUEUE_SCORE, rng.random(N_TEST, dtype=np.float32))
    write_array(run_dir, schema.CLUSTERS_ALL, rng.integers(20, size=N_TEST).astype(np.int32))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/dataset-70k"), help="data directory (built if missing)")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    run_dir = args.dir / "runs" / RUN
    if not schema.CLUSTERS_ALL.path(run_dir).exists():
        build_run(run_dir)
    table = __import__("backend.api", fromlist=["open_run"]).open_run(run_dir).table()
    assert table.n_targets == N_TRAIN + N_TEST and len(table.fields) == 10, table.fields
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_pages.py"), "--data-dir", str(args.dir),
                    "--run", RUN, "--chromium", args.chromium, "--pages", "Dataset", "--view", f"dataset:{VIEW}"],
                   check=True)


if __name__ == "__main__":
    main()
