"""The annotation database: who reviewed which candidate leak, and what they said.

Ilyas et al. (2022, Sec. 4.3) had annotators mark, for each test image, which of its datamodel
candidates show "the same scene / a near duplicate". This module stores those judgments.

Tables:
  annotators  id, name (unique, stored verbatim), created_at
  votes       run, test, train, annotator_id, is_leak, voted_at; UNIQUE(run, test, train, annotator_id):
              a re-vote replaces the earlier one (an upsert), so a pair never holds two votes of one annotator
  skips       run, test, annotator_id, skipped_at; UNIQUE(run, test, annotator_id)
  tags        run, target, tag, annotator_id, tagged_at; UNIQUE(run, target, tag): `target` is a margins column
              (train:i is i, test:j is n_train + j), the Dataset page's tags

`run` is the run's name, `test` a position in the test split, `train` a position in the training split.
The database is a SQLite file (annotations.db in the data directory, data/ by default; WAL mode, busy timeout) or any
SQLAlchemy URL given in DATAMODELS_DATABASE_URL. Every statement is SQLAlchemy Core with bound
parameters; each write is one transaction, so a caller learns of success only once it is committed.
Only writes take SQLite's write lock; reads run in plain transactions, so the results page never
queues behind voters (WAL lets them read the last commit while a write is in flight).
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, NoSuchModuleError

from backend.access.names import MAX_NAME_LENGTH, validate_name, validate_tag
from backend.store.catalog import data_dir

ENV_VAR = "DATAMODELS_DATABASE_URL"
DB_FILE = "annotations.db"
BUSY_TIMEOUT_S = 30
# A race between two writers of the same new key costs one retry; more means something else is wrong.
INSERT_RETRIES = 3
# Execution option of the connections that write: on SQLite they begin with BEGIN IMMEDIATE.
WRITE_LOCK = "annotations_write_lock"

metadata = sa.MetaData()

annotators = sa.Table(
    "annotators", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(MAX_NAME_LENGTH), nullable=False, unique=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

votes = sa.Table(
    "votes", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("run", sa.String(255), nullable=False),
    sa.Column("test", sa.Integer, nullable=False),
    sa.Column("train", sa.Integer, nullable=False),
    sa.Column("annotator_id", sa.Integer, sa.ForeignKey("annotators.id"), nullable=False),
    sa.Column("is_leak", sa.Boolean, nullable=False),
    sa.Column("voted_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("run", "test", "train", "annotator_id", name="one_vote_per_pair_and_annotator"),
)

skips = sa.Table(
    "skips", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("run", sa.String(255), nullable=False),
    sa.Column("test", sa.Integer, nullable=False),
    sa.Column("annotator_id", sa.Integer, sa.ForeignKey("annotators.id"), nullable=False),
    sa.Column("skipped_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("run", "test", "annotator_id", name="one_skip_per_test_and_annotator"),
)

# A tag on a target of a run (the Dataset page's tags): `target` is its margins column (train:i is i, test:j is
# n_train + j); who tagged it first is kept, and tagging it again changes nothing.
tags = sa.Table(
    "tags", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("run", sa.String(255), nullable=False),
    sa.Column("target", sa.Integer, nullable=False),
    sa.Column("tag", sa.String(63), nullable=False),
    sa.Column("annotator_id", sa.Integer, sa.ForeignKey("annotators.id"), nullable=False),
    sa.Column("tagged_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("run", "target", "tag", name="one_tag_per_target"),
)

VOTE_KEY = ("run", "test", "train", "annotator_id")
# Bound parameters per statement when a tag's targets go in an IN list (SQLite allows 32,766; old builds 999).
IN_CHUNK = 900


class AnnotationStoreError(RuntimeError):
    """The annotation database is missing, unreachable or refused a write; the message says what to do."""


@dataclass(frozen=True)
class Vote:
    annotator: str
    test: int
    train: int
    is_leak: bool
    voted_at: datetime


def database_url(environ: Mapping[str, str] = os.environ) -> tuple[str, bool]:
    """(URL, configured): DATAMODELS_DATABASE_URL, else the SQLite file annotations.db in the data directory."""
    configured = environ.get(ENV_VAR, "").strip()
    return (configured, True) if configured else (f"sqlite:///{data_dir().resolve() / DB_FILE}", False)




def _now() -> datetime:
    return datetime.now(timezone.utc)


class AnnotationStore:
    """One connection pool to the annotation database; safe to share across Streamlit sessions.

    url : a SQLAlchemy URL, or None for DATAMODELS_DATABASE_URL / the default SQLite file.
    A configured SQLite file must already exist (so a typo in the URL never starts an empty
    database silently); the default file and its folder are created on first use.
    """

    def __init__(self, url: str | None = None):
        configured = url is not None
        if url is None:
            url, configured = database_url()
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise AnnotationStoreError(
                f"{ENV_VAR}={url!r} is not a SQLAlchemy URL: write e.g. sqlite:////abs/path/annotations.db "
                "or postgresql://user@host/db"
            ) from None
        self.url = parsed.render_as_string(hide_password=True)
        self._ids: dict[str, int] = {}
        _refuse_volatile_sqlite(parsed)
        self.file = _sqlite_file(parsed)
        if self.file is not None:
            _check_sqlite_file(self.file, configured)
        try:
            self.engine = _engine(parsed)
        except (NoSuchModuleError, ImportError) as exc:
            raise AnnotationStoreError(
                f"no database driver for {self.url} ({exc}): install the driver package (e.g. psycopg for postgresql)"
            ) from None
        # Connections of this engine begin with the write lock (see _engine); it shares self.engine's pool.
        self._writer = self.engine.execution_options(**{WRITE_LOCK: True})
        with self._guard("create the annotation tables in"):
            metadata.create_all(self._writer)
        self._upsert = _native_upsert(self.engine.dialect.name)

    def _guard(self, doing: str):
        return _Guard(doing, self.url)

    def annotator_id(self, name: str) -> int:
        """The id of annotator `name`, registering it on first use (validated, stored verbatim)."""
        name = validate_name(name)
        with self._guard("register the annotator in"):
            for _ in range(INSERT_RETRIES):
                found = self._find(name)
                if found is not None:
                    return found
                try:
                    with self._writer.begin() as conn:
                        conn.execute(annotators.insert().values(name=name, created_at=_now()))
                except IntegrityError:
                    continue  # another process registered the same name in between
        raise AnnotationStoreError(f"could not register annotator {name!r} in {self.url}: retry")

    def _find(self, name: str) -> int | None:
        """The id of a registered annotator, else None. Ids never change, so found ones are remembered."""
        if name not in self._ids:
            with self._guard("read the annotators from"), self.engine.connect() as conn:
                found = conn.execute(sa.select(annotators.c.id).where(annotators.c.name == name)).scalar_one_or_none()
            if found is None:
                return None
            self._ids[name] = found
        return self._ids[name]

    def submit(self, run: str, test: int, annotator: str, decisions: Mapping[int, bool]) -> int:
        """Record annotator's votes on test image `test` ({train position: is_leak}) in one transaction.

        Earlier votes on the same pairs are replaced and any skip of `test` is dropped. Returns the
        number of votes written; when this returns, the database has committed all of them.
        """
        annotator_id = self.annotator_id(annotator)
        if not decisions:
            raise ValueError(f"no votes given for test image {test}: pass at least one {{train: is_leak}}")
        now = _now()
        rows = [{"run": run, "test": int(test), "train": int(train), "annotator_id": annotator_id,
                 "is_leak": bool(is_leak), "voted_at": now} for train, is_leak in decisions.items()]
        with self._guard("save the votes to"):
            for _ in range(INSERT_RETRIES):
                try:
                    with self._writer.begin() as conn:
                        self._upsert_votes(conn, rows)
                        conn.execute(skips.delete().where(skips.c.run == run, skips.c.test == int(test),
                                                          skips.c.annotator_id == annotator_id))
                    return len(rows)
                except IntegrityError as exc:
                    refused = exc
        raise AnnotationStoreError(f"the annotation database {self.url} refused the votes ({refused.orig}): nothing was saved; retry")

    def _upsert_votes(self, conn: sa.Connection, rows: list[dict]) -> None:
        if self._upsert is not None:
            conn.execute(self._upsert, rows)
        else:
            _update_or_insert_votes(conn, rows)

    def skip(self, run: str, test: int, annotator: str) -> None:
        """Mark `test` skipped by annotator (it leaves their queue; undo brings it back)."""
        annotator_id = self.annotator_id(annotator)
        key = {"run": run, "test": int(test), "annotator_id": annotator_id}
        with self._guard("save the skip to"), self._writer.begin() as conn:
            done = conn.execute(skips.update().where(*_match(skips, key)).values(skipped_at=_now())).rowcount
            if not done:
                conn.execute(skips.insert().values(**key, skipped_at=_now()))

    def undo_last(self, run: str, annotator: str) -> tuple[int, dict[int, bool]] | None:
        """Return annotator's most recently submitted or skipped test image to their queue.

        Deletes their votes on it and its skip in one transaction; returns (test position, the deleted
        votes {train: is_leak}) so a reviewer can correct them, or None when there is nothing to undo.
        """
        annotator_id = self._find(validate_name(annotator))
        last_vote = (sa.select(votes.c.test, votes.c.voted_at.label("at"))
                     .where(votes.c.run == run, votes.c.annotator_id == annotator_id))
        last_skip = (sa.select(skips.c.test, skips.c.skipped_at.label("at"))
                     .where(skips.c.run == run, skips.c.annotator_id == annotator_id))
        actions = sa.union_all(last_vote, last_skip).subquery()
        latest = sa.select(actions.c.test).order_by(actions.c.at.desc()).limit(1)
        with self._guard("undo the last review in"), self._writer.begin() as conn:
            test = conn.execute(latest).scalar_one_or_none()
            if test is None:
                return None
            key = {"run": run, "test": test, "annotator_id": annotator_id}
            removed = {int(t): bool(leak) for t, leak in
                       conn.execute(sa.select(votes.c.train, votes.c.is_leak).where(*_match(votes, key)))}
            conn.execute(votes.delete().where(*_match(votes, key)))
            conn.execute(skips.delete().where(*_match(skips, key)))
        return int(test), removed

    def reviewed(self, run: str, annotator: str) -> set[int]:
        """Test positions annotator has reviewed in `run`: submitted votes on (the one definition of reviewed,
        as the Leakage results page counts it; a skip is not a review)."""
        return self._tests(votes, run, annotator)

    def skipped(self, run: str, annotator: str) -> set[int]:
        """Test positions annotator has skipped in `run` (out of their queue until undone, not reviewed)."""
        return self._tests(skips, run, annotator)

    def _tests(self, table: sa.Table, run: str, annotator: str) -> set[int]:
        annotator_id = self._find(validate_name(annotator))
        query = sa.select(table.c.test).distinct().where(table.c.run == run, table.c.annotator_id == annotator_id)
        with self._guard("read the reviews from"), self.engine.connect() as conn:
            return {int(t) for t in conn.execute(query).scalars()}

    def votes(self, run: str) -> list[Vote]:
        """Every vote of every annotator on `run`, ordered by test, train, annotator."""
        query = (sa.select(annotators.c.name, votes.c.test, votes.c.train, votes.c.is_leak, votes.c.voted_at)
                 .join(annotators, annotators.c.id == votes.c.annotator_id)
                 .where(votes.c.run == run)
                 .order_by(votes.c.test, votes.c.train, annotators.c.name))
        with self._guard("read the votes from"), self.engine.connect() as conn:
            return [Vote(name, int(test), int(train), bool(leak), at) for name, test, train, leak, at in conn.execute(query)]

    def skip_counts(self, run: str) -> dict[str, int]:
        """{annotator name: test images skipped} in `run`."""
        query = (sa.select(annotators.c.name, sa.func.count())
                 .join(annotators, annotators.c.id == skips.c.annotator_id)
                 .where(skips.c.run == run).group_by(annotators.c.name))
        with self._guard("read the skips from"), self.engine.connect() as conn:
            return {name: int(n) for name, n in conn.execute(query)}

    def add_tag(self, run: str, tag: str, targets, annotator: str) -> int:
        """Tag targets (margins columns) of `run` with `tag` in one transaction; returns how many were not tagged
        with it before (the others keep their first tagger)."""
        annotator_id, tag = self.annotator_id(annotator), validate_tag(tag)
        targets = sorted({int(t) for t in targets})
        now = _now()
        with self._guard("save the tag to"):
            for _ in range(INSERT_RETRIES):
                try:
                    with self._writer.begin() as conn:
                        have = self._tagged(conn, run, tag, targets)
                        rows = [{"run": run, "target": t, "tag": tag, "annotator_id": annotator_id, "tagged_at": now}
                                for t in targets if t not in have]
                        if rows:
                            conn.execute(tags.insert(), rows)
                    return len(rows)
                except IntegrityError as exc:  # another writer tagged some of them in between (PostgreSQL)
                    refused = exc
        raise AnnotationStoreError(f"the annotation database {self.url} refused the tag ({refused.orig}): nothing was saved; retry")

    def remove_tag(self, run: str, tag: str, targets, annotator: str) -> int:
        """Take `tag` off targets of `run` (whoever tagged them; the caller checks the role); returns how many had it."""
        self.annotator_id(annotator)
        tag, targets = validate_tag(tag), sorted({int(t) for t in targets})
        removed = 0
        with self._guard("remove the tag from"), self._writer.begin() as conn:
            for i in range(0, len(targets), IN_CHUNK):
                removed += conn.execute(tags.delete().where(tags.c.run == run, tags.c.tag == tag,
                                                            tags.c.target.in_(targets[i:i + IN_CHUNK]))).rowcount
        return removed

    def _tagged(self, conn: sa.Connection, run: str, tag: str, targets: list[int]) -> set[int]:
        found: set[int] = set()
        for i in range(0, len(targets), IN_CHUNK):
            found.update(conn.execute(sa.select(tags.c.target).where(
                tags.c.run == run, tags.c.tag == tag, tags.c.target.in_(targets[i:i + IN_CHUNK]))).scalars())
        return found

    def tags(self, run: str) -> dict[str, list[int]]:
        """{tag: its targets of `run` (margins columns, ascending)}, tags by name."""
        query = sa.select(tags.c.tag, tags.c.target).where(tags.c.run == run).order_by(tags.c.tag, tags.c.target)
        found: dict[str, list[int]] = {}
        with self._guard("read the tags from"), self.engine.connect() as conn:
            for tag, target in conn.execute(query):
                found.setdefault(tag, []).append(int(target))
        return found

    def dispose(self) -> None:
        self.engine.dispose()


@functools.lru_cache(maxsize=8)
def _shared(url: str | None, data_directory: str) -> AnnotationStore:
    # data_directory is only part of the cache key: the default URL (url=None) depends on it.
    return AnnotationStore(url)


def shared_store() -> AnnotationStore:
    """The process's store for the configured database (one connection pool, shared by every dashboard session).

    Keyed by DATAMODELS_DATABASE_URL and the data directory, so changing either opens the new database;
    a failure is not remembered, so the next call retries. A SQLite file deleted under a running app
    is an error here, not a pool writing into the deleted file.
    """
    key = (os.environ.get(ENV_VAR, "").strip() or None, str(data_dir()))
    store = _shared(*key)
    if store.file is not None and not store.file.is_file():
        _shared.cache_clear()
        store.dispose()
        restart = "reload to start a new one" if key[0] is None else f"`touch {store.file}` and reload to start a new one"
        raise AnnotationStoreError(f"annotation database {store.file} was deleted while the app was running: "
                                   f"restore it from a backup, or {restart}")
    return store


def _match(table: sa.Table, key: dict) -> list:
    return [table.c[name] == value for name, value in key.items()]


def _native_upsert(dialect: str) -> sa.Insert | None:
    """INSERT ... ON CONFLICT (key) DO UPDATE where the dialect has it, built once (building it is slow)."""
    if dialect not in ("sqlite", "postgresql"):
        return None
    insert = (sqlite.insert if dialect == "sqlite" else postgresql.insert)(votes)
    return insert.on_conflict_do_update(index_elements=list(VOTE_KEY),
                                        set_={"is_leak": insert.excluded.is_leak, "voted_at": insert.excluded.voted_at})


def _update_or_insert_votes(conn: sa.Connection, rows: list[dict]) -> None:
    """Portable upsert for dialects without ON CONFLICT: update the key, insert where nothing matched.

    Two writers inserting the same new key make one of them fail with IntegrityError; the caller
    retries the whole transaction, and the retry then updates.
    """
    for row in rows:
        key = {name: row[name] for name in VOTE_KEY}
        updated = conn.execute(votes.update().where(*_match(votes, key))
                               .values(is_leak=row["is_leak"], voted_at=row["voted_at"])).rowcount
        if not updated:
            conn.execute(votes.insert().values(**row))


def _sqlite_file(url: URL) -> Path | None:
    """The file of a SQLite URL (refused in-memory and URI forms aside); None for other databases."""
    return Path(url.database) if url.get_backend_name() == "sqlite" else None


def _refuse_volatile_sqlite(url: URL) -> None:
    """An in-memory SQLite database loses every vote with its connection, and a `file:` URI names its file
    behind SQLite's back (so the must-exist check cannot see it): both are refused, with the fix."""
    if url.get_backend_name() != "sqlite":
        return
    database = url.database or ""
    if database in ("", ":memory:") or "mode=memory" in str(url):
        raise AnnotationStoreError(f"{ENV_VAR} names an in-memory SQLite database, which loses every vote: "
                                   "give a file, e.g. sqlite:////abs/path/annotations.db")
    if database.startswith("file:") or url.query.get("uri"):
        raise AnnotationStoreError(f"{ENV_VAR} is a SQLite file: URI: give the plain path instead, "
                                   "e.g. sqlite:////abs/path/annotations.db")


