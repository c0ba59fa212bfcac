"""analyze_structure at CIFAR-10 scale: wall time, time per stage and peak resident memory.

Run: .venv/bin/python benchmarks/bench_analyze.py [--out /tmp/bench_analyze_run] [--fit-rows 10000] [--device auto]

It builds (once; kept in --out) a synthetic run in the CIFAR-10 shape: 50,000 training and 10,000 test
targets, so weights.npy is 60,000 × 50,000 float32 (12 GB, written block by block, never held), plus
control features (60,000 × 512) for the representation baseline. Each datamodel is sparse, as LASSO
datamodels are: 300 non-zeros, most of them on training examples of its own class and sub-population
(10 classes × 5 sub-populations), so clusters and neighbours have something to find.

The analysis runs in a fresh process, so the peak RSS printed is analyze_structure's alone (the
weights are read with file reads, not through a mapping, so page cache is not counted as RSS). Then
it compares the stored 10 neighbours with the exact nearest by cosine in the full 50,000 dimensions,
computed here independently (dense GEMMs) for a sample of targets, and so does the alternative that was
measured against the exact search: the nearest by cosine of the PCA coordinates (faiss IndexFlatIP on the
stored projections, the best an IVF or HNSW index on them could do).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backend.store.atomic import save_json, save_npy

N_TRAIN, N_TEST, N_CLASSES, N_SUB = 50_000, 10_000, 10, 5
NNZ_SAME, NNZ_CLASS, NNZ_OTHER = 150, 100, 50
FEATURES = 512


def groups(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Class and sub-population of each of n targets laid out class-major (contiguous equal blocks)."""
    per_class = n // N_CLASSES
    index = np.arange(n)
    return index // per_class, (index % per_class) // (per_class // N_SUB)


def build(out: Path, seed: int = 0) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    train_class, train_sub = groups(N_TRAIN)
    test_class, test_sub = groups(N_TEST)
    labels = np.concatenate([train_class, test_class]).astype(np.int64)
    subs = np.concatenate([train_sub, test_sub])
    colours = rng.integers(40, 215, size=(N_CLASSES, 3))
    images = np.clip(colours[labels][:, None, None, :] + rng.normal(0, 60, (len(labels), 32, 32, 3)), 0, 255).astype(np.uint8)
    save_npy(out / "labels.npy", labels)
    save_npy(out / "images.npy", images)
    del images

    # Representation baseline: non-negative features with a class direction and noise.
    directions = rng.normal(size=(N_CLASSES * N_SUB, FEATURES)).astype(np.float32)
    features = np.maximum(directions[labels * N_SUB + subs] + rng.normal(0, 1.5, (len(labels), FEATURES)), 0).astype(np.float32)
    save_npy(out / "control_features.npy", features)
    save_npy(out / "control_margins.npy", np.zeros((1, len(labels)), dtype=np.float32))

    sub_size, class_size = N_TRAIN // (N_CLASSES * N_SUB), N_TRAIN // N_CLASSES
    weights = np.lib.format.open_memmap(out / "weights.npy.tmp", mode="w+", dtype=np.float32,
                                        shape=(N_TRAIN + N_TEST, N_TRAIN))
    block = 2000
    started = time.perf_counter()
    for lo in range(0, len(labels), block):
        hi = min(lo + block, len(labels))
        b = hi - lo
        c, s = labels[lo:hi, None], subs[lo:hi, None]
        rows = np.zeros((b, N_TRAIN), dtype=np.float32)
        r = np.arange(b)[:, None]
        rows[r, c * class_size + s * sub_size + rng.integers(0, sub_size, (b, NNZ_SAME))] = np.abs(rng.normal(0, 0.02, (b, NNZ_SAME)))
        rows[r, c * class_size + rng.integers(0, class_size, (b, NNZ_CLASS))] = rng.normal(0.002, 0.01, (b, NNZ_CLASS))
        rows[r, rng.integers(0, N_TRAIN, (b, NNZ_OTHER))] = rng.normal(0, 0.005, (b, NNZ_OTHER))
        weights[lo:hi] = rows
        print(f"\rwriting weights.npy: {hi:,}/{len(labels):,} rows ({time.perf_counter() - started:.0f} s)", end="", flush=True)
    weights.flush()
    del weights
    (out / "weights.npy.tmp").rename(out / "weights.npy")
    print()
    save_json(out / "manifest.json", {
        "dataset": {"spec": "synthetic", "name": "synthetic-cifar-shape", "n_train": N_TRAIN, "n_test": N_TEST,
                    "image_shape": [32, 32, 3], "class_names": [f"class{c}" for c in range(N_CLASSES)],
                    "n_classes": N_CLASSES},
        "alpha": 0.5, "seed": seed, "arch": "resnet9", "hparams": {}, "n_models": 0, "format_version": 1})


def analyze(out: Path, fit_rows: int | None, device: str) -> None:
    """The measured part, run in its own process: print the summary, wall time and peak RSS as JSON."""
    from backend.store.run_dir import Run
    from backend.structure.analyze import analyze_structure

    started = time.perf_counter()
    summary = analyze_structure(Run(out), fit_rows=fit_rows, device=device)
    wall = time.perf_counter() - started
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({"wall_s": round(wall, 1), "peak_rss_gib": round(peak_gib, 2), "summary": summary}))


