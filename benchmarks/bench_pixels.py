"""The pixel leak-candidate list at CIFAR-10 scale: torch GEMMs (backend.leakage.candidates) against faiss.

Run: .venv/bin/python benchmarks/bench_pixels.py [--test 500] [--train 50000] [--device auto]

Random 32x32x3 images stand in for CIFAR-10 (only shapes matter to the cost). Both sides compute the
exact best-shift pixel correlation of every test image with every training image (nine shifts) and
keep the top 100: ours with one torch GEMM per shift and block of test images, faiss with an
`IndexFlatIP` search per shift, merged by the best similarity per training image. Prints both times,
their ratio, whether the lists agree, and the time extrapolated to CIFAR-10's 10,000 test images.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from backend.datasets.planted import shifted  # noqa: E402
from backend.leakage.candidates import centred_unit_rows, pixel_neighbours  # noqa: E402
from backend.training.engine import resolve_device  # noqa: E402

K = 100


def faiss_pixel_neighbours(test: np.ndarray, train: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The same list with faiss: a flat inner-product search per shift, best similarity per training image."""
    index = faiss.IndexFlatIP(int(np.prod(train.shape[1:])))
    index.add(centred_unit_rows(train))
    best = {}
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            sims, ids = index.search(centred_unit_rows(shifted(test, dy, dx)), k)
            for j in range(len(test)):
                row = best.setdefault(j, {})
                for i, v in zip(ids[j], sims[j]):
                    row[i] = max(row.get(i, -np.inf), v)
    neighbours = np.array([sorted(best[j], key=lambda i: (-best[j][i], i))[:k] for j in range(len(test))])
    return neighbours, np.array([[best[j][i] for i in neighbours[j]] for j in range(len(test))], dtype=np.float32)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--test", type=int, default=500)
    p.add_argument("--train", type=int, default=50_000)
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (args.train, 32, 32, 3), dtype=np.uint8)
    test = rng.integers(0, 256, (args.test, 32, 32, 3), dtype=np.uint8)
    device = resolve_device(args.device)
    print(f"{args.test} test x {args.train} training images of 32x32x3, 9 shifts, top {K}; device {device}, "
          f"cpus {len(os.sched_getaffinity(0))}, load {os.getloadavg()[0]:.1f}")
    t0 = time.perf_counter()
    ours, ours_sim = pixel_neighbours(test, train, K, device=device)
    ours_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref, ref_sim = faiss_pixel_neighbours(test, train, K)
    faiss_s = time.perf_counter() - t0
    print(f"ours (torch): {ours_s:.1f} s   faiss IndexFlatIP: {faiss_s:.1f} s   speed-up {faiss_s / ours_s:.1f}x")
    print(f"same top-{K} lists: {np.mean(ours == ref):.4f} of entries; largest similarity difference "
          f"{np.abs(ours_sim - ref_sim).max():.1e}")
    print(f"extrapolated to 10,000 test images: ours {ours_s * 10_000 / args.test:.0f} s")


if __name__ == "__main__":
    main()
