"""`fit`, `eval` and `all`: datamodels from a run's masks and margins, and their held-out quality."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from . import report
from .args import (TqdmProgress, add_device_arg, add_force_arg, add_ray_args, add_train_args, byte_size, executor_for,
                   hparam_overrides, non_negative_int, positive_int, ray_options, refuse_existing, unit_fraction)


def fit_run(run_dir: Path, device: str, val_frac: float, n_lambdas: int, eps: float, dtype: str = "float32",
            memory: int | None = None, block_targets: int | None = None, ray: dict | None = None,
            targets: str = "all") -> dict:
    from backend.datamodels.fit import DEFAULT_MEMORY, fit_run as fit
    from backend.store.run_dir import Run
    from backend.store.targets import describe_targets, select_targets

    run = Run(run_dir)
    columns = select_targets(targets, run.n_train, run.n_test)
    with TqdmProgress(f"fit (per target: {n_lambdas} λ values + 1 refit)") as bar, executor_for(ray, bar) as executor:
        summary = fit(run, val_frac=val_frac, n_lambdas=n_lambdas, eps=eps, device=device, progress=bar,
                      dtype=dtype, memory=memory or DEFAULT_MEMORY, block_targets=block_targets,
                      executor=executor, targets=columns)
    fitted = summary["targets"]
    unfitted = [] if fitted == "all" else sorted(set(range(run.n_targets)) - set(fitted))
    return {"run": str(run_dir), "targets": summary["n_targets"], "fitted_now": summary["fitted_now"],
            "kept": summary["kept_targets"],
            "unfitted": describe_targets(unfitted, run.n_train, run.n_test) if unfitted else None,
            "seconds": round(summary["wall_time_s"], 2), "device": summary.get("device"),
            "iterations": summary["iterations"], "block_targets": summary.get("block_size"),
            "resumed_blocks": summary["resumed_blocks"]}


def cmd_fit(args: argparse.Namespace) -> dict:
    return fit_run(args.run, args.device, args.val_frac, args.n_lambdas, args.eps, args.dtype, args.memory,
                   args.block_targets, ray_options(args), args.targets)


def add_fit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--val-frac", type=unit_fraction("the fraction of models held out to choose λ, e.g. 0.1"), default=0.1, help="fraction of models held out to choose each target's λ (default 0.1)")
    p.add_argument("--n-lambdas", type=positive_int, default=50, help="λ values on each target's path (default 50)")
    p.add_argument("--eps", type=unit_fraction("the path ends at λ_max·eps, e.g. 1e-3"), default=1e-3, help="the path runs from λ_max down to λ_max·eps (default 1e-3)")


def refuse_existing_metrics(run_dir: Path, force: bool) -> None:
    from backend.store.schema import METRICS
    refuse_existing(METRICS.path(run_dir), "the run's", force)


def eval_run(run_dir: Path, heldout_dir: Path, complexity: bool = True, device: str = "auto", force: bool = False) -> dict:
    from backend.datamodels.evaluation import evaluate_run
    from backend.store.errors import RunError
    from backend.store.run_dir import Run

    run, heldout = Run(run_dir), Run(heldout_dir)
    if len(heldout.masks) == 0:
        raise RunError(f"--heldout {heldout_dir} holds no models: train some with "
                       f"`python -m precompute train --out {heldout_dir} --models N` (another --seed than the run's)")
    refuse_existing_metrics(run_dir, force)
    with TqdmProgress("eval (LDS, Table 5" + (", 4 sample-complexity refits)" if complexity else ")")) as bar:
        return evaluate_run(run, heldout, complexity=complexity, device=device, progress=bar)


def cmd_eval(args: argparse.Namespace) -> dict:
    return eval_run(args.run, args.heldout, complexity=not args.no_complexity, device=args.device, force=args.force)


def _models_to_train(out: Path, n_models: int) -> int:
    from backend.store.shards import done_models

    return n_models - int(done_models(out)[:n_models].sum()) if out.is_dir() else n_models


def cmd_all(args: argparse.Namespace) -> dict:
    from backend.datasets import load_dataset
    from backend.training import architectures
    from backend.training.engine import default_batch_models, resolve_device
    from backend.training.train_stage import train_run

    started = time.perf_counter()
    from .train import check_out_dir

    check_out_dir(args.out)
    refuse_existing_metrics(args.out, args.force)
    ds = load_dataset(args.dataset, args.data_dir, args.download)
    heldout_dir = args.out / "heldout"
    heldout_seed = args.seed + 1 if args.heldout_seed is None else args.heldout_seed
    todo = {"train": _models_to_train(args.out, args.models), "heldout": _models_to_train(heldout_dir, args.heldout_models)}
    arch = args.arch or architectures.default_arch(ds.name, ds.image_shape, resolve_device(args.device))
    first_batch = args.batch_models or default_batch_models(arch, resolve_device(args.device))
    report.say(f"plan for {args.out} ({ds.name}: {ds.n_train:,} train / {ds.n_test:,} test images, {arch}, α = {args.alpha}):\n"
               f"  1. train   {args.models:,} models ({todo['train']:,} to train)\n"
               f"  2. fit     {ds.n_train + ds.n_test:,} datamodels, one LASSO path of {args.n_lambdas} λ values each\n"
               f"  3. train   {args.heldout_models:,} held-out models, seed {heldout_seed} ({todo['heldout']:,} to train)\n"
               f"  4. eval    held-out LDS, Table 5" + ("" if args.no_complexity else ", sample complexity"))
    summaries = {}
    for name, out, n, seed in (("train", args.out, args.models, args.seed),
                               ("heldout", heldout_dir, args.heldout_models, heldout_seed)):
        with TqdmProgress(f"train ({name})") as bar:
            progress = report.FirstBatchEstimate(bar, todo["train"] + todo["heldout"], first_batch) if name == "train" else bar
            summaries[name] = train_run(ds, args.dataset, out, alpha=args.alpha, n_models=n, seed=seed, arch=args.arch,
                                        hparams=hparam_overrides(args), device=args.device,
                                        batch_models=args.batch_models, dtype=args.dtype,
                                        # the held-out models train as the run's did, or their LDS mixes precisions
                                        precision=args.precision if name == "train" else summaries["train"]["precision"],
                                        keep_shards=args.keep_shards, progress=progress)
        report.say(report.train_line(summaries[name]))
        if name == "train":
            summaries["fit"] = fit_run(args.out, args.device, args.val_frac, args.n_lambdas, args.eps)
            report.say(report.fit_line(summaries["fit"]))
    metrics = eval_run(args.out, heldout_dir, complexity=not args.no_complexity, device=args.device, force=args.force)
    report.say(report.eval_line(metrics))
    summaries["heldout_lds"] = metrics["lds"]
    summaries["table5_test_spearman"] = {k: metrics["table5"][k]["spearman"]["test"].get("mean")
                                        for k in ("empirical_influence", "difference_of_means", "datamodel")}
    summaries["seconds"] = round(time.perf_counter() - started, 1)
    return summaries


def register(sub) -> None:
    p = sub.add_parser("fit", help="fit every target's datamodel (LASSO path, validation-selected λ, refit)",
                       description="Fit one LASSO per target from masks to margins (eq. 9 exclusion for training targets); "
                                   "writes weights.npy, bias.npy, lam.npy and fit.json into the run.")
    p.add_argument("--run", type=Path, required=True, help="run directory")
    add_device_arg(p)
    add_fit_args(p)
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                   help="storage type of weights.npy (default float32; float16 halves it, the solver works in float32)")
    p.add_argument("--memory", type=byte_size, default=None,
                   help="peak memory the fit may use, e.g. 4GiB; sets the targets per block (default 2GiB)")
    p.add_argument("--block-targets", type=positive_int, default=None,
                   help="targets per block, instead of deriving it from --memory")
    p.add_argument("--targets", default="all",
                   help="which targets to fit: all (default), train, test, or names and ranges, e.g. test:0-99,train:5; "
                        "targets already fitted with the same settings are kept, the rest stay unfitted")
    add_ray_args(p, "blocks of targets (the run on a file system every node reads)")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("eval", help="score a run's datamodels on another run's (held-out) models",
                       description="Held-out LDS and MSE, the sample-complexity curve and the paper's Table 5, "
                                   "measured on the models of another run of the same dataset; writes metrics.json and lds.npy.")
    p.add_argument("--run", type=Path, required=True, help="run directory with fitted datamodels")
    p.add_argument("--heldout", type=Path, required=True, help="run of the same dataset trained with another --seed")
    add_device_arg(p, help="device for the sample-complexity refits")
    p.add_argument("--no-complexity", action="store_true", help="skip the sample-complexity refits (1/8, 1/4, 1/2, all models)")
    add_force_arg(p, "the run's metrics.json and lds.npy")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("all", help="train, fit, train a held-out run, then evaluate",
                       description="The whole pipeline: train the run, fit its datamodels, train a small held-out run "
                                   "(OUT/heldout, another seed) and report the held-out LDS.")
    add_train_args(p, models_default=5000)
    p.add_argument("--out", type=Path, required=True, help="run directory (e.g. data/runs/digits)")
    p.add_argument("--heldout-models", type=positive_int, default=300, help="models in the held-out run (default 300)")
    p.add_argument("--heldout-seed", type=non_negative_int, default=None, help="seed of the held-out run (default: --seed + 1)")
    p.add_argument("--no-complexity", action="store_true", help="skip the sample-complexity refits")
    add_force_arg(p, "the run's metrics.json and lds.npy")
    add_fit_args(p)
    p.set_defaults(func=cmd_all)
