"""Corrupt artifacts on every page: an st.error naming the file, never a traceback (AppTest).

Every artifact but the manifest (whose corruption tests/pages/test_apptest.py covers) is corrupted at once,
one corruption at a time, and every page is opened; then the JSON files whose keys the pages read are given
a key of the wrong type, one at a time, on the pages that read them.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from backend.store import schema
from tests.conftest import record_count
from tests.pages import test_apptest

RUN, app = test_apptest.RUN, test_apptest.app  # the pages' AppTest fixture, shared
# Leakage results reads the run (its images) only to show votes, and the fixture run has none.
UNREAD = {"leakage_results"}
PAGES = ["overview", "neighbours", "quality", "methods", "pca", "clusters", "counterfactuals", "review", "leakage_results"]


def corrupt_all(run, how: str) -> None:
    for path in sorted(run.rglob("*")):
        if not path.is_file() or path.name == schema.MANIFEST.name or "heldout" in path.parts:
            continue
        if how == "zero-length":
            path.write_bytes(b"")
        elif path.suffix == ".npy":  # int8, one dimension: wrong dtype and wrong shape for every array
            with open(path, "wb") as f:
                np.save(f, np.zeros(3, np.int8))
        elif path.suffix == ".json":
            path.write_text("[]")


@pytest.fixture(scope="module", params=["zero-length", "wrong-dtype-or-shape"])
def corrupted_root(request, dashboard_data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"corrupt-pages-{request.param}")
    run = shutil.copytree(dashboard_data_dir / "runs" / RUN, root / "runs" / RUN)
    corrupt_all(run, request.param)
    return root


@pytest.mark.parametrize("page", PAGES)
def test_every_page_on_a_run_of_corrupt_files_shows_an_error_not_a_traceback(app, corrupted_root, page):
    at = app(page, root=corrupted_root, run=RUN)
    reads_the_run = page not in UNREAD
    ok = not at.exception and (len(at.error) >= 1 or not reads_the_run)
    record_count("corrupt run x page", "st.error, no traceback" if ok else "FAILED")
    assert not at.exception, at.exception
    if reads_the_run:
        assert len(at.error) >= 1 and any(".npy" in e.value or ".json" in e.value for e in at.error), \
            [e.value for e in at.error]


@pytest.mark.parametrize("artifact, page", [
    (schema.METRICS, "overview"), (schema.STRUCTURE_SUMMARY, "pca"), (schema.CLUSTERS, "clusters"),
    (schema.LEAKAGE_SUMMARY, "review"),
], ids=lambda v: getattr(v, "name", v))
def test_a_json_key_of_the_wrong_type_is_an_error_naming_the_file(app, dashboard_data_dir, tmp_path, artifact, page):
    run = shutil.copytree(dashboard_data_dir / "runs" / RUN, tmp_path / "runs" / RUN, symlinks=True)
    path = artifact.path(run)
    obj = json.loads(path.read_text())
    obj[next(iter(artifact.keys))] = "corrupt"
    path.write_text(json.dumps(obj))
    at = app(page, root=tmp_path, run=RUN)
    ok = not at.exception and any(path.name in e.value for e in at.error)
    record_count("wrong-type JSON key x page", "st.error naming the file" if ok else "FAILED")
    assert not at.exception, at.exception
    assert any(path.name in e.value for e in at.error), [e.value for e in at.error]
