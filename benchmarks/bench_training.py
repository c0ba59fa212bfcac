"""The training engine against this machine's own GEMM peak, fp32 and bf16, all measured in one run.

Run: .venv/bin/python benchmarks/bench_training.py [--threads N] [--quick]

Every time is CPU seconds of this process (`clock`); with --threads 1 that is one core's time.

Prints, in order:
1. the fp32 and bf16 GEMM peak (best of a square torch.mm);
2. models/s and achieved GFLOP/s of the digits MLP (64 -> 128 -> 10, batch 64), a Fashion-MNIST-shaped MLP
   (784 -> 128 -> 10, batch 256) and the small CNN (28x28, batch 128) at several K, fp32 and bf16, with
   the fraction of the same precision's GEMM peak; steady-state training steps only (timed between
   the engine's progress calls), so initialisation and the margins pass are left out;
3. each trick of the hot path on and off, at the step level;
4. real size: seconds per model on a 60,000 x 784 synthetic dataset at alpha = 1/2, fp32 and bf16: the issue's
   MLP (64 hidden, 5 epochs) and the Fashion recipe's (128 hidden, 10 epochs) trained whole, margins included,
   with the FLOP floor of 2,000 such models at this run's peaks; the CNN projected from its fastest steps;
5. `make run`'s digits train stage, wall and CPU seconds: this tree, this tree in one process, and a baseline
   revision (`--stage-baseline`), alternated (`train_stage`); `--only-stage` runs this section alone.

FLOPs are counted from the layer shapes, never from time. A matmul (B x D) @ (D x H) is 2BDH. A training
step costs the forward pass, the weight gradients (one matmul each) and the input gradients of every layer
but the first (the images need none): for the MLP 2B(DH + HC) + 2B(DH + HC) + 2B(HC) = 2B(2DH + 3HC) per
model, and for a 3x3 convolution 2·Hout·Wout·Cout·Cin·9 per image, counted the same way. (The common
"3 x forward" convention would add the first layer's input gradient, which is never computed.)
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from backend.datasets import Dataset
from backend.training import architectures
from backend.training.engine import TrainingData, cache_group, epoch_orders, evaluate, train_models
from backend.training.mlp_step import MLPStep, with_ones_column
from backend.training.train_stage import resolve_hparams

PRECISIONS = ("fp32", "bf16")
# CPU seconds of this process, not wall time: on the shared 2-core machine (load 6-20) the wall clock counts the
# other jobs' time slices, which swung the same GEMM 5x within a minute. Every time below, GEMM peak included,
# is on this one clock, so the fractions of peak compare like with like; with --threads 1 they are one core's.
clock = time.process_time
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def gemm_peak(dtype: torch.dtype, size: int = 2048, repeat: int = 8) -> float:
    """GFLOP/s of the best of `repeat` square torch.mm calls."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeat):
        t = clock()
        torch.mm(a, b)
        best = min(best, clock() - t)
    return 2 * size**3 / best / 1e9


def mlp_step_flops(d: int, h: int, c: int, b: int) -> float:
    """Matmul FLOPs of one MLP training step of one model (module docstring)."""
    return 2 * b * (2 * d * h + 3 * h * c)


def cnn_step_flops(hw: int, c_in: int, b: int, width: float = 1.0, n_classes: int = 10) -> float:
    """Convolution and head FLOPs of one small-CNN training step of one model: fwd + weight grads everywhere,
    input grads everywhere but the first convolution (BatchNorm, ReLU and pooling are not counted)."""
    c1, c2, c3 = (max(1, int(round(c * width))) for c in (16, 32, 64))
    s1 = (hw + 1) // 2           # stride-2 first convolution
    s2 = s1 // 2                 # after the first pool
    s3 = s2 // 2                 # after the second pool
    convs = [2 * s1 * s1 * c1 * c_in * 9, 2 * s2 * s2 * c2 * c1 * 9, 2 * s3 * s3 * c3 * c2 * 9]
    fc = 2 * c3 * n_classes
    return b * (2 * sum(convs) + sum(convs[1:]) + 3 * fc)