def neighbour_quality(out: Path, n_queries: int, seed: int = 0) -> dict:
    """The stored 10 neighbours of sampled targets against the exact ones (cosine in all 50,000 dimensions).

    recall@10: share of the exact top 10 found; within top 50: share of the stored 10 that are among the
    exact top 50; cosine ratio: mean exact cosine of the stored 10 over that of the exact top 10.
    """
    import faiss
    import torch

    from backend.structure.embeddings import EmbeddingRows

    weights = np.load(out / "weights.npy", mmap_mode="r")
    stored = np.load(out / "structure" / "neighbors.npy")
    queries = np.sort(np.random.default_rng(seed).choice(len(weights), n_queries, replace=False))
    q = next(iter(EmbeddingRows(weights, queries, block_rows=n_queries)))[2]
    sims = torch.empty(n_queries, len(weights))
    for lo, hi, x in EmbeddingRows(weights):
        sims[:, lo:hi] = q @ x.T
    sims[torch.arange(n_queries), torch.as_tensor(queries)] = -float("inf")
    top50 = sims.topk(50, dim=1).indices.numpy()
    exact_cos = sims.topk(10, dim=1).values.mean().item()
    projections = np.ascontiguousarray(np.load(out / "structure" / "pca_projections.npy"), dtype=np.float32)
    faiss.normalize_L2(projections)
    index = faiss.IndexFlatIP(projections.shape[1])
    index.add(projections)
    started = time.perf_counter()
    pca_found = index.search(projections[queries], 11)[1]
    pca_seconds = (time.perf_counter() - started) * len(weights) / n_queries
    pca_found = np.array([[j for j in row if j != i][:10] for i, row in zip(queries, pca_found)])
    result = {}
    for name, found in (("stored (exact search)", stored[queries]), ("PCA coordinates + faiss", pca_found)):
        found_cos = torch.gather(sims, 1, torch.as_tensor(found)).mean().item()
        result[name] = {"recall@10": np.mean([len(set(a) & set(b[:10])) / 10 for a, b in zip(found, top50)]),
                        "within top 50": np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, top50)]),
                        "cosine ratio": found_cos / exact_cos}
    result["PCA coordinates + faiss"]["seconds for all targets"] = pca_seconds
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_analyze_run"), help="synthetic run (built if missing)")
    parser.add_argument("--fit-rows", type=int, default=10_000, help="training targets the PCA is fit on (default 10,000 of 50,000)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--recall-queries", type=int, default=200, help="targets checked against exact neighbours (0: skip)")
    parser.add_argument("--analyze-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.analyze_only:
        analyze(args.out, args.fit_rows, args.device)
        return
    if not (args.out / "manifest.json").exists():
        # Built in a child process: Linux keeps a process's peak RSS across exec, and the analysis's process
        # starts from this one, so a build here (12 GB through a mapping) would show up as its peak.
        started = time.perf_counter()
        builder = multiprocessing.get_context("spawn").Process(target=build, args=(args.out,))
        builder.start()
        builder.join()
        if builder.exitcode != 0:
            sys.exit(f"building {args.out} failed (exit {builder.exitcode})")
        print(f"built {args.out} in {time.perf_counter() - started:.0f} s")
    proc = subprocess.run([sys.executable, __file__, "--analyze-only", "--out", str(args.out), "--fit-rows",
                           str(args.fit_rows), "--device", args.device], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(proc.stderr[-3000:])
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    summary = result["summary"]
    print(f"analyze_structure on {N_TRAIN:,} train + {N_TEST:,} test targets × {N_TRAIN:,} weights "
          f"(PCA fit on {summary['pca']['fit_targets']:,} training targets, {summary['device']}):")
    print(f"  wall {result['wall_s']:.1f} s, CPU {sum(summary['cpu_seconds'].values()):.1f} s, peak RSS {result['peak_rss_gib']:.2f} GiB, "
          f"load average {os.getloadavg()[0]:.2f}")
    print("  stages (wall s / CPU s, peak RSS so far in GiB): " + ", ".join(
        f"{k} {v} / {summary['cpu_seconds'][k]} ({summary['peak_rss_mib'][k] / 1024:.2f})" for k, v in summary["seconds"].items()))
    print(f"  {summary['effective_dimensionality']}")
    whole = summary["clusters"]["whole_test_set"]
    print(f"  whole-test-set NMI: datamodels {whole['nmi_datamodels']}, raw pixels {whole['nmi_raw_pixels']}")
    print(f"  embedding space: {summary['embedding_space']}; neighbours: {summary['neighbors']['index']}")
    if args.recall_queries:
        print(f"  neighbours vs exact full-dimension cosine ({args.recall_queries} targets):")
        for name, quality in neighbour_quality(args.out, args.recall_queries).items():
            print(f"    {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in quality.items()))


if __name__ == "__main__":
    main()
