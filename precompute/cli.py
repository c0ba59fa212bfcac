"""`python -m precompute VERB ...`: the stages train -> fit -> eval -> analyze, each rerunnable alone.

Every verb lives in its own module with a `register(subparsers)` function; a verb is thin: it
validates flags, calls backend functions, shows progress and returns a JSON-able summary. Bad input, a
broken run or a failing disk ends with one line on stderr and exit code 2; a bug ends with one line, a
pointer to --debug (which shows the traceback) and exit code 1; never a bare traceback.
"""
from __future__ import annotations

import argparse
import errno
import json
import re
import sys
import traceback

from . import (analyze, attribute, cf_eval, counterfactual, datamodels, faithfulness, leakage, methods_eval, release,
               report, results, train)

EXIT_BUG = 1
EXIT_BAD_INPUT = 2
VERB_MODULES = [train, datamodels, analyze, attribute, methods_eval, faithfulness, counterfactual, cf_eval, leakage,
                release, results]


class OneLineParser(argparse.ArgumentParser):
    """Bad flags end as every other bad input does: one line on stderr (with a pointer to --help), exit 2."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m precompute",
        description="Build datamodel runs: train many models on random subsets, fit datamodels, evaluate and analyse them.",
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an unexpected error")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for module in VERB_MODULES:
        module.register(sub)
    for verb in sub.choices.values():
        verb.add_argument("--json", action="store_true",
                          help="print the whole summary as JSON on stdout (otherwise one line on stderr)")
    return parser


def describe_os_error(exc: OSError) -> str:
    """One line for a failing file system call: what failed, on which path, and what to do."""
    where = " ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
    what = exc.strerror or str(exc)
    hint = {errno.ENOSPC: "free some space (the stage's temp files are removed) and rerun the same command to resume",
            errno.EDQUOT: "free some space within your quota and rerun the same command to resume",
            errno.EROFS: "the file system is read-only: copy the run somewhere writable",
            errno.EACCES: "you lack permission: fix the permissions or choose another path",
            errno.EPERM: "you lack permission: fix the permissions or choose another path"}.get(exc.errno)
    return "; ".join(part for part in (f"{what}: {where}" if where else what, hint) if part)


def attach_negative_values(argv: list[str]) -> list[str]:
    """`--flag -1/2` -> `--flag=-1/2`: argparse takes a value that starts with '-' but is not a plain number
    (`-1/2`, `-1e-4`) for an option and says only "expected one argument"; joined, the flag's own check
    names what is wrong with the value."""
    out: list[str] = []
    for token in argv:
        if out and out[-1].startswith("--") and "=" not in out[-1] and re.match(r"-[0-9.]", token):
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(attach_negative_values(sys.argv[1:] if argv is None else list(argv)))
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        print("interrupted: finished work is kept; rerun the same command to resume", file=sys.stderr)
        return 130
    except OSError as exc:  # FileNotFoundError, NotADirectoryError, PermissionError, ENOSPC, EROFS, ...
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ValueError as exc:  # RunError, DatasetError, RemovalError and every bad value
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:  # an expected failure (expected_failure says which), else a bug
        message = expected_failure(exc)
        if message is not None:
            print(f"error: {message}", file=sys.stderr)
            return EXIT_BAD_INPUT
        if args.debug:
            traceback.print_exc()
        print(f"internal error: {type(exc).__name__}: {_one_line(exc)} (rerun with --debug for the traceback, and "
              "please report it)", file=sys.stderr)
        return EXIT_BUG
    if result is not None and args.json:
        print(json.dumps(result, indent=2))
    elif result is not None:
        report.say(report.line(args.verb, result))
    return 0


# Torch reports a failed allocation as a RuntimeError, not a MemoryError (CPU: "DefaultCPUAllocator: can't
# allocate memory", CUDA: "CUDA out of memory"), and an input its layers cannot take as one too.
_ALLOCATION = re.compile(r"out of memory|can't allocate memory|not enough memory|Unable to allocate", re.IGNORECASE)
_SHAPE = re.compile(r"shapes cannot be multiplied|Kernel size can't be greater|Output size is too small|"
                    r"Padding size should be less than|Calculated padded input size|size mismatch|"
                    r"sizes of tensors must match|non-empty \dD", re.IGNORECASE)


def expected_failure(exc: BaseException) -> str | None:
    """The one-line message (exit 2) of an expected failure that is not a ValueError or an OSError, naming the
    flags or files to change; None for a bug. The one table of them, so every verb maps them alike."""
    if isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and _ALLOCATION.search(str(exc))):
        return ("out of memory: the requested sizes (--models, --batch-models, --hidden, --width, --memory, "
                "--block-targets) are too large for this machine: lower them")
    if isinstance(exc, RecursionError):
        return "a file is nested too deeply to read (a JSON file of thousands of levels): replace it with the real one"
    if isinstance(exc, RuntimeError) and _SHAPE.search(str(exc)):
        return (f"the architecture cannot take this dataset's images ({_one_line(exc)[:200]}): choose another --arch, "
                "or a dataset of larger images")
    return None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