def synthetic(n: int, hw: int, c: int = 1, n_test: int = 200, seed: int = 0) -> Dataset:
    """Random uint8 images whose label is a brightness bucket (learnable, so the run is a real training run)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n + n_test, hw, hw, c), dtype=np.uint8)
    labels = np.minimum(images[:, : hw // 2].mean(axis=(1, 2, 3)).astype(np.int64) * 10 // 256, 9)
    return Dataset(name="synthetic", train_images=images[:n], train_labels=labels[:n], test_images=images[n:],
                   test_labels=labels[n:], class_names=tuple(str(i) for i in range(10)))


WARMUP = 5


class _Enough(Exception):
    """Raised from the progress callback once enough steps were timed (real-size runs stop early)."""


def step_seconds(ds: Dataset, arch: str, hp: dict, K: int, precision: str, alpha: float = 0.5,
                 max_steps: int | None = None) -> float:
    """Seconds per training step of all K models, at the fastest steady-state pace (the first WARMUP steps, where
    oneDNN builds its kernels for each new shape, left out). Best-of, like the GEMM peak: on a shared machine
    whose other jobs swing the GEMM rate 5x within a minute, only the two best cases make a stable ratio.

    The engine may train K MLPs as several cache-sized groups one after another (`engine.cache_group`): each
    progress call then covers one group's step, so a step's share of the work is read from the progress
    fraction, not assumed to be all K models."""
    data = TrainingData.from_dataset(ds, torch.device("cpu"), precision)
    n = int(round(alpha * ds.n_train))
    rng = np.random.default_rng(1)
    subsets = np.stack([np.sort(rng.choice(ds.n_train, n, replace=False)) for _ in range(K)])
    stamps: list[tuple[float, float]] = []

    def tick(done: float, of: float, _unit: str) -> None:
        stamps.append((clock(), done / of))
        if max_steps is not None and len(stamps) > WARMUP + max_steps:
            raise _Enough

    try:
        train_models(data, subsets, list(range(K)), arch, hp, progress=tick)
    except _Enough:
        pass
    t, f = np.array(stamps[WARMUP:]).T
    steps_per_model = (n // min(int(hp["batch_size"]), n)) * int(hp["epochs"])
    return float((np.diff(t) / np.diff(f)).min()) / steps_per_model


def throughput_table(peaks: dict, quick: bool) -> None:
    cases = [
        ("digits MLP 64-128-10 b64", "mlp", dict(hidden=128, batch_size=64, epochs=1), 8, (1, 100, 500),
         lambda b: mlp_step_flops(64, 128, 10, b)),
        ("Fashion MLP 784-128-10 b256", "mlp", dict(hidden=128, batch_size=256, epochs=1), 28, (1, 32, 128),
         lambda b: mlp_step_flops(784, 128, 10, b)),
        ("CNN 28x28 b128", "cnn", dict(batch_size=128, epochs=1), 28, (1, 8, 32),
         lambda b: cnn_step_flops(28, 1, b)),
    ]
    steps = WARMUP + (10 if quick else 30)
    rows = []
    print(f"\n2. Training throughput (fastest steady-state step; % of the same precision's best GEMM peak in this run)")
    print(f"{'model':30s} {'K':>4s} {'prec':>5s} {'models/s*':>10s} {'GFLOP/s':>8s} {'% peak':>7s}")
    for name, arch, overrides, hw, Ks, flops in cases:
        hp = resolve_hparams(arch, overrides)
        b = hp["batch_size"]
        ds = synthetic(2 * b * steps, hw)  # alpha = 1/2: `steps` steps per epoch
        for K in Ks:
            for precision in PRECISIONS:
                s = step_seconds(ds, arch, hp, K, precision)
                # The GEMM peak again after every row; the table divides by the best of all of them.
                peaks[precision] = max(peaks[precision], gemm_peak(DTYPES[precision], repeat=4))
                rows.append((name, K, precision, K / s / steps, K * flops(b) / s / 1e9))
    for name, K, precision, models_s, gflops in rows:
        print(f"{name:30s} {K:4d} {precision:>5s} {models_s:10.1f} {gflops:8.1f} {gflops / peaks[precision]:7.1%}")
    print(f"best GEMM peak over the table's run: fp32 {peaks['fp32']:.1f}, bf16 {peaks['bf16']:.1f} GFLOP/s")
    print("* models/s at this case's epoch of", steps, "steps")


def tricks(quick: bool, peaks: dict) -> None:
    """Each hot-path trick on and off, the rest of the step unchanged."""
    print("\n3. Tricks, on vs off (ms per call; lower is better)")

    def best(f, repeat: int = 5 if quick else 10) -> float:
        f()
        out = float("inf")
        for _ in range(repeat):
            t = clock()
            f()
            out = min(out, clock() - t)
        return out * 1e3

    K, n = 500, 648
    subsets = torch.stack([torch.randperm(1297)[:n] for _ in range(K)])
    seeds = torch.arange(K, dtype=torch.int64)
    gens = [torch.Generator().manual_seed(k) for k in range(K)]
    on = best(lambda: epoch_orders(subsets, seeds, 0))
    off = best(lambda: torch.stack([subsets[k][torch.randperm(n, generator=gens[k])] for k in range(K)]))
    print(f"  shuffle of K=500 subsets   : one argsort {on:8.2f}  per-model randperm loop {off:8.2f}  ({off / on:.1f}x)")

    # Optimizer step over the digits MLP's parameters at K = 500.
    shapes = [(K, 64, 128), (K, 1, 128), (K, 128, 10), (K, 1, 10)]
    times = {}
    for mode in ("fused", "foreach", "for-loop"):
        params = [torch.zeros(s, requires_grad=True) for s in shapes]
        for p in params:
            p.grad = torch.randn_like(p)
        kw = {"fused": dict(fused=True), "foreach": dict(foreach=True), "for-loop": dict(foreach=False)}[mode]
        opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, **kw)
        times[mode] = best(opt.step)
    print("  SGD step, digits MLP K=500 : " + "  ".join(f"{m} {t:8.2f}" for m, t in times.items()))

    mlp_tricks(best, peaks)
    cnn_cl = {}
    for layout in ("contiguous", "channels-last"):
        model = architectures.build("cnn", 8, (28, 28, 1), 10, [torch.Generator().manual_seed(k) for k in range(8)],
                                    dict(width=1.0))
        if layout == "channels-last":
            model = model.to(memory_format=torch.channels_last)
        x = torch.randn(8, 128, 1, 28, 28, dtype=torch.bfloat16)

        def cnn_step():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = model(x)
            out.float().sum().backward()

        cnn_cl[layout] = best(cnn_step)
    print(f"  CNN fwd+bwd K=8 bf16       : contiguous {cnn_cl['contiguous']:8.2f}  channels-last "
          f"{cnn_cl['channels-last']:8.2f}  ({cnn_cl['contiguous'] / cnn_cl['channels-last']:.1f}x)")
    compile_trick(best)


def _mlp(K: int, D: int) -> torch.nn.Module:
    return architectures.build("mlp", K, (D, 1, 1), 10, [torch.Generator().manual_seed(k) for k in range(K)],
                               dict(hidden=128))


def _sgd(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4, fused=True)


def autograd_step(model, opt, train_x, idx, labels, bf16: bool) -> None:
    """The MLP step as the engine ran it before mlp_step.py: a fresh gather, autocast, autograd, fused SGD."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(train_x[idx])
    loss = F.cross_entropy(logits.float().transpose(1, 2), labels[idx], reduction="sum") / idx.shape[1]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def mlp_tricks(best, peaks: dict) -> None:
    """The MLP's hot path: the hand-written step (its SGD update included) vs autograd and torch.optim.SGD,
    cache-sized groups, and the pieces of each."""
    cases = (("digits", 64, 64, 1297), ("Fashion", 784, 256, 30_000))
    group = {}
    for label, D, B, N in cases:
        hp = dict(hidden=128, batch_size=B)
        group[label] = cache_group("mlp", torch.device("cpu"), D, 10, hp)
    print(f"  cache groups (engine.cache_group): digits {group['digits']} models, Fashion {group['Fashion']}")
    for label, D, B, N in cases:
        x32 = torch.randn(N, D)
        labels = torch.randint(0, 10, (N,))
        for K in sorted({group[label], 128 if label == "Fashion" else 500}):
            idx = torch.stack([torch.randperm(N)[:B] for _ in range(K)])
            flops = K * mlp_step_flops(D, 128, 10, B) / 1e6  # MFLOP, so FLOP / ms is GFLOP/s
            for precision in PRECISIONS:
                x = x32.bfloat16() if precision == "bf16" else x32
                model = _mlp(K, D)
                opt = _sgd(model)
                old = best(lambda: autograd_step(model, opt, x, idx, labels, precision == "bf16"))
                step = MLPStep(model, B, precision, momentum=0.9, weight_decay=5e-4)
                x1 = with_ones_column(x)  # as TrainingData.mlp_inputs
                new = best(lambda: step.step(x1, idx, labels[idx], 0.01))
                print(f"  {label} MLP step K={K:3d} {precision}: autograd {old:7.2f} ms ({flops / old / peaks['bf16']:4.0%}"
                      f" of bf16 peak)  by hand {new:7.2f} ({flops / new / peaks['bf16']:4.0%})  {old / new:.2f}x; "
                      f"{new / K * 1e3:6.1f} us per model-step")
    # The pieces, at the Fashion shape (K = 128, batch 256): where the autograd step's time went.
    K, B, D, N = 128, 256, 784, 30_000
    x32 = torch.randn(N, D)
    x16 = x32.bfloat16()
    flat = torch.randint(0, N, (K * B,))
    kept = torch.empty(K * B, D, dtype=torch.bfloat16)
    fresh32 = best(lambda: x32.index_select(0, flat).bfloat16())
    fresh = best(lambda: x16.index_select(0, flat))
    into = best(lambda: torch.index_select(x16, 0, flat, out=kept))
    print(f"  Fashion minibatch gather K=128: fp32 rows cast to bf16 {fresh32:6.2f} ms, bf16 rows into a fresh tensor "
          f"{fresh:6.2f}, into a kept buffer {into:6.2f} ({fresh32 / into:.1f}x)")
    logits = torch.randn(500, 64, 10).bfloat16()
    last = best(lambda: torch.softmax(logits.float(), dim=2))
    dim1 = best(lambda: torch.softmax(logits.transpose(1, 2).float(), dim=1))
    print(f"  softmax of (500, 64, 10) logits: over the last dim {last:6.2f} ms, classes on dim 1 {dim1:6.2f} "
          f"({last / dim1:.0f}x)")
    h, dh = torch.randn(500, 64, 128).bfloat16(), torch.randn(500, 64, 128).bfloat16()
    masked = best(lambda: dh.masked_fill_(h <= 0, 0))
    inplace = best(lambda: torch.ops.aten.threshold_backward.grad_input(dh, h, 0, grad_input=dh))
    print(f"  ReLU backward (500, 64, 128) bf16: masked_fill_ {masked:6.2f} ms, threshold_backward in place "
          f"{inplace:6.2f} ({masked / inplace:.0f}x)")


