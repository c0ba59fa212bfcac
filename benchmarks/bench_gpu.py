"""The CUDA path measured: the GPU's own matmul peak, the paper's ResNet-9 recipe and the fast airbench-style recipe
against K, the MLP and the CNN, torch.compile on and off, and the fit at 50,000 features x 10,000 models.

Run (on a GPU): PYTHONPATH=. python3 benchmarks/bench_gpu.py --out results.json [--budget 300]
      (a CPU smoke run of every code path at toy sizes: --smoke)

Each section runs in its own child process under a time limit, so one slow or failing section costs only its
own numbers; the JSON is rewritten after every section, so a run stopped early keeps what it measured.

Honest extrapolation: a recipe's time per model is (a few steady-state training steps, timed between two
device synchronisations, times the recipe's steps) + (the fp32 margins pass on all 60,000 targets, timed) +
(initialisation, timed), over K. Nothing trains a whole recipe here. Data are CIFAR-10-shaped synthetic images
(50,000 + 10,000, 32x32x3, 10 classes, labelled by brightness): speed does not depend on the pixels, and
accuracy, which would, is not measured (no real CIFAR-10 on the machine).

FLOPs are counted from the layer shapes (forward hooks on every convolution and the head), never from time:
a training step is the forward, the weight gradients (as many FLOPs again) and the input gradients of every
layer but the first (the images need none). BatchNorm, activations and pooling are not counted.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backend.datasets import Dataset  # noqa: E402
from backend.training import architectures  # noqa: E402
from backend.training.engine import TrainingData, evaluate, strict_fp32, train_models  # noqa: E402
from backend.training.train_stage import resolve_hparams  # noqa: E402

WARMUP = 3


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def timed(f, repeat: int) -> float:
    """Median seconds of f() over `repeat` calls after one warm-up, synchronised around each call."""
    f()
    sync()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        sync()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def peaks(smoke: bool) -> dict:
    """Dense matmul rates (TFLOP/s) on random data: bf16, fp32 as TF32 (the tensor cores) and strict fp32."""
    n = 512 if smoke else 8192
    dev = device()
    out = {}
    for name, dtype, tf32 in (("bf16", torch.bfloat16, False), ("tf32", torch.float32, True),
                              ("fp32", torch.float32, False)):
        a, b = (torch.randn(n, n, device=dev, dtype=dtype) for _ in range(2))
        saved = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        try:
            out[name] = 2 * n**3 / timed(lambda: a @ b, 3 if smoke else 10) / 1e12
        finally:
            torch.backends.cuda.matmul.allow_tf32 = saved
    return out


def cifar_shaped(n_train: int, n_test: int, hw: int = 32, c: int = 3, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n_train + n_test, hw, hw, c), dtype=np.uint8)
    labels = np.minimum(images[:, : hw // 2].mean(axis=(1, 2, 3)).astype(np.int64) * 10 // 256, 9)
    return Dataset(name="synthetic", train_images=images[:n_train], train_labels=labels[:n_train],
                   test_images=images[n_train:], test_labels=labels[n_train:], class_names=tuple(str(i) for i in range(10)))


def train_flops_per_image(arch: str, hp: dict, image_shape: tuple[int, int, int], forward: bool = False) -> float:
    """Training FLOPs of one model on one image, from the layer shapes of one forward (module docstring); with
    forward=True the forward pass's alone (what a margin costs)."""
    H, W, C = image_shape
    model = architectures.build(arch, 1, image_shape, 10, [torch.Generator().manual_seed(0)], hp)
    convs = []

    def hook(mod, inp, out):
        convs.append(2 * out.numel() * mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1])

    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(hook)
    with torch.no_grad():
        if arch == "mlp":
            layers = 2 * H * W * C * hp["hidden"] + 2 * hp["hidden"] * 10
            return layers if forward else 2 * (2 * H * W * C * hp["hidden"] + 3 * hp["hidden"] * 10)
        f = model.features(torch.zeros(1, 1, C, H, W))
    head = 2 * f.shape[-1] * 10
    return sum(convs) + head if forward else 3 * sum(convs) - convs[0] + 3 * head


