"""`faithfulness`: retrain without the extremes of one principal component (App. J), through backend.api."""
from __future__ import annotations

import argparse
from pathlib import Path

from .args import TqdmProgress, add_device_arg, non_negative_int, positive_int


def cmd_faithfulness(args: argparse.Namespace) -> dict:
    from backend.api import FAITHFULNESS_SIDES, open_run

    options = {name: value for name, value in (("n_models", args.models), ("n_group", args.group),
                                               ("n_control", args.controls)) if value is not None}
    api = open_run(args.run)
    with TqdmProgress("retraining") as bar:
        result = api.faithfulness(args.pc, args.k, sides=FAITHFULNESS_SIDES if args.side == "both" else (args.side,),
                                  device=args.device, progress=bar, **options)
    for side in result["sides"].values():
        side.pop("removed")
    return result


def register(sub) -> None:
    p = sub.add_parser("faithfulness", help="retrain without the extremes of one principal component (App. J)",
                       description="Remove the k training examples with the most positive (and/or most negative) "
                                   "coordinates of a principal component of the datamodel embeddings, retrain models "
                                   "on the rest, and report the mean margin change of the test targets projecting "
                                   "most positively, most negatively, and of the whole test set. Results are stored "
                                   "in the run; an identical request is answered from them. Needs `analyze` first.")
    p.add_argument("--run", type=Path, required=True, help="run directory (after `fit` and `analyze`)")
    p.add_argument("--pc", type=non_negative_int, required=True, help="principal component, 0 = the first")
    p.add_argument("--k", type=positive_int, required=True, help="training examples to remove, e.g. 40")
    p.add_argument("--side", choices=["both", "positive", "negative"], default="both",
                   help="which extreme of the component to remove (default both, one retrain each)")
    p.add_argument("--models", type=positive_int, default=None, help="models to retrain per removal set (default 8)")
    p.add_argument("--group", type=positive_int, default=None,
                   help="test targets in each extreme group (default 100, at most a third of the test set)")
    p.add_argument("--controls", type=positive_int, default=None,
                   help="control models (whole training set) to compare against; missing ones are trained (default 64)")
    add_device_arg(p)
    p.set_defaults(func=cmd_faithfulness)
