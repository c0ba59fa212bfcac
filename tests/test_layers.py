"""The layers contract (pyproject.toml, [tool.importlinter]): it holds on this tree, and `lint-imports` fails
on a back-import planted in a copy of it, a function-level one included (how the old cycles hid)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.conftest import ROOT

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(tree: Path) -> subprocess.CompletedProcess:
    """`lint-imports` on the packages of `tree` (its pyproject's contract), not on any installed copy."""
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=tree, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(tree)))


def test_the_layers_contract_holds():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def root_packages() -> list[str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["root_packages"]


def test_a_planted_back_import_breaks_it(tmp_path):
    for name in root_packages():
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    assert lint_imports(tmp_path).returncode == 0  # the copy holds, as the tree does
    store = tmp_path / "backend" / "store" / "manifest.py"
    store.write_text(store.read_text() + "\n\ndef _planted():\n    from backend.training.seeds import MODEL_STREAM\n"
                                          "    return MODEL_STREAM\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "backend.store.manifest -> backend.training.seeds" in result.stdout and "1 broken" in result.stdout


def test_every_top_level_package_is_under_the_contract():
    """A new package beside backend/ (as widgets/) must join root_packages, so that its imports are checked;
    tests/ is the one package outside it (tests import every layer)."""
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert packages == set(root_packages())
