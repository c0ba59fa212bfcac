"""Latency of the backend queries behind each dashboard page on a synthetic CIFAR-scale run.

Run: .venv/bin/python benchmarks/bench_dashboard.py [--dir /tmp/cifar-scale] [--queries 500]

The run is built in a child process (so its writes do not count toward this process's peak RSS) and
has the contract's shapes at CIFAR-10 scale: 50,000 training and 10,000 test targets, weights.npy of
shape (60,000, 50,000) float32. Only the 10,000 test rows are written (2 GB, in blocks through
np.lib.format.open_memmap); the training rows stay a hole in a sparse file and read as zeros. Queries
run on random test targets through memory-mapped arrays, as the dashboard does. Prints p50/p95 per
query, the one-off per-target margin summary, and this process's peak RSS. Targets: p95 < 100 ms,
peak RSS < 1 GB. The structure, control and leakage artifacts are random but well-formed, so the PCA,
Clusters, Counterfactuals and Review pages' queries run on the arrays they read; the counterfactual
prediction over every test target is timed for fresh removal sets (the page caches it per removal set).
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's backend, not an installed one

from backend.datamodels import quality  # noqa: E402

from backend.store.artifacts import read_json, write_array, write_json
from backend.store.atomic import save_json, save_npy
from backend.store.manifest import FORMAT_VERSION
from backend.store.run_dir import Run
from backend.store import schema

from backend.training import target_stats

from backend.datasets import thumbnails
from backend.store.rows import read_row, write_transposed
from backend.datamodels.queries import class_members, sparsity, top_weights, weight_profile
from backend.counterfactuals.predict import predict_removal
from backend.leakage.analysis import load_candidates, review_candidates
from backend.attribution import store as attribution_store, yardsticks
from backend.structure import clusters, embeddings, similar_targets
from backend.training.control import control_mean

N_TRAIN, N_TEST, N_MODELS, N_CLASSES = 50_000, 10_000, 2_000, 10
N_HELDOUT, N_LDS_TARGETS = 300, 1_000
BLOCK_ROWS = 500


def build_run(run_dir: Path, seed: int = 0) -> None:
    """Write a CIFAR-scale run with random but consistent arrays, block by block."""
    rng = np.random.default_rng(seed)
    n_targets = N_TRAIN + N_TEST
    run_dir.mkdir(parents=True, exist_ok=True)
    labels = rng.integers(N_CLASSES, size=n_targets)
    save_npy(schema.LABELS.path(run_dir), labels)
    images = np.lib.format.open_memmap(schema.IMAGES.path(run_dir), "w+", np.uint8, (n_targets, 32, 32, 3))
    for lo in range(0, n_targets, 10_000):
        images[lo:lo + 10_000] = rng.integers(256, size=(min(10_000, n_targets - lo), 32, 32, 3), dtype=np.uint8)
    del images
    masks = np.lib.format.open_memmap(schema.MASKS.path(run_dir), "w+", bool, (N_MODELS, N_TRAIN))
    margins = np.lib.format.open_memmap(schema.MARGINS.path(run_dir), "w+", np.float32, (N_MODELS, n_targets))
    for lo in range(0, N_MODELS, BLOCK_ROWS):
        hi = min(lo + BLOCK_ROWS, N_MODELS)
        masks[lo:hi] = rng.random((hi - lo, N_TRAIN)) < 0.5
        margins[lo:hi] = rng.normal(1.0, 2.0, (hi - lo, n_targets)).astype(np.float32)
    del masks, margins
    weights = np.lib.format.open_memmap(schema.WEIGHTS.path(run_dir), "w+", np.float32, (n_targets, N_TRAIN))
    for lo in range(N_TRAIN, n_targets, BLOCK_ROWS):
        hi = min(lo + BLOCK_ROWS, n_targets)
        block = rng.standard_normal((hi - lo, N_TRAIN), dtype=np.float32) * 1e-3
        block[rng.random(block.shape) < 0.9] = 0  # LASSO datamodels are sparse
        weights[lo:hi] = block
    del weights
    # as `fit` writes it beside the weights: the test rows transposed, read by the counterfactual prediction
    write_transposed(np.load(schema.WEIGHTS.path(run_dir), mmap_mode="r"), N_TRAIN, n_targets,
                     schema.WEIGHTS_BY_TRAIN.path(run_dir), 2048)
    write_array(run_dir, schema.BIAS, rng.normal(size=n_targets).astype(np.float32))
    write_array(run_dir, schema.LAM, np.full(n_targets, 1e-3, dtype=np.float32))
    write_array(run_dir, schema.LDS, rng.uniform(-1, 1, n_targets).astype(np.float32))
    manifest = {"dataset": {"spec": "synthetic", "name": "synthetic", "n_train": N_TRAIN, "n_test": N_TEST,
                            "image_shape": [32, 32, 3], "class_names": [f"class {c}" for c in range(N_CLASSES)],
                            "n_classes": N_CLASSES},
                "alpha": 0.5, "seed": seed, "arch": "resnet9", "hparams": {}, "n_models": N_MODELS,
                "format_version": FORMAT_VERSION}
    save_json(schema.MANIFEST.path(run_dir), manifest)
    build_analysis(run_dir, rng)
    heldout = run_dir / "heldout"
    heldout.mkdir()
    save_npy(schema.MASKS.path(heldout), rng.random((N_HELDOUT, N_TRAIN)) < 0.5)
    save_npy(schema.MARGINS.path(heldout), rng.normal(1.0, 2.0, (N_HELDOUT, n_targets)).astype(np.float32))
    save_json(schema.MANIFEST.path(heldout), dict(manifest, seed=seed + 1, n_models=N_HELDOUT))


def build_analysis(run_dir: Path, rng: np.random.Generator, n_components: int = 50, k: int = 10) -> None:
    """Random but well-formed `analyze` outputs (structure/, leakage/, control models) for the page queries."""
    n_targets = N_TRAIN + N_TEST
    def write(artifact, array):
        write_array(run_dir, artifact, array)

    write(schema.CONTROL_MARGINS, rng.normal(1.0, 2.0, (2, n_targets)).astype(np.float32))
    write(schema.CONTROL_FEATURES, rng.random((n_targets, 512), dtype=np.float32))
    write(schema.PCA_COMPONENTS, rng.standard_normal((n_components, N_TRAIN), dtype=np.float32))
    write(schema.PCA_MEAN, np.zeros(N_TRAIN, np.float32))
    variance = np.sort(rng.random(n_components, dtype=np.float32))[::-1]
    write(schema.PCA_EXPLAINED_VARIANCE, variance)
    write(schema.PCA_EXPLAINED_RATIO, variance / variance.sum() / 2)
    write(schema.PCA_PROJECTIONS, rng.standard_normal((n_targets, n_components), dtype=np.float32))
    for ids, layout, silhouette in ((schema.CLUSTERS_BY_CLASS, schema.LAYOUT_BY_CLASS, schema.SILHOUETTE_BY_CLASS),
                                    (schema.CLUSTERS_ALL, schema.LAYOUT_ALL, schema.SILHOUETTE_ALL)):
        write(ids, rng.integers(5, size=N_TEST).astype(np.int32))
        write(layout, rng.standard_normal((N_TEST, 2), dtype=np.float32))
        write(silhouette, rng.uniform(-1, 1, N_TEST).astype(np.float32))
    quality = {"k": 5, "gamma": 1.0, "silhouette": 0.0, "sizes": [], "cluster_silhouettes": []}
    write_json(run_dir, schema.CLUSTERS, {
        "per_class": [dict(quality, **{"class": c, "name": f"class {c}"}) for c in range(N_CLASSES)],
        "whole": dict(quality, nmi=0.0), "pixels": dict(quality, nmi=0.0)})
    write(schema.NEIGHBORS, rng.integers(n_targets, size=(n_targets, k)))
    write(schema.NEIGHBOR_SIMILARITY, rng.random((n_targets, k), dtype=np.float32))
    for artifact in schema.LEAKAGE_LISTS.values():
        write(artifact, rng.integers(N_TRAIN, size=(N_TEST, k)) if artifact.dtype == "int64"
              else rng.random((N_TEST, k), dtype=np.float32))
    write(schema.LEAKAGE_QUEUE, rng.permutation(N_TEST))
    write(schema.LEAKAGE_QUEUE_SCORE, rng.random(N_TEST, dtype=np.float32))
    write_json(run_dir, schema.LEAKAGE_SUMMARY, {"k": k, "n_train": N_TRAIN, "n_test": N_TEST, "pixels": {}})
    build_methods_eval(run_dir, rng)


METHODS, EVAL_TARGETS, MODES = ("datamodels", "trak", "influence", "representer"), 200, ("remove", "mislabel")


def build_methods_eval(run_dir: Path, rng: np.random.Generator) -> None:
    """The Methods page's inputs: each method's meta.json and a methods_eval.json on EVAL_TARGETS targets."""
    from backend.attribution.yardsticks import smaller_fraction, support_cdf

    targets = sorted(rng.choice(N_TEST, EVAL_TARGETS, replace=False).tolist())
    methods, supports = {}, {}
    for m, name in enumerate(METHODS):
        write_json(run_dir, schema.ATTRIBUTION_META, {
            "method": name, "config": {}, "models": {"n_models": N_MODELS, "trained": N_MODELS, "kind": "resnet9"},
            "seconds": 100.0 * (m + 1), "bytes": N_TEST * N_TRAIN * 4, "code_version": {}}, method=name)
        supports[name] = {mode: [None if rng.random() < 0.2 else int(rng.integers(1, 400)) for _ in targets] for mode in MODES}
        methods[name] = {"lds": {"mean": float(rng.uniform(0, 0.5)), "n_targets": N_TEST}, "config": {},
                         "cost": {"seconds": 100.0 * (m + 1), "n_models": N_MODELS, "models_trained": N_MODELS,
                                  "model_kind": "resnet9", "bytes": N_TEST * N_TRAIN * 4},
                         "support": {mode: {"supports": supports[name][mode], "cdf": support_cdf(supports[name][mode]),
                                            "seconds": 60.0} for mode in MODES}, "mislabel_auc": float(rng.uniform(0.5, 1))}
    write_json(run_dir, schema.METHODS_EVAL, {
        "heldout_run": "heldout", "n_heldout_models": N_HELDOUT, "targets": targets, "target_rule": "synthetic",
        "support_params": {"n_models": 50, "k_max": 400, "budget": 10}, "modes": list(MODES), "methods": methods,
        "smaller_support": {mode: {a: {b: smaller_fraction(supports[a][mode], supports[b][mode]) for b in METHODS if b != a}
                         for a in METHODS} for mode in MODES},
        "mislabel": {"n_flipped": N_TRAIN // 20},
        "lds_vs_models": {name: [{"n_models": n, "lds": float(rng.uniform(0, 0.5)), "config": {"models": n}}
                       for n in (500, 1000, N_MODELS)] for name in METHODS}})


def score_lds(run_dir: Path) -> None:
    """Per-target LDS of N_LDS_TARGETS test targets on the held-out models: the eval stage's cost, timed."""
    from backend.datamodels.evaluation import lds

    run, heldout = Run(run_dir), Run(run_dir / "heldout")
    weights = run.array(schema.WEIGHTS)
    bias = run.array(schema.BIAS)
    t = time.perf_counter()
    lds(weights, bias, heldout.masks, heldout.margins, run.n_train, np.arange(run.n_train, run.n_train + N_LDS_TARGETS))
    seconds = time.perf_counter() - t
    print(f"per-target LDS on {heldout.manifest['n_models']} held-out models: {seconds:.1f} s per {N_LDS_TARGETS} targets, "
          f"about {seconds * run.n_targets / N_LDS_TARGETS / 60:.0f} min for all {run.n_targets} (an eval-stage job)")


