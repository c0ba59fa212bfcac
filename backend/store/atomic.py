"""Atomic writes, the project's one way to write a file: every file appears by one rename, whole or not at all.

A stage whose outputs belong together (merge, fit, eval, analyze, a retrain) writes them inside
`transaction(run, stage)`: each file goes to a temp beside its final path, and on success a journal listing
the renames (and the files the stage drops) is written last and then carried out, so a kill leaves either the
old files or, once the journal exists, the new ones (the next open of the run finishes the renames). Temp files
carry their writer's pid; any stage, and any open of the run, removes the temps of writers that are gone.
Outside a run (a dataset file) `atomic_path` alone gives the same all-or-nothing rename.
"""
from __future__ import annotations

import contextvars
import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from backend.store.errors import RunError


@dataclass
class _Transaction:
    run_dir: Path
    stage: str
    pending: dict[Path, Path] = field(default_factory=dict)  # final path -> its finished temp
    adopted: set[Path] = field(default_factory=set)  # pending files a failed commit must keep (staged blocks)
    deleted: set[Path] = field(default_factory=set)  # final paths the commit removes


_ACTIVE: contextvars.ContextVar[_Transaction | None] = contextvars.ContextVar("run_transaction", default=None)
_JOURNAL = ".transaction-{stage}.json"


def _transaction_for(path: Path) -> _Transaction | None:
    tx = _ACTIVE.get()
    if tx is not None and Path(os.path.abspath(path)).is_relative_to(tx.run_dir):
        return tx
    return None


def current_path(path: Path) -> Path:
    """Where `path` is to be read now: the finished temp of a write pending in this transaction, else itself."""
    tx = _transaction_for(path)
    return tx.pending.get(Path(os.path.abspath(path)), path) if tx else path


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


def _process_umask() -> int:
    mask = os.umask(0o022)  # reading the umask sets it: put it straight back (once, at import)
    os.umask(mask)
    return mask


_UMASK = _process_umask()
# mkstemp makes its file 0600 and a rename keeps the mode: every temp is given what open() would have made
# (0644 under the usual umask 022), so teammates on a shared file system can read a run.
_FILE_MODE = 0o666 & ~_UMASK
# The same for a folder built under a temporary name and renamed into place (mkdtemp makes it 0700): what
# mkdir would have made, 0755 under umask 022.
DIR_MODE = 0o777 & ~_UMASK


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it replaces `path` in one rename, on failure it vanishes.

    Inside a transaction over the run that holds `path` the rename waits for the transaction's commit.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)
    finally:
        os.close(fd)
    tx = _transaction_for(path)
    try:
        yield Path(tmp)
        if tx is None:
            os.replace(tmp, path)
        else:
            key = Path(os.path.abspath(path))
            if key in tx.pending:
                os.unlink(tx.pending[key])
            tx.pending[key] = Path(tmp)
            tx.deleted.discard(key)
    finally:
        if os.path.exists(tmp) and (tx is None or Path(tmp) not in tx.pending.values()):
            os.unlink(tmp)


def adopt(path: Path, finished: Path) -> None:
    """Make the finished file `finished` (inside the run) the new `path` when the open transaction commits.

    For outputs built in place over many blocks (backend.store.blocks): nothing is copied, and an aborted
    transaction leaves `finished` where it is, so the blocks it holds are not lost.
    """
    tx = _transaction_for(path)
    if tx is None:
        raise RuntimeError(f"adopting {finished} as {path} needs an open transaction over its run")
    key = Path(os.path.abspath(path))
    if key in tx.pending and tx.pending[key] not in tx.adopted:
        os.unlink(tx.pending[key])
    tx.pending[key] = Path(os.path.abspath(finished))
    tx.adopted.add(tx.pending[key])
    tx.deleted.discard(key)


def delete(path: Path) -> None:
    """Remove a run file; inside a transaction over its run the removal is part of the commit (a stage that
    no longer writes an output drops the old one together with writing the others)."""
    path = Path(path)
    tx = _transaction_for(path)
    if tx is None:
        path.unlink(missing_ok=True)
        return
    key = Path(os.path.abspath(path))
    if key in tx.pending:
        if tx.pending[key] not in tx.adopted:
            tx.pending[key].unlink(missing_ok=True)
        del tx.pending[key]
    tx.deleted.add(key)


@contextmanager
def transaction(run_dir: str | Path, stage: str) -> Iterator[None]:
    """Make every write to the run inside the block visible together, or not at all.

    Reads inside the block see the block's own pending writes (read_array, read_json, Run.has). A
    nested transaction over the same run joins the outer one. Commit: the journal of renames is written
    atomically, then the renames are done, then the journal goes; `recover` finishes a commit a kill cut.
    """
    run_dir = Path(os.path.abspath(run_dir))
    outer = _ACTIVE.get()
    if outer is not None and outer.run_dir == run_dir:
        yield
        return
    recover(run_dir)
    tx = _Transaction(run_dir, stage)
    token = _ACTIVE.set(tx)
    try:
        yield
    except BaseException:
        for tmp in tx.pending.values():
            if tmp not in tx.adopted:
                Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        _ACTIVE.reset(token)
    if not tx.pending and not tx.deleted:
        return
    journal = run_dir / _JOURNAL.format(stage=stage)
    renames = [[str(tmp.relative_to(run_dir)), str(final.relative_to(run_dir))] for final, tmp in tx.pending.items()]
    deletes = sorted(str(final.relative_to(run_dir)) for final in tx.deleted)
    try:
        save_json(journal, {"stage": stage, "pid": os.getpid(), "renames": renames, "deletes": deletes})
    except BaseException:
        for tmp in tx.pending.values():
            if tmp not in tx.adopted:
                Path(tmp).unlink(missing_ok=True)
        raise
    _apply_journal(run_dir, journal)


