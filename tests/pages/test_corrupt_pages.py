"""Corrupt artifacts page by page: each file a page reads, corrupted alone, gives an st.error naming the file on
that page, never a traceback (AppTest).

Which files a page reads is traced, not listed: every page is opened on an intact copy of the run with the
schema's one read path (artifacts._existing) recorded, held-out run included. Then each file a page read is
corrupted alone, one corruption kind per file (the CLI matrix, tests/precompute/test_corrupt_files.py, runs
every kind through the same readers), the caches are cleared, and the page is opened again. The trace also
holds the corruption matrices to the schema: every entry is read by some verb or page, or is named here with
the reason no test reads it.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import streamlit as st

from backend.store import artifacts, schema
from tests.conftest import record_count
from tests.pages import test_apptest
from tests.precompute.test_corrupt_files import READERS, WRITTEN_ONLY, applies, corrupt, nested_spec

RUN, app = test_apptest.RUN, test_apptest.app  # the pages' AppTest fixture, shared
# Every page, and the views that read files their page's default view does not (the whole test set's
# clustering; the Overview scatter's held-out run).
VIEWS = {page: (page, {}) for page in ("overview", "neighbours", "quality", "methods", "pca", "clusters",
                                       "embeddings_map", "counterfactuals", "review", "leakage_results")}
VIEWS["clusters-whole"] = ("clusters", {"class": "-1"})
VIEWS["overview-margins"] = ("overview", {"overview_chart": "Predicted vs actual"})
# Entries no test run reads, and why.
UNREAD = {
    schema.HELDOUT.name: "a run directory of its own: its files are the run's entries, read (and corrupted) under heldout/",
    schema.SSL_EMBEDDINGS.name: "read by `attribute --method ssl-esvm` to resume, and by a similarity search in its "
                                "space (the test runs have none; tests/test_api_similar.py searches one)",
    schema.SSL_ENCODER.name: "read only by `attribute --method ssl-esvm` to resume, after training its encoder",
    schema.ANALYSIS.name: "analyze's summary of its run, for the user: nothing reads it back",
    schema.PCA_MEAN.name: "kept for readers outside this code (np.load): no verb or page reads it",
    schema.PCA_EXPLAINED_VARIANCE.name: "kept for readers outside this code (np.load): no verb or page reads it",
    schema.RETRAIN_SPEND.name: "read by a retraining click (tests/access/test_access_budget.py corrupts it)",
    schema.EXTERNAL.name: "only an imported run has one (tests/importers/test_release.py corrupts it)",
}


def kind_for(artifact: schema.Artifact) -> str:
    """The one corruption a page case uses: the schema's deepest check for JSON, the dtype for arrays."""
    if artifact.kind == "json":
        return "json-nested" if nested_spec(artifact) else "json-wrong-type" if artifact.keys else "json-list"
    return "wrong-dtype" if artifact.kind == "npy" else "truncated"


@pytest.fixture(scope="module")
def pages_root(dashboard_data_dir, tmp_path_factory) -> Path:
    """A data directory holding a private copy of the dashboard run (held-out run included)."""
    root = tmp_path_factory.mktemp("corrupt-pages")
    shutil.copytree(dashboard_data_dir / "runs" / RUN, root / "runs" / RUN)
    return root


def _fresh() -> None:
    """Forget every cached Run and derived result, so the next script run opens the files again."""
    st.cache_resource.clear()
    st.cache_data.clear()


def _artifact_of(path: Path, run: Path) -> tuple[schema.Artifact, Path] | None:
    """The schema entry of a path read (inside the run or its held-out run) and the run it belongs to."""
    for base in (run / "heldout", run):
        if path.is_relative_to(base):
            entry = next((a for a in schema.ARTIFACTS if a.kind != "run" and a.fields_of(path, base) is not None), None)
            return (entry, base) if entry else None
    return None