def step_time(data: TrainingData, arch: str, hp: dict, K: int, n: int, steps: int) -> tuple[float, float]:
    """(seconds per training step of K models, peak device bytes during training above what was held before).

    Times `steps` steady-state steps after WARMUP, between two synchronisations, through the engine's own
    train_models (its progress callback stops it)."""
    rng = np.random.default_rng(1)
    subsets = np.stack([np.sort(rng.choice(len(data.train_x), n, replace=False)) for _ in range(K)])
    marks = []

    class Enough(Exception):
        pass

    def tick(done, of, unit):
        count = len(marks) + 1
        marks.append(None)
        if count == WARMUP:
            sync()
            marks[-1] = time.perf_counter()
        if count == WARMUP + steps:
            sync()
            marks[-1] = time.perf_counter()
            raise Enough

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    try:
        train_models(data, subsets, list(range(K)), arch, hp, progress=tick)
    except Enough:
        pass
    peak = (torch.cuda.max_memory_allocated() - base) if torch.cuda.is_available() else 0
    times = [m for m in marks if m is not None]
    if len(times) < 2:
        raise RuntimeError(f"{arch} K={K}: fewer than {WARMUP + steps} steps in its schedule")
    return (times[1] - times[0]) / steps, peak


def margins_time(data: TrainingData, arch: str, hp: dict, K: int, slice_targets: int = 12_288) -> float:
    """Seconds of the fp32 margins pass of K freshly built models on every target (the engine's `evaluate`),
    timed on the first `slice_targets` targets and scaled to all of them (the pass is chunks of 2,048 targets,
    so its time is linear in the targets)."""
    model = architectures.build(arch, K, data.image_shape, data.n_classes,
                                [torch.Generator().manual_seed(k) for k in range(K)], hp).to(data.train_x.device)
    if arch != "mlp":
        model = model.to(memory_format=torch.channels_last)
    x, y = data.targets_x[:slice_targets], data.targets_y[:slice_targets]
    evaluate(model, x[:2048], y[:2048])  # cuDNN's first call for these shapes
    sync()
    t = time.perf_counter()
    evaluate(model, x, y)
    sync()
    return (time.perf_counter() - t) * len(data.targets_x) / len(x)