def summarise_margins(run_dir: Path) -> None:
    """The precompute-side summary the least-stable list reads (target_mean_margin/accuracy.npy)."""
    target_stats.save_target_stats(Run(run_dir))


def in_child(func, *args) -> None:
    """Run func in a fresh process so its memory never shows in this one's peak RSS."""
    proc = multiprocessing.get_context("spawn").Process(target=func, args=args)
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise SystemExit(f"{func.__name__} failed with exit code {proc.exitcode}")


def time_query(name: str, query, targets: np.ndarray) -> dict:
    times = []
    for column in targets:
        t = time.perf_counter()
        query(int(column))
        times.append(time.perf_counter() - t)
    ms = np.array(times) * 1e3
    return {"query": name, "p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)), "max": float(ms.max()),
            "rss": peak_rss_mib()}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="reuse (or build) the synthetic run here, or give a real "
                        "analysed run with heldout/ (e.g. data/runs/fashion); default: a temp dir")
    parser.add_argument("--queries", type=int, default=500, help="random targets per query")
    parser.add_argument("--k", type=int, default=12, help="images per grid")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
        run_dir = args.dir or Path(tmp) / "cifar-scale"
        if not schema.MANIFEST.path(run_dir).exists():
            t = time.perf_counter()
            in_child(build_run, run_dir)
            print(f"built synthetic run in {run_dir} in {time.perf_counter() - t:.0f} s")
        t = time.perf_counter()
        in_child(summarise_margins, run_dir)
        run = Run(run_dir)
        print(f"per-target margin summary ({run.manifest['n_models']} models x {run.n_targets} targets, in chunks): "
              f"{time.perf_counter() - t:.1f} s, once per run")
        in_child(score_lds, run_dir)
        measure(run_dir, args.queries, args.k)


