"""`attribute`: one attribution method's scores of every test target against every training image."""
from __future__ import annotations

import argparse
from pathlib import Path

from .args import TqdmProgress, add_device_arg, bounded_int, positive_float, positive_int

# ssl-esvm's flags: dest -> the option its constructor takes (backend.attribution.ssl_esvm.SslEsvm).
SSL_ESVM_FLAGS = {"esvm_score": "score", "esvm_c": "c", "ssl_epochs": "epochs", "ssl_temperature": "temperature"}


def cmd_attribute(args: argparse.Namespace) -> dict:
    from backend.attribution import methods
    from backend.attribution.compute import attribute
    from backend.store.run_dir import Run

    run = Run(args.run)
    method = methods.make(args.method, run, device=args.device, **_method_options(args))
    with TqdmProgress(f"attribute ({args.method})") as bar:
        meta = attribute(run, method, block_rows=args.block_rows, progress=bar)
    return {"run": str(run.dir), "method": args.method, "seconds": meta["seconds"], "bytes": meta["bytes"],
            "models": meta["models"]}


def _method_options(args: argparse.Namespace) -> dict:
    """The method-specific flags given, as the method's options; a flag of another method is refused."""
    given = {dest: getattr(args, dest) for dest in SSL_ESVM_FLAGS if getattr(args, dest) is not None}
    if given and args.method != "ssl-esvm":
        flags = ", ".join("--" + dest.replace("_", "-") for dest in given)
        raise ValueError(f"{flags} only apply to --method ssl-esvm, not {args.method}: drop them")
    if given.get("esvm_score") == "l2" and "esvm_c" in given:
        raise ValueError("--esvm-c is the SVM's C and --esvm-score l2 fits no SVM: drop --esvm-c or use --esvm-score svm")
    return {SSL_ESVM_FLAGS[dest]: value for dest, value in given.items()}


def register(sub) -> None:
    from backend.attribution.methods import METHODS

    p = sub.add_parser("attribute", help="one attribution method's scores for every test target",
                       description="Score every training image's attribution to every test target's margin under one "
                                   "method; writes attribution/<method>/scores.npy and meta.json. An interrupted run "
                                   "resumes from its finished blocks.")
    p.add_argument("--run", type=Path, required=True, help="run directory")
    p.add_argument("--method", required=True, choices=sorted(METHODS), help="attribution method")
    p.add_argument("--block-rows", type=positive_int, default=256, help="test targets scored per resumable block (default 256)")
    add_device_arg(p)
    ssl = p.add_argument_group("ssl-esvm", "seed 002's self-supervised encoder and exemplar SVM")
    ssl.add_argument("--esvm-score", choices=["svm", "l2"], default=None,
                     help="score by the exemplar SVM's signed distance (svm, default) or by ℓ2 distance of embeddings (l2)")
    ssl.add_argument("--esvm-c", type=positive_float(1e6, "a positive SVM regularisation C, e.g. 0.1"), default=None,
                     help="the exemplar SVM's C (default 0.1, the paper's)")
    ssl.add_argument("--ssl-epochs", type=bounded_int(1, 100_000, "number of SimCLR epochs"), default=None,
                     help="epochs of the SimCLR encoder (default 100; a stored encoder of the same settings is reused)")
    ssl.add_argument("--ssl-temperature", type=positive_float(100.0, "a positive NT-Xent temperature, e.g. 0.5"),
                     default=None, help="the NT-Xent loss's temperature (default 0.5)")
    p.set_defaults(func=cmd_attribute)