def recipe_rows(name: str, arch: str, overrides: dict, Ks, precisions, smoke: bool, peak: dict,
                extra: dict | None = None) -> list[dict]:
    """models/day of a recipe at alpha = 1/2 against K, with its fraction of the same run's bf16 peak."""
    n_train, n_test = (512, 64) if smoke else (50_000, 10_000)
    ds = cifar_shaped(n_train, n_test)
    hp = resolve_hparams(arch, {**overrides, **(extra or {})})
    n = n_train // 2
    batch = min(int(hp["batch_size"]), n)
    total_steps = (n // batch) * int(hp["epochs"])
    flops_img = train_flops_per_image(arch, hp, ds.image_shape)
    # The floor (METHOD.md's "two numbers"): the training FLOPs at the bf16 peak plus the margins pass's at the
    # strict fp32 peak (margins are always fp32), per model; no K can beat it.
    floor = (flops_img * total_steps * batch / peak["bf16"]
             + train_flops_per_image(arch, hp, ds.image_shape, forward=True) * len(ds.target_labels()) / peak["fp32"]) / 1e12
    print(f"  {name}: {flops_img / 1e9:.3f} GFLOP per training image; floor {floor:.3f} s per model at this run's "
          f"peaks = {86400 / floor:,.0f} models/day at most", flush=True)
    rows = [dict(recipe=name, floor_s_per_model=floor, floor_models_per_day=86400 / floor)]
    for precision in precisions:
        data = TrainingData.from_dataset(ds, device(), precision)
        data.train_inputs  # made once per dataset, as in a run
        for K in Ks:
            try:
                s, mem = step_time(data, arch, hp, K, n, steps=2 if smoke else 8)
            except torch.OutOfMemoryError:
                rows.append(dict(recipe=name, K=K, precision=precision, error="out of memory"))
                torch.cuda.empty_cache()
                break
            m = margins_time(data, arch, hp, K)
            per_model = (s * total_steps + m) / K
            achieved = K * batch * flops_img / s
            rows.append(dict(recipe=name, arch=arch, hparams={k: hp[k] for k in sorted(hp)}, K=K, precision=precision,
                             step_s=s, steps=total_steps, margins_s=m, s_per_model=per_model,
                             models_per_hour=3600 / per_model, models_per_day=86400 / per_model,
                             train_tflops=achieved / 1e12, frac_bf16_peak=achieved / 1e12 / peak["bf16"],
                             mem_per_model_mib=mem / K / 2**20, train_gflop_per_image=flops_img / 1e9))
            r = rows[-1]
            print(f"  {name:28s} K={K:3d} {precision}: {s * 1e3:8.2f} ms/step x {total_steps} + margins {m:6.2f} s "
                  f"-> {per_model:7.3f} s/model, {r['models_per_day']:9,.0f} models/day, {r['train_tflops']:6.1f} "
                  f"TFLOP/s ({r['frac_bf16_peak']:.1%} of bf16 peak), {r['mem_per_model_mib']:7.0f} MiB/model",
                  flush=True)
        del data
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return rows


def section_peaks(a) -> dict:
    info = {"torch": torch.__version__, "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(sms=p.multi_processor_count, memory_gib=p.total_memory / 2**30)
    info["peaks_tflops"] = peaks(a.smoke)
    print(f"  {info}", flush=True)
    return info


def section_paper(a) -> dict:
    peak = json.loads(a.peak)
    Ks = (1, 2) if a.smoke else (1, 4, 8)
    extra = {"width": 0.125, "epochs": 8} if a.smoke else {}
    return {"rows": recipe_rows("paper ResNet-9 (24 ep, b512)", "resnet9", {}, Ks, ("bf16",), a.smoke, peak, extra)}


def section_fast(a) -> dict:
    peak = json.loads(a.peak)
    Ks = (1, 2) if a.smoke else (1, 4, 16, 32)
    extra = {"width": 0.125, "epochs": 2, "batch_size": 64} if a.smoke else {}
    rows = recipe_rows("fast airbench (10 ep, b1024)", "airbench", {}, Ks, ("bf16",), a.smoke, peak, extra)
    # The tricks on and off, one at a time at one K (speed only: their effect on accuracy needs real CIFAR-10).
    K = 2 if a.smoke else 16
    rows += recipe_rows("fast, fp32 (bf16 off)", "airbench", {}, (K,), ("fp32",), a.smoke, peak, extra)
    rows += recipe_rows("fast, whitening off", "airbench", {"whiten": False}, (K,), ("bf16",), a.smoke, peak, extra)
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    rows += recipe_rows("fast, cudnn.benchmark on", "airbench", {}, (K,), ("bf16",), a.smoke, peak, extra)
    rows += recipe_rows("paper, cudnn.benchmark on", "resnet9", {}, (1 if a.smoke else 8,), ("bf16",), a.smoke, peak,
                        {"width": 0.125, "epochs": 8} if a.smoke else {})
    torch.backends.cudnn.benchmark = saved
    return {"rows": rows}


def section_small(a) -> dict:
    """The Fashion-MNIST-shaped MLP and the CNN of bench_training.py, on this device."""
    peak = json.loads(a.peak)
    n_train, n_test = (512, 64) if a.smoke else (60_000, 10_000)
    ds = cifar_shaped(n_train, n_test, hw=28, c=1)
    rows = []
    for arch, overrides, Ks in (("mlp", dict(hidden=128, batch_size=256, epochs=5), (1, 128, 1024)),
                                ("cnn", dict(batch_size=128, epochs=5), (1, 16, 128))):
        hp = resolve_hparams(arch, overrides)
        flops_img = train_flops_per_image(arch, hp, ds.image_shape)
        n = n_train // 2
        total = (n // hp["batch_size"]) * hp["epochs"]
        for precision in ("bf16", "fp32"):
            data = TrainingData.from_dataset(ds, device(), precision)
            for K in (Ks[:2] if a.smoke else Ks):
                s, mem = step_time(data, arch, hp, K, n, steps=2 if a.smoke else 10)
                achieved = K * hp["batch_size"] * flops_img / s / 1e12
                ref = peak["bf16"] if precision == "bf16" else peak["fp32"]
                rows.append(dict(arch=arch, K=K, precision=precision, step_s=s, models_per_s=K / (s * total),
                                 tflops=achieved, frac_same_precision_peak=achieved / ref,
                                 frac_bf16_peak=achieved / peak["bf16"], mem_per_model_mib=mem / K / 2**20))
                print(f"  {arch} 28x28 K={K:4d} {precision}: {s * 1e3:7.2f} ms/step, {K / (s * total):8.2f} models/s "
                      f"(5 epochs of 30,000, training only), {achieved:6.2f} TFLOP/s = {achieved / ref:.1%} of "
                      f"{precision} peak", flush=True)
    return {"rows": rows}


def section_compile(a) -> dict:
    """torch.compile of a training step (fwd + bwd), on vs off, compile time apart."""
    dev = device()
    out = {}
    cases = [("airbench K=16 b1024 bf16", "airbench", 16, 1024, (32, 32, 3)),
             ("Fashion MLP K=128 b256 bf16", "mlp", 128, 256, (28, 28, 1))]
    for name, arch, K, B, shape in cases:
        if a.smoke:
            K, B = 2, 16
        hp = resolve_hparams(arch, {"width": 0.125} if (a.smoke and arch == "airbench") else {})
        model = architectures.build(arch, K, shape, 10, [torch.Generator().manual_seed(k) for k in range(K)], hp).to(dev)
        if arch != "mlp":
            model = model.to(memory_format=torch.channels_last)
        H, W, C = shape
        x = torch.randn(K, B, C, H, W, device=dev, dtype=torch.bfloat16)
        y = torch.randint(0, 10, (K, B), device=dev)

        def step(m):
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                logits = m(x if arch != "mlp" else x.flatten(2))
            torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), y).backward()

        eager = timed(lambda: step(model), 3 if a.smoke else 20)
        compiled = torch.compile(model)
        t = time.perf_counter()
        step(compiled)
        sync()
        compile_s = time.perf_counter() - t
        on = timed(lambda: step(compiled), 3 if a.smoke else 20)
        out[name] = dict(eager_ms=eager * 1e3, compiled_ms=on * 1e3, speedup=eager / on, compile_s=compile_s)
        print(f"  torch.compile {name}: eager {eager * 1e3:.2f} ms, compiled {on * 1e3:.2f} ms "
              f"({eager / on:.2f}x; compiling took {compile_s:.0f} s)", flush=True)
    return out


def section_fit(a) -> dict:
    """The fit's solver on the device: a block of test targets (shared rows) and one of training targets (per-target
    rows, eq. 9) at 50,000 features x 10,000 models, as `fit` runs them (backend.datamodels.fit)."""
    from backend.datamodels.fit import DEFAULT_MEMORY, _Fitter, _Steps, memory_model

    M, F, n_test = (400, 300, 50) if a.smoke else (10_000, 50_000, 10_000)
    T = 16 if a.smoke else a.fit_targets
    rng = np.random.default_rng(0)
    masks = np.empty((M, F), dtype=bool)
    for lo in range(0, M, 1000):
        masks[lo:lo + 1000] = rng.random((min(1000, M - lo), F), dtype=np.float32) < 0.5
    # Margins only where the fit reads them: the first T training and the first T test targets (zero pages elsewhere).
    margins = np.zeros((M, F + n_test), dtype=np.float32)
    columns = {"train": np.arange(T), "test": np.arange(F, F + T)}
    support = rng.integers(F, size=(2 * T, 10))
    weight = rng.normal(0, 0.3, size=(2 * T, 10)).astype(np.float32)
    for j, col in enumerate(np.concatenate(list(columns.values()))):
        margins[:, col] = 1 + masks[:, support[j]] @ weight[j] + rng.normal(0, 0.5, M).astype(np.float32)
    gram = memory_model(M, F, DEFAULT_MEMORY)[2]
    out = {"models": M, "features": F, "targets_per_block": T, "gram": gram}
    dev = device()
    for kind, cols in columns.items():
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        fitter = _Fitter(masks, margins, F, val_frac=0.1, n_lambdas=50, eps=1e-3, tol=1e-4, seed=0, device=dev,
                         max_iter=1000, patience=3, gram=gram, steps=_Steps(0, 0, None))
        sync()
        t = time.perf_counter()
        result = fitter.fit(cols, np.zeros(0))
        sync()
        s = time.perf_counter() - t
        peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
        out[kind] = dict(seconds=s, targets_per_s=T / s, hours_all_60000=60_000 / (T / s) / 3600, peak_gpu_gib=peak,
                         iterations=int(result["path_iterations"].sum() + result["refit_iterations"].sum()),
                         nonzero_mean=float((result["weights"] != 0).sum(1).mean()))
        print(f"  fit {kind} targets ({'per-target rows' if kind == 'train' else 'shared rows'}), {M:,} models x "
              f"{F:,} features, {T} targets: {s:.1f} s = {T / s:.2f} targets/s (all 60,000: "
              f"{out[kind]['hours_all_60000']:.1f} h), peak GPU memory {peak:.1f} GiB", flush=True)
        del fitter
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return out


# Each section's time limit in seconds (x --cap-scale), so that one slow section leaves the others theirs.
CAPS = {"peaks": 30, "paper": 60, "fast": 80, "fit": 90, "small": 40, "compile": 60}
SECTIONS = {"peaks": section_peaks, "paper": section_paper, "fast": section_fast, "fit": section_fit,
            "small": section_small, "compile": section_compile}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench_gpu.json"))
    parser.add_argument("--smoke", action="store_true", help="toy sizes, any device: checks every code path")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated, in order")
    parser.add_argument("--budget", type=float, default=300.0, help="seconds for all sections together")
    parser.add_argument("--fit-targets", type=int, default=128)
    parser.add_argument("--cap-scale", type=float, default=1.0, help="scales every section's time limit")
    parser.add_argument("--section", help=argparse.SUPPRESS)
    parser.add_argument("--peak", help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.section:  # a child: one section, its JSON on stdout's last line
        print(json.dumps(SECTIONS[a.section](a)), flush=True)
        return
    results = {"date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "smoke": a.smoke,
               "note": "synthetic CIFAR-shaped data; per-model times extrapolated from timed steps (see the docstring)"}
    started = time.perf_counter()
    peak = {"bf16": float("nan"), "fp32": float("nan")}
    for name in a.sections.split(","):
        left = a.budget - (time.perf_counter() - started)
        if left < 10:
            results[name] = {"skipped": "out of time"}
            continue
        print(f"== {name} ({left:.0f} s left)", flush=True)
        cmd = [sys.executable, __file__, "--section", name, "--peak", json.dumps(peak), "--fit-targets",
               str(a.fit_targets)] + (["--smoke"] if a.smoke else [])
        try:
            done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=min(left, CAPS[name] * a.cap_scale),
                                  env=dict(os.environ, PYTHONUNBUFFERED="1"))
            lines = done.stdout.strip().splitlines()
            print("\n".join(lines[:-1] if done.returncode == 0 else lines), flush=True)
            results[name] = json.loads(lines[-1]) if done.returncode == 0 else {"error": f"exit {done.returncode}"}
        except subprocess.TimeoutExpired as e:
            print((e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""), flush=True)
            results[name] = {"error": f"timed out after {min(left, CAPS[name] * a.cap_scale):.0f} s"}
        if name == "peaks" and "peaks_tflops" in results[name]:
            peak = results[name]["peaks_tflops"]
        tmp = a.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1))
        tmp.replace(a.out)
    print(f"done in {time.perf_counter() - started:.0f} s; {a.out}")


if __name__ == "__main__":
    main()
