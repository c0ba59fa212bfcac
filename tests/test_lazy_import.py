"""backend/lazy_import.py: what the pages import loads no torch, sklearn or faiss until something computes, and
the shell every page runs in loads no database library."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

# Every backend module a page imports at its start (pages/*.py).
PAGE_IMPORTS = ["backend.api", "backend.structure.embeddings", "backend.structure.faithfulness", "backend.structure.clusters",
                "backend.structure.similar_targets", "backend.training.control", "backend.training.retrain_store",
                "backend.counterfactuals.predict", "backend.counterfactuals.support", "backend.counterfactuals.evaluation",
                "backend.leakage.analysis", "backend.leakage.agreement", "backend.leakage.annotations"]
HEAVY = ["torch", "sklearn", "faiss"]


def loaded_after(code: str, modules: list[str] = HEAVY) -> dict[str, bool]:
    """Which of `modules` are imported after running `code` in a fresh process."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps({{m: m in sys.modules for m in {modules!r}}}))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True, timeout=300)
    return json.loads(out.stdout.splitlines()[-1])


def test_the_modules_pages_import_load_no_heavy_library():
    assert loaded_after("\n".join(f"import {m}" for m in PAGE_IMPORTS)) == {m: False for m in HEAVY}


def test_the_page_shell_loads_no_database_library():
    """app.py and widgets/ run before every page: SQLAlchemy is for the leak-review pages alone."""
    assert loaded_after("import widgets.text, widgets.access, widgets.run_context, widgets.url_state, widgets.target_picker, "
                        "widgets.image_grid", ["sqlalchemy"]) == {"sqlalchemy": False}
    assert loaded_after("import backend.leakage.annotations", ["sqlalchemy"]) == {"sqlalchemy": True}


def test_the_public_api_loads_no_database_library():
    """A notebook's `open_run(...).table()` reads tag names' rule (backend.access.names), not the database."""
    assert loaded_after("import backend.api, backend.target_table", ["sqlalchemy"]) == {"sqlalchemy": False}


def test_the_server_imports_what_the_pages_import_before_its_first_request():
    """`streamlit run app.py` finds app.py's st.App, whose start-up imports the pages' modules (not torch)."""
    from streamlit.web.server.app_discovery import discover_asgi_app

    found = discover_asgi_app(ROOT / "app.py")
    assert found.is_asgi_app and found.import_string == "app:app"
    warm = ["pandas", "widgets.image_grid", "backend.datamodels.quality", "backend.leakage.annotations"]
    start = "import asyncio, app\nasync def start():\n    async with app.preload(app.app):\n        pass\nasyncio.run(start())"
    assert loaded_after("import app", warm + HEAVY) == {m: False for m in warm + HEAVY}
    assert loaded_after(start, warm + HEAVY) == {**{m: True for m in warm}, **{m: False for m in HEAVY}}


def test_a_lazy_module_loads_on_first_use_and_is_the_one_module():
    loaded = loaded_after("from backend.structure import embeddings\nimport sys\nassert 'torch' not in sys.modules\n"
                          "x = embeddings.torch.ones(2, 4)\nimport torch\nassert embeddings.torch.ones is torch.ones\n"
                          "assert embeddings.unit_rows(x).norm(dim=1).tolist() == [1.0, 1.0]")
    assert loaded["torch"] and not loaded["sklearn"]