@pytest.fixture(scope="module")
def page_reads(pages_root) -> dict[str, dict[str, tuple[schema.Artifact, Path]]]:
    """{view: {path read, relative to the run: (its entry, the file)}}, one file per entry and run, traced on
    the intact run while the view's page runs (after the shell's first run, as tests/conftest.py's open_app)."""
    from streamlit.testing.v1 import AppTest

    from tests.conftest import ROOT

    run = pages_root / "runs" / RUN
    read: list[Path] = []
    existing = artifacts._existing

    def spy(directory, artifact, fields):
        read.append(Path(os.path.abspath(artifact.path(directory, **fields))))
        return existing(directory, artifact, fields)

    reads, patch = {}, pytest.MonkeyPatch()
    patch.setattr(artifacts, "_existing", spy)
    patch.setenv("DATAMODELS_DATA_DIR", str(pages_root))
    try:
        for view, (page, params) in VIEWS.items():
            at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
            at.query_params.update({"run": RUN, **params})
            at.run()
            _fresh()  # the page opens every file itself, not through the shell's cached Run
            read.clear()
            at.switch_page(f"pages/{page}.py").run()
            assert not at.exception, (view, at.exception)
            by_entry = {}
            for path in read:
                found = _artifact_of(path, run)
                if found is not None:
                    by_entry.setdefault((found[0].name, found[1]), (found[0], path))
            reads[view] = {path.relative_to(run).as_posix(): (entry, path) for entry, path in by_entry.values()}
    finally:
        patch.undo()
    return reads


@pytest.mark.parametrize("view", VIEWS)
def test_each_file_a_page_reads_corrupted_alone_is_an_error_naming_it(app, pages_root, page_reads, view):
    """The files are known only once the trace ran, so one case per view walks them."""
    page, params = VIEWS[view]
    assert page_reads[view] or page == "leakage_results", f"{view} read no run file"
    failures = []
    for relative, (artifact, path) in sorted(page_reads[view].items()):
        original, stat = path.read_bytes(), path.stat()
        corrupt(path, artifact.kind, kind_for(artifact), artifact)
        try:
            _fresh()
            at = app(page, root=pages_root, run=RUN, **params)
        except AssertionError as exc:  # open_app: a script run raised
            failures.append(f"{relative}: {str(exc)[:300]}")
            continue
        finally:
            path.write_bytes(original)
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        named = any(path.name in e.value for e in at.error)
        record_count("corrupt file x page that reads it", "st.error naming the file" if named else "FAILED")
        if not named:
            failures.append(f"{relative} ({kind_for(artifact)}): errors {[e.value for e in at.error]}")
    _fresh()
    if failures:
        pytest.fail("\n".join(failures))


def test_every_schema_entry_is_read_by_a_verb_or_a_page_in_the_matrices(page_reads):
    """A new schema entry fails here until a verb's or a page's corruption case covers it (or UNREAD says why)."""
    covered = {a.name for a, _ in READERS} | {a.name for a, _ in WRITTEN_ONLY} | set(UNREAD)
    covered |= {entry.name for files in page_reads.values() for entry, _ in files.values()}
    missing = sorted(a.name for a in schema.ARTIFACTS if a.name not in covered)
    assert not missing, f"schema entries no corruption case reads: {missing}"
    print(f"\nfiles read per view: { {view: len(files) for view, files in page_reads.items()} }")


# Hostile values (issue 25): a value a page would use as an index or label, out of range or not finite, in any
# file the page reads, is one st.error naming the file (the schema's `below` and `finite`, checked on read).
VALUE_KINDS = ("out-of-range", "negative", "non-finite")


@pytest.mark.parametrize("view", VIEWS)
def test_each_out_of_range_value_a_page_reads_is_one_error_naming_the_file(app, pages_root, page_reads, view):
    page, params = VIEWS[view]
    failures, tried = [], 0
    for relative, (artifact, path) in sorted(page_reads[view].items()):
        for how in (k for k in VALUE_KINDS if artifact.kind == "npy" and applies(artifact, k)):
            tried += 1
            original, stat = path.read_bytes(), path.stat()
            corrupt(path, artifact.kind, how, artifact)
            try:
                _fresh()
                at = app(page, root=pages_root, run=RUN, **params)
            except AssertionError as exc:  # a script run raised: a traceback on the page
                failures.append(f"{relative} ({how}): {str(exc)[:300]}")
                record_count("out-of-range value x page that reads it", "FAILED")
                continue
            finally:
                path.write_bytes(original)
                os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
            named = len(at.error) == 1 and path.name in at.error[0].value
            record_count("out-of-range value x page that reads it", "one st.error naming the file" if named else "FAILED")
            if not named:
                failures.append(f"{relative} ({how}): errors {[e.value for e in at.error]}")
    _fresh()
    if failures:
        pytest.fail("\n".join(failures))


def _deep(manifest: dict) -> str:
    return "[" * 200_000 + "]" * 200_000


