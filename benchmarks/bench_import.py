"""`import-datamodels-data` on a synthetic release at CIFAR-10 size: time, bytes written, peak RSS, then page queries.

Run: .venv/bin/python benchmarks/bench_import.py [--dir /tmp/s3-import-bench] [--models 20000] [--queries 200] [--keep]

The release is written in the datamodels-data format by a child process: masks bool [M, 50,000], float16
margins [M, 50,000] and [M, 10,000] (M = --models, the last 10,000 the evaluation models), the test
datamodels as a torch.save dict (weight [50,000, 10,000] float32, 90 % zeros), and CIFAR-10 binaries of
random images. The import runs in a child of its own and reports its wall time, the bytes it allocated
in the run (the masks and margins must not be copied) and its peak RSS (goal < 2 GiB). Then the
dashboard's page queries (benchmarks/bench_dashboard.py's `measure`, not a copy) run on the imported run,
with bench_dashboard's random but well-formed analysis artifacts written into it, and the eval stage's
LDS is timed on 1,000 evaluation models x 1,000 test targets. Everything under --dir is deleted at the
end unless --keep.
"""
from __future__ import annotations

import argparse
import multiprocessing
import queue
import resource
import shutil
import time
from pathlib import Path

import numpy as np

import bench_dashboard
from backend.importers import release as rel
from backend.store import schema
from backend.store.artifacts import write_array
from backend.store.run_dir import Run
from tests.dataset_files import write_cifar10_binary  # bench_dashboard put this checkout on the path

N_TRAIN, N_TEST, PCT, BLOCK_ROWS = 50_000, 10_000, 50, 1_000


def write_release(root: Path, n_models: int, seed: int = 0) -> None:
    """The synthetic release and CIFAR-10 binaries under root, block by block."""
    import torch

    rng = np.random.default_rng(seed)
    data = root / "cifar" / "data"
    data.mkdir(parents=True)
    (root / "cifar" / "datamodels").mkdir()
    files = rel.release_files(root / "cifar", PCT)
    masks = np.lib.format.open_memmap(files["masks"], "w+", bool, (n_models, N_TRAIN))
    train = np.lib.format.open_memmap(files["train_margins"], "w+", np.float16, (n_models, N_TRAIN))
    test = np.lib.format.open_memmap(files["test_margins"], "w+", np.float16, (n_models, N_TEST))
    for lo in range(0, n_models, BLOCK_ROWS):
        hi = min(lo + BLOCK_ROWS, n_models)
        masks[lo:hi] = rng.random((hi - lo, N_TRAIN), dtype=np.float32) < PCT / 100
        train[lo:hi] = rng.normal(1.0, 2.0, (hi - lo, N_TRAIN)).astype(np.float16)
        test[lo:hi] = rng.normal(1.0, 2.0, (hi - lo, N_TEST)).astype(np.float16)
    del masks, train, test
    weight = torch.zeros(N_TRAIN, N_TEST)
    for lo in range(0, N_TRAIN, 5_000):
        block = rng.standard_normal((5_000, N_TEST), dtype=np.float32) * 1e-3
        block[rng.random(block.shape, dtype=np.float32) < 0.9] = 0
        weight[lo:lo + 5_000] = torch.from_numpy(block)
    torch.save({"weight": weight, "bias": torch.ones(N_TEST), "lam": torch.full((N_TEST,), 1e-3)}, files["test"])
    del weight
    write_cifar10_binary(root / "cifar10", rng.integers(0, 256, (N_TRAIN, 32, 32, 3), dtype=np.uint8),
                         rng.integers(10, size=N_TRAIN), rng.integers(0, 256, (N_TEST, 32, 32, 3), dtype=np.uint8),
                         rng.integers(10, size=N_TEST), tuple(f"class {c}" for c in range(10)))


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_import(root: Path, out: Path) -> dict:
    started = time.perf_counter()
    summary = rel.import_release(root / "cifar", PCT, root / "cifar10", out, convention="standardized")
    return dict(summary, wall_s=time.perf_counter() - started, peak_rss_mib=_peak_rss_mib())


def add_analysis(out: Path) -> None:
    """bench_dashboard's random analysis artifacts and a random per-target LDS, so every page has its inputs."""
    rng = np.random.default_rng(1)
    bench_dashboard.build_analysis(out, rng)
    write_array(out, schema.LDS, rng.uniform(-1, 1, N_TRAIN + N_TEST).astype(np.float32))


def score_lds(out: Path) -> dict:
    """eval's LDS on 1,000 evaluation models x 1,000 test targets (the held-out margins through the view)."""
    from backend.datamodels.evaluation import lds

    run, heldout = Run(out), Run(out / "heldout")
    started = time.perf_counter()
    lds(run.array(schema.WEIGHTS), run.array(schema.BIAS), heldout.masks[:1000], heldout.margins[:1000], N_TRAIN,
        np.arange(N_TRAIN, N_TRAIN + 1000))
    return {"seconds": time.perf_counter() - started, "peak_rss_mib": _peak_rss_mib()}


def _child(func, args, results) -> None:
    results.put(func(*args))


def in_child(func, *args):
    """func(*args) in a fresh process, so its memory never shows in this one's peak RSS; its return value."""
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    proc = ctx.Process(target=_child, args=(func, args, results))
    proc.start()
    while True:  # read before join: a child blocks on a full pipe until its value is read
        try:
            value = results.get(timeout=5)
            break
        except queue.Empty:
            if not proc.is_alive():
                raise SystemExit(f"{func.__name__} failed with exit code {proc.exitcode}") from None
    proc.join()
    return value


def du(path: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/s3-import-bench"))
    parser.add_argument("--models", type=int, default=20_000, help="models in the release (the last 10,000 evaluate)")
    parser.add_argument("--queries", type=int, default=200, help="random test targets per page query")
    parser.add_argument("--keep", action="store_true", help="keep the release and the run under --dir")
    args = parser.parse_args()
    if args.dir.exists():
        raise SystemExit(f"{args.dir} exists: remove it or pass another --dir")
    try:
        t = time.perf_counter()
        in_child(write_release, args.dir, args.models)
        print(f"synthetic release ({args.models:,} models) and CIFAR-10 binaries: {du(args.dir) / 2**30:.2f} GiB "
              f"written in {time.perf_counter() - t:.0f} s")
        out = args.dir / "runs" / "cifar10-dm50"
        got = in_child(run_import, args.dir, out)
        release_bytes = du(args.dir / "cifar" / "data")
        print(f"import: {got['wall_s']:.1f} s, {got['bytes_written'] / 2**30:.2f} GiB written in the run "
              f"(the release's masks and margins: {release_bytes / 2**30:.2f} GiB, not copied), "
              f"peak RSS {got['peak_rss_mib']:.0f} MiB (goal < 2048 MiB); seconds by step {got['seconds_by_step']}")
        check = got["convention_check"]
        for name in ("standardized", "raw"):
            print(f"  convention {name}: MSE {check[name]['mse']:.4f}, mean error {check[name]['mean_error']:+.4f} "
                  f"({check['models']} evaluation models x {check['targets']} targets; random margins: no convention fits)")
        in_child(add_analysis, out)
        got = in_child(score_lds, out)
        print(f"eval's LDS, 1,000 evaluation models x 1,000 test targets: {got['seconds']:.1f} s, "
              f"peak RSS {got['peak_rss_mib']:.0f} MiB")
        bench_dashboard.measure(out, args.queries, 12)
    finally:
        if not args.keep:
            shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