def _check_sqlite_file(path: Path, configured: bool) -> None:
    if configured and not path.is_file():
        raise AnnotationStoreError(
            f"annotation database {path} does not exist: check {ENV_VAR}, or create an empty one with `touch {path}`"
        )
    if not configured:
        path.parent.mkdir(parents=True, exist_ok=True)


def _engine(url: URL) -> Engine:
    if url.get_backend_name() != "sqlite":
        return sa.create_engine(url, pool_pre_ping=True)
    engine = sa.create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection, _record):
        # SQLAlchemy, not the sqlite3 module, decides when transactions begin (see _begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # WAL lets the results page read while annotators write; the busy timeout makes writers queue.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
        # SQLite's recommended WAL setting: a commit survives any crash of the app; only an OS crash
        # or power loss may roll back the last commits (never corrupting the file). FULL would fsync
        # every vote, 10-20 ms each on ordinary disks.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        # Writers take the write lock up front: a deferred transaction that reads and then writes can fail
        # with "database is locked" at once instead of waiting for the busy timeout. Readers need no lock.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE_LOCK) else "BEGIN")

    return engine


class _Guard:
    """Turn driver errors into one AnnotationStoreError that names the database and the fix."""

    def __init__(self, doing: str, url: str):
        self.doing, self.url = doing, url

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if isinstance(exc, IntegrityError) or not isinstance(exc, DBAPIError):
            return False
        detail = str(exc.orig).splitlines()[0] if exc.orig is not None else type(exc).__name__
        raise AnnotationStoreError(
            f"could not {self.doing} the annotation database {self.url} ({detail}): "
            f"check that it is reachable and writable, or set {ENV_VAR}"
        ) from exc