def measure(run_dir: Path, n_queries: int, k: int) -> None:
    run = Run(run_dir)
    weights = run.array(schema.WEIGHTS)
    bias, lam = run.array(schema.BIAS), run.array(schema.LAM)
    mean_margin, accuracy = target_stats.stored_target_stats(run)
    labels, images = run.labels, run.images
    rng = np.random.default_rng(1)
    targets = rng.integers(run.n_train, run.n_targets, size=n_queries)

    def neighbours(column: int) -> None:
        row = read_row(weights, column)
        positive, negative = top_weights(row, k)
        (bias[column], lam[column], mean_margin[column], accuracy[column], sparsity(row))
        for j in (column, *positive, *negative):
            thumbnails.upscale(read_row(images, j), 96)

    def profile(column: int) -> None:
        weight_profile(read_row(weights, column))

    def per_class(column: int) -> None:
        class_members(labels, run.n_train, run.n_targets, int(labels[column]))

    def unstable(column: int) -> None:
        target_stats.lowest_targets(mean_margin, run.n_train, run.n_targets, k)

    lds = quality.stored_lds(run)

    def worst_predicted(column: int) -> None:
        worst = target_stats.lowest_targets(lds, run.n_train, run.n_targets, k)
        for j in worst:
            thumbnails.upscale(read_row(images, j), 96)
        [np.asarray(a[run.n_train:]) for a in (lds, mean_margin, accuracy, labels)]  # the table's columns

    projections, component = embeddings.pca_projections(run), embeddings.pca_components(run)

    def pca_extremes(column: int) -> None:
        pc = column % len(component)
        coordinates = np.asarray(projections[:, pc])
        for start, stop in ((0, run.n_train), (run.n_train, run.n_targets)):
            top, bottom = embeddings.extremes(coordinates[start:stop], k)
        embeddings.extremes(read_row(component, pc), k)
        for j in (*(start + top), *(start + bottom)):
            thumbnails.upscale(read_row(images, j), 96)

    def cluster_members(column: int) -> None:
        c = int(labels[column])
        members, clustering = clusters.class_clustering(run, c)
        chosen = members[clustering.labels == clustering.labels[0]][:k]
        similar, _ = similar_targets.similar_to(run, column)
        for j in (*(run.n_train + chosen), *similar):
            thumbnails.upscale(read_row(images, j), 96)

    control = control_mean(run)
    removal_rng = np.random.default_rng(2)

    def counterfactual(column: int) -> None:
        removed = np.sort(removal_rng.choice(run.n_train, size=20, replace=False))
        predict_removal(run, column, removed, control).flipped

    candidates = load_candidates(run)
    ready = peak_rss_mib()

    def leak_queue(column: int) -> None:
        test = int(candidates.queue[column % run.n_test])
        for candidate in review_candidates(run, candidates, test):
            thumbnails.upscale(read_row(images, candidate.train), 96)

    def methods_page(column: int) -> None:
        # what pages/methods.py reads and derives on every rerun: no per-target work, JSON and globs
        report = read_json(run.dir, schema.METHODS_EVAL, missing_ok=True)
        (attribution_store.available(run), yardsticks.missing_steps(run, report), yardsticks.table_rows(report),
         yardsticks.lds_curves(run, report))

    rows = [time_query(name, query, targets) for name, query in
            [("neighbours (row, top-k +/-, summary, 2k+1 thumbnails)", neighbours), ("weight profile", profile),
             ("per-class listing", per_class), ("least stable list", unstable),
             ("quality: worst predicted k + 10,000-row table columns", worst_predicted),
             ("PCA extremes (both splits, component coords, 2k thumbnails)", pca_extremes),
             ("cluster members + similar targets (2k thumbnails)", cluster_members),
             ("leakage queue: next test image's candidates", leak_queue),
             ("methods: the evaluation table, support CDFs and LDS curves", methods_page)]]
    rows.append(time_query("counterfactual: all test targets, new removal set (uncached)", counterfactual,
                           targets[:max(5, n_queries // 50)]))
    print(f"\n{n_queries} random test targets, weights {weights.shape} float32 memory-mapped, k = {k}")
    print(f"peak RSS before the first query (imports, memory maps opened): {ready:.0f} MiB; load average {os.getloadavg()[0]:.2f}")
    print(f"{'query':62s} {'p50 ms':>8s} {'p95 ms':>8s} {'max ms':>8s} {'peak RSS MiB':>13s}")
    for r in rows:
        print(f"{r['query']:62s} {r['p50']:8.2f} {r['p95']:8.2f} {r['max']:8.2f} {r['rss']:13.0f}")
    peak = peak_rss_mib()
    print(f"peak RSS of the query process: {peak:.0f} MiB (target < 1024 MiB); "
          f"worst p95 {max(r['p95'] for r in rows):.2f} ms (target < 100 ms)")


if __name__ == "__main__":
    main()
