"""The annotation database: upserts, uniqueness, skips, undo, names and error paths, on real SQLite files and,
through the `store` fixture, on a real PostgreSQL server too (tests/leakage/conftest.py)."""
import sqlite3

import pytest
import sqlalchemy as sa

from backend.leakage import annotations
from backend.leakage.annotations import AnnotationStore, AnnotationStoreError
from backend.access.names import AnnotatorNameError, validate_name


@pytest.fixture
def store(database_url):
    s = AnnotationStore(database_url)
    yield s
    s.dispose()


def refuse_inserts_of_train(store, train: int) -> None:
    """A trigger that makes the database refuse any vote on `train` with a constraint error."""
    with store.engine.begin() as conn:
        if store.engine.dialect.name == "sqlite":
            conn.exec_driver_sql(f"CREATE TRIGGER refuse BEFORE INSERT ON votes WHEN NEW.train = {train} "
                                 "BEGIN SELECT RAISE(ABORT, 'refused'); END")
        else:
            conn.exec_driver_sql(f"CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN IF NEW.train = {train} THEN "
                                 "RAISE EXCEPTION 'refused' USING ERRCODE = 'check_violation'; END IF; RETURN NEW; "
                                 "END $$ LANGUAGE plpgsql")
            conn.exec_driver_sql("CREATE TRIGGER refuse BEFORE INSERT ON votes FOR EACH ROW EXECUTE FUNCTION refuse()")


def own_votes(store, run, annotator, test):
    """{train: is_leak} of one annotator on one test image, read through the public `votes`."""
    return {v.train: v.is_leak for v in store.votes(run) if v.annotator == annotator and v.test == test}


def raw_rows(store, sql):
    with store.engine.connect() as conn:
        return conn.exec_driver_sql(sql).fetchall()


def test_revote_replaces_and_never_duplicates(store):
    assert store.submit("r", 3, "ann", {10: True, 11: False}) == 2
    store.submit("r", 3, "ann", {10: False})
    store.submit("r", 3, "bob", {10: True})
    assert own_votes(store, "r", "ann", 3) == {10: False, 11: False}
    assert raw_rows(store, "select count(*) from votes")[0][0] == 3
    by_annotator = {(v.annotator, v.train): v.is_leak for v in store.votes("r")}
    assert by_annotator == {("ann", 10): False, ("ann", 11): False, ("bob", 10): True}


def test_unique_constraint_holds_in_the_database_itself(store):
    store.submit("r", 0, "ann", {1: True})
    annotator = store.annotator_id("ann")
    with pytest.raises(sa.exc.IntegrityError):
        with store.engine.begin() as conn:
            conn.execute(annotations.votes.insert().values(
                run="r", test=0, train=1, annotator_id=annotator, is_leak=False, voted_at=annotations._now()))


def test_runs_are_kept_apart(store):
    store.submit("a", 0, "ann", {1: True})
    store.submit("b", 0, "ann", {1: False})
    assert own_votes(store, "a", "ann", 0) == {1: True}
    assert own_votes(store, "b", "ann", 0) == {1: False}
    assert store.reviewed("a", "ann") == {0}


def test_skips_leave_the_queue_and_a_later_submit_clears_them(store):
    store.skip("r", 4, "ann")
    store.skip("r", 4, "ann")
    assert store.skipped("r", "ann") == {4} and store.reviewed("r", "ann") == set()  # a skip is no review
    assert store.skip_counts("r") == {"ann": 1}
    store.submit("r", 4, "ann", {7: True})
    assert store.skip_counts("r") == {} and store.skipped("r", "ann") == set()
    assert store.reviewed("r", "ann") == {4}


def test_undo_last_returns_the_latest_action_to_the_queue(store):
    store.submit("r", 1, "ann", {5: True, 6: False})
    store.skip("r", 2, "ann")
    store.submit("r", 3, "ann", {5: False})
    store.submit("r", 9, "bob", {5: True})
    assert store.undo_last("r", "ann") == (3, {5: False})
    assert store.reviewed("r", "ann") == {1} and store.skipped("r", "ann") == {2}
    assert store.undo_last("r", "ann") == (2, {})
    assert store.undo_last("r", "ann") == (1, {5: True, 6: False})
    assert store.undo_last("r", "ann") is None
    assert store.undo_last("r", "nobody") is None
    assert [(v.annotator, v.test) for v in store.votes("r")] == [("bob", 9)]


def test_a_refused_submission_writes_none_of_its_votes(store):
    store.submit("r", 0, "ann", {1: True})
    refuse_inserts_of_train(store, 3)
    with pytest.raises(AnnotationStoreError, match="nothing was saved"):
        store.submit("r", 0, "ann", {1: False, 2: True, 3: True})
    assert own_votes(store, "r", "ann", 0) == {1: True}


def test_portable_upsert_matches_the_native_one(store):
    annotator = store.annotator_id("ann")
    rows = [{"run": "r", "test": 0, "train": t, "annotator_id": annotator, "is_leak": t % 2 == 0,
             "voted_at": annotations._now()} for t in range(4)]
    with store.engine.begin() as conn:
        annotations._update_or_insert_votes(conn, rows)
        annotations._update_or_insert_votes(conn, [dict(r, is_leak=True) for r in rows[:2]])
    assert own_votes(store, "r", "ann", 0) == {0: True, 1: True, 2: True, 3: False}


