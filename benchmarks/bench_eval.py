"""`eval`'s stages at CIFAR shape, before and after GEMM-speed evaluation, side by side in one process.

Run: .venv/bin/python benchmarks/bench_eval.py [--out /tmp/bench_eval_run] [--scale 0.2] [--models 10000]
         [--heldout-models 1000] [--targets 2400] [--test-only] [--before 77caa84]

Builds a synthetic run with benchmarks/bench_scale.py's generator (50,000 train + 10,000 test targets × --scale,
as many features as training targets; α = 0.5 masks, margins with a sparse linear signal), a held-out run of
--heldout-models models (seed 1) and fitted-looking datamodels for the evaluated targets (each target's true
effects plus 300 small random weights; weights.npy is a sparse file, 12 GB at --scale 1 if it were written).
Then, for --targets targets in the run's train/test proportion (the first training and the first test targets:
contiguous columns, as `eval` reads them; --test-only: test targets only, as after `fit --targets test`),
times each stage of `eval` with `backend.datamodels.evaluation` as it is and as it was at commit --before
(read from git): the LDS on the held-out models and Table 5 (difference of means and empirical influence over
the fit models, three predictors scored on the held-out models). Prints wall and CPU seconds (all threads) per
stage, the ratio, and the largest difference of any per-target number between the two, with the machine's
load. `eval` itself now takes the LDS from Table 5's pass (its datamodel predictions are made there anyway), so
the row "eval" sets the old code's two stages against the new Table 5 alone. Then both extrapolated to every
target of the run: the old code's cost is per target; the new one's Table 5 also computes its kernels once per
call (timed apart), so only the rest scales with the targets.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import bench_scale  # noqa: E402

NOISE_WEIGHTS = 300


def evaluated(n_train: int, n_targets: int, count: int, test_only: bool = False) -> np.ndarray:
    """The first training and the first test targets, in the run's train/test proportion (or test targets
    only): contiguous columns, as `eval` reads them (all fitted targets, in blocks)."""
    n_tr = 0 if test_only else round(count * n_train / n_targets)
    return np.concatenate([np.arange(n_tr), n_train + np.arange(count - n_tr)])


def build(out: Path, scale: float, n_models: int, n_heldout: int, count: int, test_only: bool = False) -> None:
    """The run, its held-out run (other models: other seeds) and datamodels near the generator's true effects
    for the `count` evaluated targets (weights.npy is a sparse file: at CIFAR shape all of it is 12 GB)."""
    from backend.store import schema

    bench_scale.create(out, scale)
    bench_scale.write_shards(out, 0, n_models, scale)
    bench_scale.merge(out)
    bench_scale.create(out / "heldout", scale, seed=1)
    bench_scale.write_shards(out / "heldout", 0, n_heldout, scale, first_seed=10**6)
    bench_scale.merge(out / "heldout")
    n_train, n_test = bench_scale.sizes(scale)
    n_targets = n_train + n_test
    effects = np.random.default_rng(1)  # the generator's effects (bench_scale.write_shards)
    support = effects.integers(n_train, size=(n_targets, bench_scale.SIGNAL))
    weight = effects.normal(0, 0.3, size=(n_targets, bench_scale.SIGNAL)).astype(np.float32)
    rng = np.random.default_rng(2)
    weights = np.lib.format.open_memmap(schema.WEIGHTS.path(out), "w+", np.float32, (n_targets, n_train))
    columns = evaluated(n_train, n_targets, count, test_only)
    for lo in range(0, len(columns), 1000):
        cols = columns[lo:lo + 1000]
        block = np.zeros((len(cols), n_train), np.float32)
        rows = np.arange(len(cols))[:, None]
        block[rows, rng.integers(n_train, size=(len(cols), NOISE_WEIGHTS))] = rng.normal(0, 0.01, (len(cols), NOISE_WEIGHTS))
        block[rows, support[cols]] += weight[cols]
        weights[cols] = block
    weights.flush()
    del weights
    np.save(schema.BIAS.path(out), np.ones(n_targets, np.float32))


def load_before(rev: str):
    """backend.datamodels.evaluation as it was at git revision `rev`, imported under another name. Only its
    lds and table5 run here: its imports of the run store (moved since) are cut to names."""
    source = subprocess.run(["git", "show", f"{rev}:backend/datamodels/evaluation.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    source = "\n".join(f"{', '.join(n.strip() for n in line.split(' import ')[1].split(','))} = (None,) * "
                        f"{len(line.split(' import ')[1].split(','))}"
                        if line.startswith("from backend.") else line for line in source.splitlines())
    with tempfile.TemporaryDirectory() as tmp:  # the module keeps no reference to its file once executed
        path = Path(tmp) / "evaluation_before.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location("evaluation_before", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


def once_per_call(module) -> dict:
    """Wall and CPU seconds `module`'s Table 5 spends on work done once per call whatever the number of targets
    (computing its Kernels, where it has them), accumulated into the returned dict."""
    spent = {"wall": 0.0, "cpu": 0.0, "depth": 0}
    kernels = getattr(module, "Kernels", None)
    for name, cache in (("plain_float32", "_plain"), ("all_models", "_all")) if kernels else ():
        def wrapped(self, method=getattr(kernels, name), cache=cache):
            if getattr(self, cache) is not None or spent["depth"]:  # cached, or inside one being timed
                return method(self)
            spent["depth"] += 1
            result, wall, cpu = timed(lambda: method(self))
            spent["depth"] -= 1
            spent["wall"], spent["cpu"] = spent["wall"] + wall, spent["cpu"] + cpu
            return result
        setattr(kernels, name, wrapped)
    return spent


def timed(call):
    wall, cpu = time.perf_counter(), time.process_time()
    result = call()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_eval_run"))
    parser.add_argument("--scale", type=float, default=0.2, help="fraction of CIFAR-10's 50,000 + 10,000 targets "
                        "(and features)")
    parser.add_argument("--models", type=int, default=10_000)
    parser.add_argument("--heldout-models", type=int, default=1000)
    parser.add_argument("--targets", type=int, default=2400, help="targets evaluated (the first of each kind)")
    parser.add_argument("--test-only", action="store_true", help="evaluate test targets only, as `eval` does "
                        "after `fit --targets test` (make fashion)")
    parser.add_argument("--before", default="77caa84", help="git revision of the evaluation to compare with")
    args = parser.parse_args()
    from backend.datamodels import evaluation as after
    from backend.store.run_dir import Run
    from backend.store.schema import BIAS, WEIGHTS

    if not (args.out / "heldout").exists():
        started = time.perf_counter()
        build(args.out, args.scale, args.models, args.heldout_models, args.targets, args.test_only)
        (args.out / "bench_eval_targets.txt").write_text(f"{args.targets} {int(args.test_only)}")
        print(f"built {args.out} in {time.perf_counter() - started:.0f} s")
    built, test_only = map(int, (args.out / "bench_eval_targets.txt").read_text().split())
    if args.targets > built or args.test_only != test_only:
        raise SystemExit(f"{args.out} holds datamodels for {built} targets{' (test only)' * test_only}: give "
                         f"--targets {built} or less{' --test-only' * test_only}, or another --out")
    before = load_before(args.before)
    run, heldout = Run(args.out), Run(args.out / "heldout")
    n_train, n_test = run.n_train, run.n_test
    columns = evaluated(n_train, run.n_targets, args.targets, args.test_only)
    n_tr = int((columns < n_train).sum())
    weights, bias = run.array(WEIGHTS), run.array(BIAS)
    print(f"run: {len(run.masks):,} fit models, {len(heldout.masks):,} held-out models, {n_train:,} features "
          f"(training images), {run.n_targets:,} targets ({n_train:,} train + {n_test:,} test); evaluating "
          f"{len(columns):,} of them ({n_tr:,} train, {len(columns) - n_tr:,} test); torch threads "
          f"{__import__('torch').get_num_threads()}")
    stages = {
        "LDS": lambda ev: ev.lds(weights, bias, heldout.masks, heldout.margins, n_train, columns),
        "Table 5": lambda ev: ev.table5(weights, bias, run.masks, run.margins, heldout.masks, heldout.margins,
                                        n_train, columns),
    }
    print(f"\n{'stage':10s} {'before wall/CPU s':>18s} {'after wall/CPU s':>17s} {'CPU ratio':>10s} "
          f"{'wall ratio':>10s} {'max |Δ| of a score':>19s}  load")
    totals = np.zeros(4)
    fixed = once_per_call(after)
    results = {}
    for name, stage in stages.items():
        new, new_wall, new_cpu = timed(lambda: stage(after))
        old, old_wall, old_cpu = timed(lambda: stage(before))
        results[name] = old, new
        if name == "LDS":
            pairs = [(old["spearman"], new["spearman"]), (old["mse"], new["mse"])]
        else:  # the new Table 5's LDS against the old lds()
            pairs = [(old[e][k], new[e][k]) for e in after.ESTIMATORS for k in old[e]]
            pairs += [(results["LDS"][0][k], new["lds"][k]) for k in ("spearman", "mse")]
        diff = max(float(np.nanmax(np.abs(a - b))) for a, b in pairs)
        same_nan = all(np.array_equal(np.isnan(a), np.isnan(b)) for a, b in pairs)
        totals += (old_wall, old_cpu, 0, 0) if name == "LDS" else (old_wall, old_cpu, new_wall, new_cpu)
        print(f"{name:10s} {old_wall:8.1f} / {old_cpu:7.1f} {new_wall:8.1f} / {new_cpu:6.1f} {old_cpu / new_cpu:9.1f}× "
              f"{old_wall / new_wall:9.1f}× {diff:19.2e}  {os.getloadavg()[0]:.1f}"
              + ("" if same_nan else "  (NaN where the other is not!)"))
    print(f"{'eval':10s} {totals[0]:8.1f} / {totals[1]:7.1f} {totals[2]:8.1f} / {totals[3]:6.1f} "
          f"{totals[1] / totals[3]:9.1f}× {totals[0] / totals[2]:9.1f}×  (before: LDS + Table 5; after: Table 5, "
          "which gives the LDS)")
    # The old code's cost is per target; the new code's Table 5 also pays its kernels once per call, so an
    # extrapolation to every target scales only the rest (the slice keeps the run's train/test proportion).
    grow = run.n_targets / len(columns)
    full = {kind: (totals[i], totals[i] * grow, totals[2 + i], fixed[kind] + (totals[2 + i] - fixed[kind]) * grow)
            for i, kind in enumerate(("wall", "cpu"))}
    print(f"\nof the after's Table 5, once per call whatever the targets (its kernels): {fixed['wall']:.1f} s wall, "
          f"{fixed['cpu']:.1f} s CPU")
    for kind, (old, old_all, new, new_all) in full.items():
        print(f"all {run.n_targets:,} targets at this shape, {kind} s extrapolated: before {old_all:,.0f}, after "
              f"{new_all:,.0f} ({old_all / new_all:.1f}×; measured on {len(columns):,}: {old / new:.1f}×)")


if __name__ == "__main__":
    main()
