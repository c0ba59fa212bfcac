"""The README's commands run as written after `make run`, which installs into .venv/ but activates nothing."""
from __future__ import annotations

import argparse
import re

from precompute.cli import build_parser
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


def cli_verbs() -> set[str]:
    parser = build_parser()
    return set(next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices)


def test_every_precompute_command_uses_the_venv_and_names_a_real_verb():
    verbs = cli_verbs()
    calls = re.findall(r"(\S*)python -m precompute ((?:--debug )?[^\s`]+)", README)
    assert len(calls) > 20  # the Command line section alone lists more
    for prefix, verb in calls:
        assert prefix.lstrip("`") == ".venv/bin/", f"README: `{prefix.lstrip('`')}python -m precompute {verb}` needs .venv/bin/"
        verb = verb.removeprefix("--debug ")
        assert verb in verbs | {"--help", "VERB"}, f"README: `python -m precompute {verb}`: no such verb ({sorted(verbs)})"


def test_every_shell_block_runs_the_venv_tools():
    blocks = re.findall(r"^```(?:bash|sh)?\n(.*?)^```", README, flags=re.S | re.M)
    assert blocks
    for block in blocks:
        for line in block.splitlines():
            command = line.split(" #")[0] if not line.startswith("#") else ""
            bare = re.findall(r"(?<![\w./-])(python3?|pip|streamlit|ray|pytest) ", command)
            assert not bare, f"README: {line!r} runs {bare[0]} from the PATH, not from .venv/bin/"