@pytest.mark.parametrize("name", ["<script>alert(1)</script>", "O'Brien \"Bob\"", "x'); DROP TABLE votes;--", "名前 ü"])
def test_hostile_names_are_stored_verbatim(store, name):
    store.submit("r", 0, name, {1: True})
    assert [v.annotator for v in store.votes("r")] == [name]
    assert raw_rows(store, "select name from annotators") == [(name,)]


@pytest.mark.parametrize("name, pattern", [("", "empty"), ("   ", "empty"), ("a\nb", "control"), ("x" * 65, "at most 64"),
                                           ("\u200b", "invisible"), ("al\u200dice", "invisible"), ("\u202eecila", "invisible"),
                                           ("\u0430lice", "look-alike"), ("b\u03bfb", "look-alike")])
def test_bad_names_are_rejected(store, name, pattern):
    with pytest.raises(AnnotatorNameError, match=pattern):
        validate_name(name)
    with pytest.raises(AnnotatorNameError):
        store.submit("r", 0, name, {1: True})
    assert raw_rows(store, "select count(*) from annotators")[0][0] == 0


def test_default_database_is_created_in_the_data_directory_in_wal_mode(tmp_path, monkeypatch):
    monkeypatch.delenv(annotations.ENV_VAR, raising=False)
    monkeypatch.setenv("DATAMODELS_DATA_DIR", str(tmp_path / "fresh"))
    store = AnnotationStore()
    store.submit("r", 0, "ann", {1: True})
    store.dispose()
    path = tmp_path / "fresh" / "annotations.db"
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("select count(*) from votes").fetchone()[0] == 1


def test_url_from_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "elsewhere.db"
    path.touch()
    monkeypatch.setenv(annotations.ENV_VAR, f"sqlite:///{path}")
    store = AnnotationStore()
    store.submit("r", 0, "ann", {1: True})
    assert store.url.endswith("elsewhere.db")
    store.dispose()


def test_configured_file_that_does_not_exist_is_a_clear_error(tmp_path):
    missing = tmp_path / "typo.db"
    with pytest.raises(AnnotationStoreError, match=r"does not exist: check DATAMODELS_DATABASE_URL.*touch"):
        AnnotationStore(f"sqlite:///{missing}")
    assert not missing.exists()


def test_unusable_databases_are_clear_errors(tmp_path):
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(AnnotationStoreError, match="could not create the annotation tables"):
        AnnotationStore(f"sqlite:///{garbage}")
    with pytest.raises(AnnotationStoreError, match="not a SQLAlchemy URL"):
        AnnotationStore("no url at all")
    with pytest.raises(AnnotationStoreError, match="no database driver"):
        AnnotationStore("nosuchdialect://host/db")


def test_a_database_that_disappears_gives_a_clear_error(store, tmp_path):
    store.submit("r", 0, "ann", {1: True})
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE votes")
    with pytest.raises(AnnotationStoreError, match="could not save the votes"):
        store.submit("r", 0, "ann", {1: False})


def test_shared_store_is_one_pool_per_database_and_notices_a_deleted_file(tmp_path, monkeypatch):
    monkeypatch.setenv("DATAMODELS_DATA_DIR", str(tmp_path))
    monkeypatch.delenv(annotations.ENV_VAR, raising=False)
    first = annotations.shared_store()
    assert annotations.shared_store() is first
    first.submit("r", 0, "ann", {1: True})
    (tmp_path / "annotations.db").unlink()
    with pytest.raises(AnnotationStoreError, match="was deleted while the app was running"):
        annotations.shared_store()
    fresh = annotations.shared_store()
    assert fresh is not first and fresh.votes("r") == []
    fresh.dispose()


@pytest.mark.parametrize("styled", ["\uff41\uff4c\uff49\uff43\uff45", "\U0001d41a\U0001d425\U0001d422\U0001d41c\U0001d41e",
                                    "\ufb01ona"])  # fullwidth and math-bold "alice", "fiona" with its ligature
def test_compatibility_forms_are_refused_not_folded_onto_another_name(store, styled):
    store.submit("r", 0, "alice", {2: False})
    with pytest.raises(AnnotatorNameError, match="compatibility characters"):
        store.submit("r", 0, styled, {1: True})
    assert [(v.annotator, v.train) for v in store.votes("r")] == [("alice", 2)]


def test_canonically_equivalent_spellings_are_one_name(store):
    """NFC, the one normalisation: an é typed as one code point or as e + combining accent."""
    store.submit("r", 0, "jos\u00e9", {1: True})
    store.submit("r", 0, "jose\u0301", {2: True})
    assert {v.annotator for v in store.votes("r")} == {"jos\u00e9"}


@pytest.mark.parametrize("url, pattern", [("sqlite://", "in-memory"), ("sqlite:///:memory:", "in-memory"),
                                          ("sqlite:///file:votes.db?mode=memory&uri=true", "in-memory"),
                                          ("sqlite:///file:votes.db?uri=true", "file: URI")])
def test_volatile_or_uri_sqlite_urls_are_refused(url, pattern):
    with pytest.raises(AnnotationStoreError, match=pattern):
        AnnotationStore(url)