MANIFESTS = {
    "nested 200,000 deep": _deep,
    "empty class_names": lambda m: {**m, "dataset": {**m["dataset"], "class_names": []}},
    "one class": lambda m: {**m, "dataset": {**m["dataset"], "class_names": ["only"]}},
    "negative n_models": lambda m: {**m, "n_models": -5},
    "n_models a bool": lambda m: {**m, "n_models": True},
    "negative n_train": lambda m: {**m, "dataset": {**m["dataset"], "n_train": -1}},
}


@pytest.mark.parametrize("case", MANIFESTS)
@pytest.mark.parametrize("page", ["overview", "neighbours", "clusters", "counterfactuals"])
def test_a_hostile_manifest_is_one_error_naming_it_on_every_page(app, pages_root, page, case):
    import json

    path = pages_root / "runs" / RUN / schema.MANIFEST.name
    original, stat = path.read_bytes(), path.stat()
    changed = MANIFESTS[case](json.loads(original))
    path.write_text(changed if isinstance(changed, str) else json.dumps(changed))
    try:
        _fresh()
        at = app(page, root=pages_root, run=RUN)
    finally:
        path.write_bytes(original)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        _fresh()
    named = len(at.error) == 1 and "manifest.json" in at.error[0].value
    record_count("hostile manifest x page", "one st.error naming the file" if named else "FAILED")
    assert named, [e.value for e in at.error]


# Hostile URL parameters: each page survives them, with at most one message about the parameter and no traceback.
HOSTILE_PARAMS = {
    "5,000-digit target": {"target": "test:" + "9" * 5000},
    "superscript-two target": {"target": "test:\u00b2"},
    "Arabic-Indic digit target": {"target": "test:\u0663"},
    "target with a newline": {"target": "test:0\n"},
    "negative target": {"target": "test:-1"},
    "superscript-two basket": {"basket": "\u00b2"},
    "5,000-digit basket": {"basket": "9" * 5000},
    "huge basket range": {"basket": "0-" + "9" * 30},
    "superscript class": {"class": "\u00b2"},
    "5,000-digit class": {"class": "9" * 5000},
}
HOSTILE_RUNS = {"run ../": "../runs/" + RUN, "run absolute": "/etc", "run ..": ".."}


PAGES = list(dict.fromkeys(page for page, _ in VIEWS.values()))
# Every page takes `run` and `target`; `basket` is the Counterfactuals page's, `class` the Clusters page's.
HOSTILE_CASES = [pytest.param(page, case, id=f"{page}-{case}") for page in PAGES for case in (*HOSTILE_PARAMS, *HOSTILE_RUNS)
                 if "basket" not in HOSTILE_PARAMS.get(case, {}) or page == "counterfactuals"
                 if "class" not in HOSTILE_PARAMS.get(case, {}) or page == "clusters"]


@pytest.mark.parametrize("page, case", HOSTILE_CASES)
def test_hostile_url_parameters_are_never_a_traceback(app, pages_root, page, case):
    params = HOSTILE_PARAMS.get(case, {})
    run = HOSTILE_RUNS.get(case, RUN)
    at = app(page, root=pages_root, run=run, **params)  # raises on a traceback (open_app)
    shown = [m.value for kind in (at.error, at.warning, at.sidebar.warning) for m in kind]
    held = not at.exception and len(shown) <= 2 and all(str(pages_root) not in m for m in shown)
    record_count("hostile URL parameter x page", "no traceback" if held else "FAILED")
    assert held, shown


def test_votes_for_images_the_run_lacks_are_one_error_and_left_out(app, pages_root, tmp_path, monkeypatch):
    from backend.leakage.annotations import ENV_VAR, AnnotationStore

    database = tmp_path / "votes.db"
    database.touch()
    monkeypatch.setenv(ENV_VAR, f"sqlite:///{database}")
    store = AnnotationStore(f"sqlite:///{database}")
    store.submit(RUN, 0, "ann", {1: True, 10**9: True})
    store.submit(RUN, 10**9, "ann", {2: True})
    store.dispose()
    at = app("leakage_results", root=pages_root, run=RUN)
    held = len(at.error) == 1 and "2 votes" in at.error[0].value and "train:1000000000" in at.error[0].value
    record_count("out-of-range vote x page", "one st.error" if held else "FAILED")
    assert held, [e.value for e in at.error]