def compile_trick(best) -> None:
    """torch.compile of the Fashion-shaped MLP's training step, on vs off (compile time reported apart)."""
    Km, B, D = 128, 256, 784
    model = architectures.build("mlp", Km, (28, 28, 1), 10, [torch.Generator().manual_seed(k) for k in range(Km)],
                                dict(hidden=128))
    x = torch.randn(Km, B, D, dtype=torch.bfloat16)
    y = torch.randint(0, 10, (Km * B,))

    def step(m):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = m(x)
        torch.nn.functional.cross_entropy(logits.float().reshape(Km * B, -1), y, reduction="sum").backward()

    eager = best(lambda: step(model))
    try:
        compiled = torch.compile(model)
        t = clock()
        step(compiled)
        compile_s = clock() - t
        on = best(lambda: step(compiled))
        print(f"  torch.compile, Fashion MLP K=128 bf16 fwd+bwd: eager {eager:8.2f}  compiled {on:8.2f}  "
              f"({eager / on:.2f}x; compiling took {compile_s:.0f} s)")
    except Exception as exc:  # no C++ toolchain: say so, the engine stays eager
        print(f"  torch.compile unavailable here ({type(exc).__name__}): eager {eager:8.2f}")


def real_size(quick: bool, peaks: dict, threads: int) -> None:
    """Seconds per model at full Fashion-MNIST shape, and the FLOP floor of 2,000 such models on this machine.

    The MLPs train whole (every step, the margins on all 70,000 targets, the engine's groups side by side on
    `threads` threads), timed in CPU and wall seconds; the CNN is projected from its fastest steps. The floor
    counts the training steps' matmul FLOPs at the run's best bf16 peak and the fp32 margins pass at the fp32
    peak, on all `threads` cores at once: no engine can train 2,000 models faster on this machine."""
    print(f"\n4. Real size: 60,000 x 784 synthetic, alpha = 1/2 (30,000 images per model), {threads} threads")
    ds = synthetic(60_000, 28, n_test=10_000)
    n_targets = ds.n_train + ds.n_test
    for name, hidden, epochs in (("issue's MLP", 64, 5), ("recipe's MLP", 128, 10)):
        hp = resolve_hparams("mlp", dict(hidden=hidden, batch_size=256, epochs=epochs))
        steps = (30_000 // 256) * epochs
        train_flops = mlp_step_flops(784, hidden, 10, 256) * steps
        margin_flops = n_targets * 2 * (784 * hidden + hidden * 10)
        floor = 2000 * (train_flops / (peaks["bf16"] * 1e9) + margin_flops / (peaks["fp32"] * 1e9)) / threads
        print(f"  {name} 784-{hidden}-10, {epochs} epochs: {train_flops / 1e9:.1f} GFLOP of steps + "
              f"{margin_flops / 1e9:.1f} of margins per model; floor for 2,000 models at the peaks on {threads} "
              f"cores {floor / 60:.1f} min")
        K = 16  # one cache group (engine.cache_group's floor at this shape)
        for precision in PRECISIONS:
            data = TrainingData.from_dataset(ds, torch.device("cpu"), precision)
            rng = np.random.default_rng(1)
            subsets = np.stack([np.sort(rng.choice(ds.n_train, 30_000, replace=False)) for _ in range(K)])
            cpu, wall = clock(), time.time()
            train_models(data, subsets, list(range(K)), "mlp", hp)
            cpu, wall = (clock() - cpu) / K, (time.time() - wall) / K
            print(f"    {precision}: {cpu:5.2f} CPU s and {wall:5.2f} wall s per model (K = {K}, load "
                  f"{os.getloadavg()[0]:.1f}); 2,000 models: {2000 * cpu / threads / 60:5.1f} min on {threads} "
                  f"cores at this CPU time, {2000 * wall / 60:5.1f} min at this wall time")
    hp = resolve_hparams("cnn", dict(batch_size=128, epochs=5))
    steps = (30_000 // hp["batch_size"]) * hp["epochs"]
    K = 16
    for precision in PRECISIONS:
        s = step_seconds(ds, "cnn", hp, K, precision, max_steps=6 if quick else 20)
        data = TrainingData.from_dataset(ds, torch.device("cpu"), precision)
        model = architectures.build("cnn", K, (28, 28, 1), 10, [torch.Generator().manual_seed(k) for k in range(K)], hp)
        model = model.to(memory_format=torch.channels_last)
        t = clock()
        evaluate(model, data.targets_x, data.targets_y)
        margins_s = clock() - t
        print(f"  cnn  K={K:3d} {precision}: {s * 1e3:7.1f} ms/step x {steps} steps + margins "
              f"{margins_s:5.1f} s, per K -> {(s * steps + margins_s) / K:6.2f} CPU s per model")


STAGE = ["-m", "precompute", "train", "--dataset", "digits", "--alpha", "0.5", "--seed", "0"]
ONE_PROCESS = ("import sys; from backend.cluster.executor import LocalExecutor; from backend.datasets import load_dataset;"
               "from backend.training.train_stage import train_run; train_run(load_dataset('digits'), 'digits', "
               "sys.argv[2], alpha=0.5, n_models=int(sys.argv[1]), seed=0, executor=LocalExecutor())")


def train_stage(models: int, baseline: str, rounds: int) -> None:
    """`make run`'s digits train stage (`precompute train --dataset digits --alpha 0.5 --seed 0`, `models` models,
    the defaults: bf16 on this CPU, the MLP), wall and CPU seconds of the command and its workers: this tree as it
    runs by default (one worker process per core for the MLP), this tree in one process with every core a torch
    thread, and git revision `baseline`'s tree, one after another `rounds` times, so all see the same load."""
    print(f"\n5. The digits train stage, {models} models: this tree vs {baseline} (wall / CPU s, user + system "
          "of the command and its workers)")
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp, "baseline")
        old.mkdir()
        archive = subprocess.run(["git", "-C", str(root), "archive", baseline], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        variants = {f"{baseline} (before)": (old, [*STAGE, "--models", str(models), "--out"]),
                    "this tree, one process": (root, ["-c", ONE_PROCESS, str(models)]),
                    "this tree (after)": (root, [*STAGE, "--models", str(models), "--out"])}
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
        for r in range(rounds):
            for v, (name, (tree, cmd)) in enumerate(variants.items()):
                out = Path(tmp, f"run-{r}-{v}")
                # The environment as `make run` has it: OMP_WAIT_POLICY=PASSIVE would cost a one-process run of
                # two threads half its speed (digits, 2 threads: 24 ms a model against 12.6, idle)
                env = {**{key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"},
                       "PYTHONPATH": str(tree)}
                before, wall = resource.getrusage(resource.RUSAGE_CHILDREN), time.time()
                subprocess.run([sys.executable, *cmd, str(out)], cwd=tree, env=env, check=True, capture_output=True)
                after, wall = resource.getrusage(resource.RUSAGE_CHILDREN), time.time() - wall
                cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                times[name].append((wall, cpu))
                print(f"  {name:28s} round {r + 1}: wall {wall:7.1f} s, CPU {cpu:7.1f} s, load "
                      f"{os.getloadavg()[0]:.1f}", flush=True)
                shutil.rmtree(out)
    ref = np.array(times[f"{baseline} (before)"])
    for name, t in times.items():
        t = np.array(t)
        print(f"  {name:28s} best wall {t[:, 0].min():7.1f} s ({ref[:, 0].min() / t[:, 0].min():4.2f}x), "
              f"best CPU {t[:, 1].min():7.1f} s ({ref[:, 1].min() / t[:, 1].min():4.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the cores this process may use)")
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats (a smoke run)")
    parser.add_argument("--skip-real-size", action="store_true", help="leave out section 4 (the slowest)")
    parser.add_argument("--stage-models", type=int, default=5000,
                        help="section 5: models of the digits train stage (make run's 5,000; 0 leaves it out)")
    parser.add_argument("--stage-baseline", default="77caa84",
                        help="section 5: the git revision to compare with (default: the tree before [engine], #24)")
    parser.add_argument("--stage-rounds", type=int, default=2, help="section 5: rounds of the three runs")
    parser.add_argument("--only-stage", action="store_true", help="section 5 alone")
    args = parser.parse_args()
    if args.only_stage:
        train_stage(args.stage_models, args.stage_baseline, args.stage_rounds)
        return
    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    print(f"threads {threads}, load average {os.getloadavg()[0]:.1f}, torch {torch.__version__}, "
          f"cpu capability {torch.backends.cpu.get_cpu_capability()}")
    peaks = {p: gemm_peak(DTYPES[p]) for p in PRECISIONS}
    print(f"1. GEMM peak (2048^2 torch.mm): fp32 {peaks['fp32']:.1f} GFLOP/s, bf16 {peaks['bf16']:.1f} GFLOP/s")
    throughput_table(peaks, args.quick)
    tricks(args.quick, peaks)
    if not args.skip_real_size:
        real_size(args.quick, peaks, threads)
    peaks_after = {p: gemm_peak(DTYPES[p]) for p in PRECISIONS}
    if args.stage_models:
        train_stage(args.stage_models, args.stage_baseline, args.stage_rounds)
    print(f"\nGEMM peak again at the end: fp32 {peaks_after['fp32']:.1f}, bf16 {peaks_after['bf16']:.1f} GFLOP/s; "
          f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
