"""Reading a block of targets' margins: columns of the model-major margins.npy vs rows of a target-major copy.

Run: .venv/bin/python benchmarks/bench_margin_columns.py [--out /tmp/bench_margin_columns] [--models 2000]
                                                         [--targets 60000] [--block 512]

The fit reads every target's margins once, a block of targets at a time (backend.store.rows.read_columns).
margins.npy is laid out model by model (M, n_targets), so a block of columns is M strided reads; a
target-major copy (n_targets, M) would make it one contiguous read, at the price of a second copy of
the margins written at every merge. This prints the time to read every block both ways, from the page
cache (warm) and after dropping the file's pages from it (cold: posix_fadvise DONTNEED), contiguous
column ranges as the fit reads them and a gather of scattered columns for comparison, with the peak RSS.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backend.store.rows import read_columns, read_rows  # noqa: E402


def build(path: Path, shape: tuple[int, int]) -> None:
    if path.exists():
        return
    out = np.lib.format.open_memmap(path.with_suffix(".tmp"), mode="w+", dtype=np.float32, shape=shape)
    rng = np.random.default_rng(0)
    for lo in range(0, shape[0], 256):
        out[lo:lo + 256] = rng.normal(size=(min(256, shape[0] - lo), shape[1])).astype(np.float32)
    out.flush()
    del out
    path.with_suffix(".tmp").rename(path)


def drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)


def timed(read, n_blocks: int) -> float:
    started = time.perf_counter()
    for b in range(n_blocks):
        read(b)
    return time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("/tmp/bench_margin_columns"))
    p.add_argument("--models", type=int, default=2000)
    p.add_argument("--targets", type=int, default=60000)
    p.add_argument("--block", type=int, default=512)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model_major, target_major = args.out / f"margins-{args.models}x{args.targets}.npy", args.out / "target-major.npy"
    build(model_major, (args.models, args.targets))
    if not target_major.exists():
        mm = np.load(model_major, mmap_mode="r")
        out = np.lib.format.open_memmap(target_major.with_suffix(".tmp"), mode="w+", dtype=np.float32,
                                        shape=(args.targets, args.models))
        for lo in range(0, args.targets, 4096):
            out[lo:lo + 4096] = read_columns(mm, np.arange(lo, min(lo + 4096, args.targets))).T
        out.flush()
        del out, mm
        target_major.with_suffix(".tmp").rename(target_major)
    margins = np.load(model_major, mmap_mode="r")
    copy = np.load(target_major, mmap_mode="r")
    n_blocks = -(-args.targets // args.block)
    cols = [np.arange(b * args.block, min((b + 1) * args.block, args.targets)) for b in range(n_blocks)]
    scattered = np.random.default_rng(1).permutation(args.targets)
    gathers = [np.sort(scattered[b * args.block:(b + 1) * args.block]) for b in range(n_blocks)]
    ways = {
        "model-major, column range (the fit)": (model_major, lambda b: read_columns(margins, cols[b])),
        "model-major, scattered columns": (model_major, lambda b: read_columns(margins, gathers[b])),
        "target-major copy, row range": (target_major, lambda b: read_rows(copy, cols[b]).T),
    }
    size = args.models * args.targets * 4
    print(f"margins {args.models:,} models × {args.targets:,} targets float32 ({size / 2**30:.2f} GiB), "
          f"{n_blocks} blocks of {args.block} targets")
    print(f"{'read':<38} {'warm s':>7} {'cold s':>7} {'cold MB/s':>10} {'peak RSS so far':>16}")
    for name, (path, read) in ways.items():
        timed(read, n_blocks)  # into the page cache
        warm = timed(read, n_blocks)
        drop_cache(path)
        cold = timed(read, n_blocks)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{name:<38} {warm:>7.2f} {cold:>7.2f} {size / cold / 1e6:>10.0f} {rss:>12.0f} MiB")
    print(f"(the margins file is {size / 2**20:.0f} MiB; run again once the files exist for RSS without building them)")


if __name__ == "__main__":
    main()