def confined(run_dir: Path, path: Path, source: Path | None = None) -> Path:
    """`path` if it lies inside the run once every symbolic link is followed, else a RunError naming it
    (or `source`, the run file that named it): no read or write of a run ever reaches outside it."""
    root, resolved = Path(run_dir).resolve(), Path(path).resolve()
    if resolved != root and not resolved.is_relative_to(root):
        named = f"{source} names {path}, which" if source is not None else f"{path}"
        raise RunError(f"{named} resolves to {resolved}, outside the run {run_dir}: a run's files stay inside it; "
                       "replace the link with a copy of the file")
    return Path(path)


def name_inside(run_dir: Path, name: object, source: Path) -> Path:
    """run_dir / name for a name read from the run file `source` (a journal entry): a relative path without
    `..` whose folder resolves inside the run. The last component is not followed: a rename or delete acts on
    a link itself, never on what it points at."""
    if not isinstance(name, str) or not name or "\0" in name:
        raise RunError(f"{source} names {name!r}, which is not a file name: it was not written by this code; "
                       "delete it")
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts or relative.name in ("", "."):
        raise RunError(f"{source} names {name!r}, a path outside the run: it was not written by this code; delete it")
    path = Path(run_dir) / relative
    confined(run_dir, path.parent, source)
    return path


def _apply_journal(run_dir: Path, journal: Path) -> None:
    """Carry out a journal's renames and deletes, every path checked to lie in the run before any is touched."""
    record = json.loads(journal.read_text())
    renames, deletes = record.get("renames"), record.get("deletes", [])  # journals before deletions have none
    if not isinstance(renames, list) or not isinstance(deletes, list) or \
            not all(isinstance(pair, list) and len(pair) == 2 for pair in renames):
        raise RunError(f"{journal} is not a journal of renames and deletes: it was not written by this code; delete it")
    moves = [(name_inside(run_dir, tmp, journal), name_inside(run_dir, final, journal)) for tmp, final in renames]
    drops = [name_inside(run_dir, final, journal) for final in deletes]
    for tmp, final in moves:
        if tmp.exists():
            os.replace(tmp, final)
    for final in drops:
        final.unlink(missing_ok=True)
    journal.unlink()


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover(run_dir: str | Path, clean_temps: bool = True) -> None:
    """Finish the commits a kill interrupted, then (with clean_temps) remove the temps of writers that are gone.

    A run on a read-only file system with such leftovers is a RunError (nothing can be finished there).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return
    try:
        for journal in sorted(run_dir.glob(_JOURNAL.format(stage="*"))):
            try:
                owner = json.loads(journal.read_text())["pid"]
                if isinstance(owner, bool) or not isinstance(owner, int) or not 0 < owner < 1 << 31:
                    raise TypeError("not a process id")
            except (ValueError, KeyError, TypeError, OSError, RecursionError):
                journal.unlink()  # a journal is written atomically: an unreadable one is not ours to follow
                continue
            if not _alive(owner):
                _apply_journal(run_dir, journal)
        for tmp in leftover_temps(run_dir) if clean_temps else ():
            tmp.unlink(missing_ok=True)
    except OSError as exc:
        raise RunError(f"{run_dir} holds an interrupted write that cannot be finished ({exc.strerror or exc}): "
                       "rerun the stage where the run is writable") from None


def leftover_temps(run_dir: str | Path) -> list[Path]:
    """Temp files in the run (any depth) whose writing process is no longer running."""
    found = []
    for tmp in Path(run_dir).rglob(".*.tmp"):
        parts = tmp.name.rsplit(".", 3)  # .NAME.PID.RANDOM.tmp
        if len(parts) == 4 and parts[1].isdigit() and not _alive(int(parts[1])):
            found.append(tmp)
        elif len(parts) == 4 and not parts[1].isdigit():
            found.append(tmp)  # a temp of an older version, without a pid
    return sorted(found)


class _Writes:
    """A file that np.save sees only through its write(): numpy then writes chunks with write(), whose full
    disk is an OSError with ENOSPC, instead of ndarray.tofile, whose short write is an OSError without errno
    ("115008 requested and 49024 written", found on a full tmpfs)."""

    def __init__(self, f):
        self.write = f.write


def save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(_Writes(f), np.ascontiguousarray(array), allow_pickle=False)


def save_json(path: Path, obj: dict) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")
