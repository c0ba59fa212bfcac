"""The layers contract (pyproject.toml, [tool.importlinter]): it holds on this tree, and `lint-imports` fails
on a back-import planted in a copy of it, a function-level one included (how the old cycles hid)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

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


def contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


@pytest.fixture(scope="module")
def tree_copy(tmp_path_factory) -> Path:
    """The root packages and the contract copied once, holding as the tree does (one lint-imports run)."""
    tree = tmp_path_factory.mktemp("tree")
    for name in root_packages():
        shutil.copytree(ROOT / name, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tree)
    assert lint_imports(tree).returncode == 0
    return tree


def lint_planted(tree_copy: Path, tmp_path: Path, module: str, statement: str):
    """lint-imports on a test's own copy of tree_copy with the import `statement` planted, function-level, in
    `module` (a path from the root): the completed process."""
    tree = Path(shutil.copytree(tree_copy, tmp_path / "tree"))
    path = tree / module
    path.write_text(path.read_text() + f"\n\ndef _planted():\n    {statement}\n    return {statement.split()[-1]}\n")
    return lint_imports(tree)


def test_a_planted_back_import_breaks_it(tree_copy, tmp_path):
    result = lint_planted(tree_copy, tmp_path, "backend/store/manifest.py", "from backend.training.seeds import MODEL_STREAM")
    assert result.returncode != 0
    assert "backend.store.manifest -> backend.training.seeds" in result.stdout and "1 broken" in result.stdout


def test_every_top_level_package_is_under_the_contract():
    """A new package beside backend/ (as widgets/) must join root_packages, so that its imports are checked;
    tests/ is the one package outside it (tests import every layer)."""
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert packages == set(root_packages())


def test_a_page_that_imports_a_stage_breaks_it(tree_copy, tmp_path):
    """A page reads the run through backend.api: a stage import planted in a page (counterfactuals, the last to
    move onto the API) breaks the pages contract, a function-level one too."""
    result = lint_planted(tree_copy, tmp_path, "pages/counterfactuals.py", "from backend.ranking import top_k")
    assert result.returncode != 0
    assert "pages.counterfactuals -> backend.ranking" in result.stdout and "1 broken" in result.stdout


def test_the_pages_contract_forbids_every_stage_but_the_api():
    """The forbidden list is backend's layers less the public surface (api, and target_table: the view model that
    filters, sorts and exports api.table()'s columns), so a new stage package is forbidden to pages too."""
    (layers,) = [c for c in contracts() if c.get("containers") == ["backend"]]
    stages = {f"backend.{name.strip()}" for layer in layers["layers"] for name in layer.split("|")}
    (pages,) = [c for c in contracts() if c.get("source_modules") == ["pages"]]
    assert set(pages["forbidden_modules"]) == stages - {"backend.api", "backend.target_table"}
    assert "ignore_imports" not in pages  # every page is held to it: none is let off


def test_a_cli_query_verb_that_imports_a_stage_breaks_it(tree_copy, tmp_path):
    """The CLI's query verbs (counterfactual, support, control, faithfulness) ask backend.api as the pages do: a stage
    import planted in one, function-level as the verbs import, breaks the CLI's contract."""
    result = lint_planted(tree_copy, tmp_path, "precompute/counterfactual.py", "from backend.counterfactuals.removal import top_k")
    assert result.returncode != 0
    assert "precompute.counterfactual -> backend.counterfactuals.removal" in result.stdout and "1 broken" in result.stdout


def test_the_cli_query_contract_forbids_every_stage_but_the_api():
    (layers,) = [c for c in contracts() if c.get("containers") == ["backend"]]
    stages = {f"backend.{name.strip()}" for layer in layers["layers"] for name in layer.split("|")}
    (cli,) = [c for c in contracts() if c.get("source_modules", [""])[0].startswith("precompute.")]
    assert set(cli["forbidden_modules"]) == stages - {"backend.api"}
    assert set(cli["source_modules"]) == {"precompute.counterfactual", "precompute.faithfulness"}
    assert "ignore_imports" not in cli
