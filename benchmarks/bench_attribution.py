"""Seconds, peak memory and held-out LDS of every attribution method, and per-example gradient throughput.

Run: .venv/bin/python benchmarks/bench_attribution.py [--run R --heldout H] [--device cpu] [--width 0.125]

Digits: each entry of METHODS runs as `python -m precompute attribute` in a child process of its own, so
its seconds are the whole command's (training its models included) and its peak memory is the child's
maximum resident set (os.wait4). Without --run, a digits run of 20 models (seed 0, the default MLP and
hyperparameters) and a held-out run of 100 (seed 1) are trained first into a temporary folder. The LDS is
the datamodels' LDS (backend.datamodels.evaluation.lds) of the method's scores used as linear datamodels,
mean over the test targets of the held-out models.

CIFAR-shaped: random 32×32×3 images, 10 classes, one ResNet-9 at --width on the device; examples/s of
TRAK's featurisation (vmap(grad) of log(p/(1-p)) per example, then the random projection to 2048).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backend.attribution.gradients import Functional, Projector, trak_output  # noqa: E402
from backend.attribution.store import read_scores  # noqa: E402
from backend.datamodels.evaluation import lds  # noqa: E402
from backend.store.run_dir import Run
from backend.training import architectures  # noqa: E402
from backend.training.engine import resolve_device, use_all_cores  # noqa: E402

# (label, CLI method, its flags): one row of the table each.
METHODS = [
    ("diff-of-means", "diff-of-means", []),
    ("empirical-influence", "empirical-influence", []),
    ("representation (control features)", "representation", []),
    ("ssl-esvm (SimCLR + exemplar SVM)", "ssl-esvm", []),
    ("ssl-esvm (l2)", "ssl-esvm", ["--esvm-score", "l2"]),
    ("trak (10 models, d=2048)", "trak", []),
    ("trak (1 model, d=2048)", "trak", ["--models", "1"]),
    ("influence (all, CG)", "influence", []),
    ("influence (last, exact)", "influence", ["--influence-params", "last"]),
    ("tracin (every epoch)", "tracin", []),
]


def cli(*args) -> tuple[float, float]:
    """Run `python -m precompute ARGS`; (seconds, peak resident MiB of the child)."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "precompute", *map(str, args)], cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"precompute {' '.join(map(str, args))} failed:\n{proc.stderr.read().decode()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024


def heldout_lds(run: Run, heldout: Run, method: str) -> float:
    """Mean test-target LDS of the method's scores as linear datamodels (the bias does not change a Spearman)."""
    n = run.n_train
    weights = np.zeros((run.n_targets, n), dtype=np.float32)
    weights[n:] = read_scores(run, method)
    out = lds(weights, np.zeros(run.n_targets, np.float32), heldout.masks, heldout.margins, n,
              targets=np.arange(n, run.n_targets))
    return float(np.nanmean(out["spearman"]))


def digits_table(run_dir: Path, heldout_dir: Path, device: str) -> list[tuple]:
    rows = []
    for label, method, flags in METHODS:
        seconds, mib = cli("attribute", "--run", run_dir, "--method", method, "--device", device, *flags)
        rows.append((label, seconds, mib, heldout_lds(Run(run_dir), Run(heldout_dir), method)))
        print(f"  {label:<28} {seconds:8.1f} s {mib:8.0f} MiB   LDS {rows[-1][3]:.3f}", flush=True)
    return rows


def cifar_throughput(device: torch.device, width: float, n: int = 256) -> tuple[float, float, float, int]:
    """(examples/s projected, examples/s of the gradients alone, seconds projected, parameters) of one ResNet-9."""
    hparams = dict(architectures.DEFAULT_HPARAMS["resnet9"], width=width)
    model = architectures.build("resnet9", 1, (32, 32, 3), 10, [torch.Generator().manual_seed(0)], hparams).to(device).eval()
    fn = Functional(model)
    project = Projector(fn.n_params, 2048, "gaussian", 0, device)
    x = torch.randn(n, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (n,), device=device)
    for _, g in fn.per_example_grads(trak_output, x[:16], y[:16], chunk=16):  # warm-up
        project(g)
    started = time.perf_counter()
    for _, g in fn.per_example_grads(trak_output, x, y, chunk=64):
        project(g)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    started = time.perf_counter()
    for _ in fn.per_example_grads(trak_output, x, y, chunk=64):
        pass
    return n / seconds, n / (time.perf_counter() - started), seconds, fn.n_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a digits run (default: train one of 20 models)")
    parser.add_argument("--heldout", type=Path, help="its held-out run (default: train one of 100 models)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--width", type=float, default=0.125, help="ResNet-9 width of the CIFAR-shaped problem")
    parser.add_argument("--skip-digits", action="store_true")
    args = parser.parse_args()
    device = resolve_device(args.device)
    print(f"torch {torch.__version__}, {use_all_cores()} threads, device {device}")
    if not args.skip_digits:
        with tempfile.TemporaryDirectory() as tmp:
            run_dir, heldout_dir = args.run, args.heldout
            if run_dir is None:
                run_dir, heldout_dir = Path(tmp) / "run", Path(tmp) / "heldout"
                cli("train", "--dataset", "digits", "--models", "20", "--seed", "0", "--out", run_dir)
                cli("train", "--dataset", "digits", "--models", "100", "--seed", "1", "--out", heldout_dir)
            run = Run(run_dir)
            print(f"digits: n_train {run.n_train}, n_test {run.n_test}, {run.manifest['arch']} "
                  f"{run.manifest['hparams'].get('hidden')} hidden, held-out models {Run(heldout_dir).manifest['n_models']}")
            rows = digits_table(run_dir, heldout_dir, args.device)
        print("\n| method | seconds | peak MiB | LDS (test, held-out) |\n|---|---:|---:|---:|")
        for label, seconds, mib, value in rows:
            print(f"| {label} | {seconds:.1f} | {mib:.0f} | {value:.3f} |")
    rate, grad_rate, seconds, n_params = cifar_throughput(device, args.width)
    print(f"\nCIFAR-shaped (32×32×3, ResNet-9 width {args.width}, {n_params:,} parameters): "
          f"{rate:.1f} projected per-example gradients/s ({seconds:.1f} s for 256, d = 2048); "
          f"{grad_rate:.1f}/s for the gradients alone")


if __name__ == "__main__":
    main()
