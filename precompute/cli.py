"""`python -m precompute VERB ...`: the stages train -> fit -> eval -> analyze, each rerunnable alone.

Every verb lives in its own module with a `register(subparsers)` function; a verb is thin: it
validates flags, calls backend functions, shows progress and returns a JSON-able summary. Bad input
ends with one line on stderr and exit code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys

from . import analyze, counterfactual, datamodels, faithfulness, leakage, report, train

EXIT_BAD_INPUT = 2
VERB_MODULES = [train, datamodels, analyze, faithfulness, counterfactual, leakage]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m precompute",
        description="Build datamodel runs: train many models on random subsets, fit datamodels, evaluate and analyse them.",
    )
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for module in VERB_MODULES:
        module.register(sub)
    for verb in sub.choices.values():
        verb.add_argument("--json", action="store_true",
                          help="print the whole summary as JSON on stdout (otherwise one line on stderr)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        print("interrupted: finished work is kept; rerun the same command to resume", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if result is not None and args.json:
        print(json.dumps(result, indent=2))
    elif result is not None:
        report.say(report.line(args.verb, result))
    return 0
