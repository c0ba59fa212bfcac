"""The run directory: the one store every stage reads and writes.

Files (all plain .npy/.json; read any of them with np.load(mmap_mode="r") without this code):
  manifest.json  what the run is and how to reproduce it
  masks.npy      bool    (M, n_train)           which training examples model m saw
  margins.npy    float32 or float16 (M, n_train + n_test)  correct-class margin of model m on each target
  labels.npy     int64   (n_train + n_test,)    target labels, training targets first
  images.npy     uint8   (n_train + n_test, H, W, C)
  shards/        models [a, b) as they finish; appended to masks.npy/margins.npy, then deleted
backend.store.schema lists every file of a run; every read here checks a file against its entry, and a
missing or broken one is a RunError naming the file and the command that rebuilds it.

Every file appears by atomic rename, so a run killed at any moment is never half-written. A stage whose
outputs belong together (merge, fit, eval, analyze, a retrain) writes them inside `transaction(run, stage)`:
each file goes to a temp beside its final path, and on success a journal listing the renames (and the
files the stage drops) is written last and then carried out, so a kill leaves either the old files or, once the journal exists, the new ones
(the next open of the run finishes the renames). The one exception is masks.npy/margins.npy, which a merge
grows in place (append_merge): readers only ever see the rows their header's shape covers. Temp files carry their writer's pid; any stage, and any
open of the run, removes the temps of writers that are gone.
"""
from __future__ import annotations

import contextvars
import fcntl
import io
import json
import os
import signal
import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from backend.store import external
from backend.store.schema import EXTERNAL, IMAGES, LABELS, MANIFEST, MARGINS, MASKS, SHARD, Artifact, Count

FORMAT_VERSION = 1

# What numpy and json raise on a file that is not what its name says: truncated, garbage, a foreign format.
# RecursionError: JSON nested deeper than the parser's stack.
_UNREADABLE = (ValueError, OSError, EOFError, SyntaxError, UnicodeDecodeError, zipfile.BadZipFile, RecursionError)


class RunError(ValueError):
    """A run directory that is missing, foreign, corrupt or incompatible with the request."""


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


# mkstemp makes its file 0600 and a rename keeps the mode: every temp is given what open() would have made
# (0644 under the usual umask 022), so teammates on a shared file system can read a run.
_FILE_MODE = 0o666 & ~_process_umask()


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


def broken(run_dir: Path, artifact: Artifact, path: Path, problem: str) -> RunError:
    """The one error of a missing or broken artifact: the file, what is wrong, and the command that rebuilds it."""
    remedy = "rebuild it with" if problem == "is missing" else artifact.remedy
    return RunError(f"{path} {problem}: {remedy} `{artifact.command(run_dir)}`")


def _existing(run_dir: Path, artifact: Artifact, fields: dict) -> Path:
    path = current_path(artifact.path(run_dir, **fields))
    if not path.is_file():
        raise broken(run_dir, artifact, path, "is missing")
    confined(run_dir, path)
    if path.stat().st_size == 0:
        raise broken(run_dir, artifact, path, "is empty (0 bytes)")
    return path


def _shape_problem(got_dtype, got_shape: tuple, dtype: str | None, shape: tuple, sizes: dict) -> str | None:
    """Why an array does not match its entry (dtype, shape in symbols resolved by `sizes`), or None."""
    allowed = dtype if isinstance(dtype, tuple) else (dtype,)
    if dtype is not None and not any(got_dtype == np.dtype(d) for d in allowed):
        return f"has dtype {got_dtype}, expected {' or '.join(allowed)}"
    want = tuple(sizes.get(d) if isinstance(d, str) else d for d in shape)
    if len(got_shape) != len(want) or any(w is not None and g != w for g, w in zip(got_shape, want)):
        shown = tuple(f"{d}={sizes[d]}" if isinstance(d, str) and d in sizes else d for d in shape)
        return f"has shape {got_shape}, expected {shown}"
    return None


def read_array(run_dir: Path, artifact: Artifact, sizes: dict | None = None, mmap: bool = True, **fields) -> np.ndarray:
    """An npy artifact, memory-mapped, never unpickled, checked against its entry's dtype and shape.

    sizes : values of the entry's size symbols (n_train, k, ...); symbols not given are free.
    """
    path = _existing(run_dir, artifact, fields)
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except _UNREADABLE as exc:
        raise broken(run_dir, artifact, path, f"is corrupt or truncated ({exc})") from None
    if not isinstance(array, np.ndarray):
        array.close()
        raise broken(run_dir, artifact, path, "is corrupt (an .npz archive, not one array)")
    problem = _shape_problem(array.dtype, array.shape, artifact.dtype, artifact.shape, sizes or {}) or \
        _value_problem(array, artifact, sizes or {})
    if problem:
        raise broken(run_dir, artifact, path, f"{problem}: it is stale or corrupt")
    return array


def _value_problem(array, artifact: Artifact, sizes: dict) -> str | None:
    """Why an array's values break its entry's constraints (indices under `below`, `finite`), or None.

    One pass over the array: the constrained entries are index, label and component arrays of a few MB.
    A `below` whose size the reader did not give is not checked.
    """
    if artifact.below is not None and artifact.below in sizes and array.size:
        bound, values = sizes[artifact.below], np.asarray(array)
        lo, hi = values.min(), values.max()
        if lo < artifact.lowest or hi >= bound:
            bad = lo if lo < artifact.lowest else hi
            where = np.unravel_index(int(np.argmax(values == bad)), values.shape)
            return (f"holds {int(bad)} at {tuple(int(i) for i in where)}, outside {artifact.lowest}..{bound - 1} "
                    f"({artifact.below} = {bound})")
    if artifact.finite and array.size and not np.isfinite(np.asarray(array)).all():
        return "holds NaN or infinite values"
    return None


def read_json(run_dir: Path, artifact: Artifact, missing_ok: bool = False, **fields) -> dict | None:
    """A JSON artifact as a dict (None if absent and missing_ok); anything but a JSON object is a RunError."""
    if missing_ok and not current_path(artifact.path(run_dir, **fields)).exists():
        return None
    path = _existing(run_dir, artifact, fields)
    try:
        obj = json.loads(path.read_bytes().decode("utf-8"))
    except _UNREADABLE as exc:
        raise broken(run_dir, artifact, path, f"is corrupt ({exc})") from None
    if not isinstance(obj, dict):
        raise broken(run_dir, artifact, path, f"is corrupt (a JSON {type(obj).__name__}, not an object)")
    problem = _json_problem(obj, artifact.keys or {}, "")
    if problem:
        raise broken(run_dir, artifact, path, f"is corrupt ({problem})")
    return obj


def _json_problem(value, spec, where: str) -> str | None:
    """Why a JSON value does not match its schema spec (schema.Artifact.keys), or None; `where` is its key path.

    spec: a type or tuple of types; {key: spec} an object holding those keys ("*": every value); [spec] a list
    whose every item matches spec.
    """
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            return f"{where!r} is a JSON {type(value).__name__}"
        for key, inner in spec.items():
            keys = list(value) if key == "*" else [key]
            for k in keys:
                if k not in value:
                    return f"no {_join(where, k)!r} entry"
                problem = _json_problem(value[k], inner, _join(where, k))
                if problem:
                    return problem
        return None
    if isinstance(spec, list):
        if not isinstance(value, list):
            return f"{where!r} is a JSON {type(value).__name__}"
        return next((p for i, item in enumerate(value) if (p := _json_problem(item, spec[0], f"{where}[{i}]"))), None)
    if isinstance(spec, Count):
        if type(value) is not int or value < spec.minimum:
            return f"{where!r} is {_short(value)}, not an integer of at least {spec.minimum}"
        return None
    types = spec if isinstance(spec, tuple) else (spec,)
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        return f"{where!r} is a JSON {type(value).__name__}"
    return None


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def read_npz(run_dir: Path, artifact: Artifact, sizes: dict | None = None, **fields) -> dict[str, np.ndarray]:
    """Every member of an npz artifact, loaded, each checked against the entry's members (dtype, shape)."""
    path = _existing(run_dir, artifact, fields)
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("one array, not an .npz archive")
        with archive:
            lacking = sorted(set(artifact.members) - set(archive.files) - set(artifact.optional))
            if lacking:
                raise ValueError(f"no {', '.join(lacking)}")
            members = {key: archive[key] if key in archive.files else None for key in artifact.members}
    except _UNREADABLE as exc:
        raise broken(run_dir, artifact, path, f"is corrupt or truncated ({exc})") from None
    for key, (dtype, shape) in artifact.members.items():
        if members[key] is None:
            continue
        problem = _shape_problem(members[key].dtype, members[key].shape, dtype, shape, sizes or {})
        if problem:
            raise broken(run_dir, artifact, path, f"member {key} {problem}")
    return members


def _writable(run_dir: Path, artifact: Artifact, **fields) -> Path:
    """The artifact's path, its folder checked to lie inside the run before any folder is made for it (a
    linked subfolder must not get folders made outside the run before the refusal)."""
    path = artifact.path(run_dir, **fields)
    confined(run_dir, path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_array(run_dir: Path, artifact: Artifact, array: np.ndarray, **fields) -> None:
    """Write an npy artifact atomically; an array that is not its entry's dtype and rank is a bug, refused."""
    array = np.asarray(array)
    problem = _shape_problem(array.dtype, array.shape, artifact.dtype, artifact.shape, {})
    if problem:
        raise ValueError(f"refusing to write {artifact.name}: it {problem}")
    save_npy(_writable(run_dir, artifact, **fields), array)


def write_npz(run_dir: Path, artifact: Artifact, **members: np.ndarray) -> None:
    """Write an npz artifact atomically; members not its entry's (dtype, rank) are a bug, refused."""
    for key, (dtype, shape) in artifact.members.items():
        problem = _shape_problem(np.asarray(members[key]).dtype, np.shape(members[key]), dtype, shape, {})
        if problem:
            raise ValueError(f"refusing to write {artifact.name}: member {key} {problem}")
    path = artifact.path(run_dir)
    confined(run_dir, path.parent)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **members)


def write_json(run_dir: Path, artifact: Artifact, obj: dict, **fields) -> None:
    save_json(_writable(run_dir, artifact, **fields), obj)


_HPARAMS = {"epochs": Count(1), "batch_size": Count(1), "hidden": Count(1)}


def read_manifest(run_dir: Path) -> dict:
    if not current_path(MANIFEST.path(run_dir)).exists():
        raise RunError(f"{run_dir} is not a run (no {MANIFEST.name}): create one with `python -m precompute train --out {run_dir}`")
    manifest = read_json(Path(run_dir), MANIFEST)
    for key, spec in _HPARAMS.items():  # those a retraining takes from the manifest, where the run has them
        problem = _json_problem(manifest["hparams"][key], spec, f"hparams.{key}") if key in manifest["hparams"] else None
        if problem:
            raise broken(Path(run_dir), MANIFEST, MANIFEST.path(run_dir), f"is corrupt ({problem})")
    classes = manifest["dataset"]["class_names"]
    if len(classes) < 2:  # one class has no wrong class: every margin (eq. 2) would be +inf
        raise broken(Path(run_dir), MANIFEST, MANIFEST.path(run_dir),
                     f"is corrupt (its dataset lists {len(classes)} class name{'s' if len(classes) != 1 else ''}; "
                     "a run needs at least two classes)")
    return manifest


# Settings that define which models a run holds; a resume must match them exactly.
IDENTITY_KEYS = ("dataset", "alpha", "seed", "arch", "hparams")


def init_run(run_dir: Path, manifest: dict, labels: np.ndarray, images: np.ndarray) -> dict:
    """Create a run, or reopen an existing one after checking it holds the same kind of models.

    Returns the manifest on disk. An existing non-empty directory that is not a run is refused, so a
    typo in --out never mixes our files into someone else's folder.
    """
    run_dir = Path(run_dir)
    if EXTERNAL.path(run_dir).exists():  # its masks and margins are a release's files, read in place
        raise RunError(f"{run_dir} is an imported run: its models are the release's and cannot be topped up; "
                       "train into a new --out")
    if MANIFEST.path(run_dir).exists():
        existing = read_manifest(run_dir)
        for key in IDENTITY_KEYS:
            if existing.get(key) != manifest.get(key):
                raise RunError(
                    f"{run_dir} already holds a run with a different {key} "
                    f"({_short(existing.get(key))} vs {_short(manifest.get(key))}): choose another --out or match its settings"
                )
        return existing
    if run_dir.exists() and not _interrupted_creation(run_dir):
        raise RunError(f"{run_dir} exists, is not empty and is not a run: choose a new or empty --out directory")
    run_dir.mkdir(parents=True, exist_ok=True)
    recover(run_dir)
    SHARD.folder(run_dir).mkdir(exist_ok=True)
    write_array(run_dir, LABELS, labels.astype(np.int64))
    write_array(run_dir, IMAGES, images.astype(np.uint8))
    manifest = dict(manifest, format_version=FORMAT_VERSION, n_models=0)
    write_json(run_dir, MANIFEST, manifest)
    return manifest


def _interrupted_creation(run_dir: Path) -> bool:
    """True for an empty directory, or one holding only what init_run writes before the manifest (which
    it writes last): a creation that a kill or a full disk cut short, safe to redo."""
    own = {LABELS.name, IMAGES.name}
    for entry in run_dir.iterdir():
        if entry.name == SHARD.folder(run_dir).name and entry.is_dir():
            if any(not p.name.endswith(".tmp") for p in entry.iterdir()):
                return False
        elif entry.name not in own and not (entry.name.startswith(".") and entry.name.endswith(".tmp")):
            return False
    return True


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def update_manifest(run_dir: Path, **changes) -> dict:
    manifest = dict(read_manifest(run_dir), **changes)
    write_json(Path(run_dir), MANIFEST, manifest)
    return manifest


def shard_ranges(run_dir: Path) -> list[tuple[int, int]]:
    """The [start, end) model ranges of the finished shards, sorted."""
    found = (SHARD.fields_of(path, run_dir) for path in SHARD.glob(run_dir))
    return sorted((int(f["start"]), int(f["end"])) for f in found)


def write_shard(run_dir: Path, start: int, masks: np.ndarray, margins: np.ndarray, predictions: np.ndarray,
                dtype: str = "float32") -> None:
    """Store models [start, start + K) in one atomic file; a kill leaves either all of them or none.

    predictions : int16 (K, n_targets), each model's predicted class per target
    dtype       : the run's margins dtype (float32, or float16 under `train --dtype float16`)
    """
    end = start + len(masks)
    path = SHARD.path(run_dir, start=start, end=end)
    confined(run_dir, path.parent)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, masks=masks, margins=margins.astype(dtype), predictions=predictions.astype(np.int16))


def read_shard(run_dir: Path, start: int, end: int, sizes: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Models [start, end) of a shard; sizes (n_train, n_targets) are checked where given."""
    shard = read_npz(Path(run_dir), SHARD, dict(sizes or {}, n=end - start), start=start, end=end)
    return shard["masks"], shard["margins"]


def read_shard_predictions(run_dir: Path, start: int, end: int) -> np.ndarray | None:
    """A shard's predicted classes, int16 (end - start, n_targets), or None for a shard older than them."""
    return read_npz(Path(run_dir), SHARD, {"n": end - start}, start=start, end=end)["predictions"]


def prefix_pieces(run_dir: Path, n: int, lo: int = 0) -> list[tuple[int, int, slice]]:
    """How the shards fill models [lo, n): (start, end, rows of that shard to take), in model order.

    Overlapping shards (two workers given the same range) hold identical models, so the first one wins.
    """
    pieces, filled = [], lo
    for s, e in shard_ranges(run_dir):
        if e <= filled or s > filled or s >= n:
            continue
        pieces.append((s, e, slice(filled - s, min(e, n) - s)))
        filled = min(e, n)
    return pieces


def merged_models(run_dir: Path) -> int:
    """How many models masks.npy/margins.npy hold as of the last committed merge (the manifest's n_models)."""
    if not current_path(MANIFEST.path(run_dir)).exists():
        return 0
    return int(read_manifest(run_dir)["n_models"])


def margins_dtype(manifest: dict) -> str:
    """The dtype a run stores margins in (`train --dtype`); runs made before the option hold float32."""
    return manifest.get("margins_dtype", MARGINS.dtype[0])


def run_precision(manifest: dict) -> str:
    """The arithmetic a run's models trained in, fp32 or bf16 (`train --precision`); runs made before the option: fp32."""
    return manifest.get("precision", "fp32")


def done_models(run_dir: Path) -> np.ndarray:
    """Bool array marking every model index the merged arrays or some shard hold (the completion bitmap).

    The merged arrays are the record of models [0, n_models): their shards are deleted once merged.
    """
    ranges = shard_ranges(run_dir)
    merged = merged_models(run_dir)
    done = np.zeros(max([merged] + [e for _, e in ranges]), dtype=bool)
    done[:merged] = True
    for s, e in ranges:
        done[s:e] = True
    return done


def missing_ranges(run_dir: Path, n_models: int, lo: int = 0) -> list[tuple[int, int]]:
    """Maximal [start, end) ranges within [lo, n_models) that neither the merged arrays nor a shard hold yet."""
    done = np.zeros(n_models, dtype=bool)
    have = done_models(run_dir)[:n_models]
    done[: len(have)] = have
    done[:lo] = True
    ranges, start = [], None
    for i, d in enumerate(done):
        if not d and start is None:
            start = i
        if d and start is not None:
            ranges.append((start, i))
            start = None
    if start is not None:
        ranges.append((start, n_models))
    return ranges


@dataclass
class Merge:
    """What one merge did: models held after it, models and bytes it appended, shards it deleted."""
    n_models: int
    added: int
    bytes_written: int
    run_bytes: int  # size of masks.npy + margins.npy after the merge
    shards_deleted: int


class _Growable:
    """An .npy file that grows along its first axis in place (np.lib.format pads every header so the
    shape can be rewritten without moving the data: GROWTH_AXIS_MAX_DIGITS)."""

    def __init__(self, run_dir: Path, artifact: Artifact, dtype: np.dtype, width: int, committed: int):
        self.path, self.dtype, self.width = artifact.path(run_dir), np.dtype(dtype), width
        if self.path.is_symlink():  # grown in place: a link would send the rows into whatever file it names
            raise RunError(f"{self.path} is a symbolic link (to {os.readlink(self.path)}): a merge appends to the run's "
                           "own file only; replace the link with a copy of the file and rerun")
        if not self.path.exists():
            if committed:
                raise broken(run_dir, artifact, self.path, f"is missing but the manifest records {committed} merged "
                                                           "models (their shards are gone)")
            save_npy(self.path, np.zeros((0, width), dtype=self.dtype))
        # Plain writes through one file object, not a memmap: a full disk is then an OSError, never a SIGBUS.
        self.file = open(self.path, "r+b")
        with open(self.path, "rb") as f:
            try:
                version = np.lib.format.read_magic(f)
                if version != (1, 0):
                    raise ValueError(f".npy format version {version}, not the 1.0 this code grows in place")
                shape, fortran, got = np.lib.format.read_array_header_1_0(f)
            except _UNREADABLE as exc:
                self.file.close()
                raise broken(run_dir, artifact, self.path, f"is corrupt ({exc})") from None
            self.header_len = f.tell()
        problem = (f"has dtype {got}, the run stores {self.dtype}" if got != self.dtype else
                   f"has shape {shape}, expected (M, {width})" if len(shape) != 2 or shape[1] != width or fortran else
                   f"holds {shape[0]} models but the manifest records {committed}" if shape[0] < committed else None)
        if problem:
            self.file.close()
            raise broken(run_dir, artifact, self.path, f"{problem}: it is truncated or corrupt")
        self.row_bytes, self.held = width * self.dtype.itemsize, shape[0]

    def write_rows(self, start: int, rows: np.ndarray) -> int:
        """Write rows [start, start + len(rows)) past the header, read them back and compare; bytes written."""
        data = np.ascontiguousarray(rows, dtype=self.dtype).tobytes()
        offset = self.header_len + start * self.row_bytes
        self.file.seek(offset)
        self.file.write(data)
        self.file.flush()
        if self._read(offset, len(data)) != data:
            raise OSError(f"{self.path}: rows {start}..{start + len(rows)} read back differ from those written")
        return len(data)

    def _read(self, offset: int, size: int) -> bytes:
        self.file.seek(offset)
        return self.file.read(size)

    def rows_equal(self, start: int, rows: np.ndarray) -> bool:
        data = np.ascontiguousarray(rows, dtype=self.dtype).tobytes()
        return self._read(self.header_len + start * self.row_bytes, len(data)) == data

    def commit(self, n: int) -> int:
        """Make the file hold exactly n rows: data synced first, then the header's shape rewritten in place
        (one write inside the first page), then synced; readers that mapped the old shape keep their rows."""
        if n < self.held:  # rows a reader may have mapped, and no record of them elsewhere: never cut them
            raise RunError(f"{self.path} holds {self.held} models but the manifest and the shards account for {n}: "
                           f"set the manifest's n_models to {self.held} and rerun merge")
        end = self.header_len + n * self.row_bytes
        if n == self.held and os.fstat(self.file.fileno()).st_size == end:
            return 0  # nothing appended: the file is as the last merge left it
        if os.fstat(self.file.fileno()).st_size > end:
            self.file.truncate(end)
        os.fsync(self.file.fileno())
        header = io.BytesIO()
        write_npy_header(header, self.dtype, (n, self.width))
        if len(header.getvalue()) != self.header_len:
            raise OSError(f"{self.path}: the header for {n} models does not fit in place; rerun merge after "
                          "rewriting the file with np.save")
        self.file.seek(0)
        self.file.write(header.getvalue())
        self.file.flush()
        os.fsync(self.file.fileno())
        return len(header.getvalue())

    def close(self) -> None:
        self.file.close()


def _kill_point(name: str) -> None:
    """SIGKILL this process at the named point of a merge when DATAMODELS_KILL_AT names it: the kill tests' hook, so a
    real kill lands exactly between two steps (tests/store/test_append_merge.py)."""
    if os.environ.get("DATAMODELS_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


@contextmanager
def merge_lock(run_dir: Path) -> Iterator[None]:
    """One merge at a time per run (--shard workers each merge when they finish), and no manifest update
    in between (`train` takes it too): an flock on the run directory. Not re-entrant."""
    fd = os.open(run_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def append_merge(run_dir: Path, n_train: int, n_targets: int, *, keep_shards: bool = False,
                 on_rows=None, after_merge=None) -> Merge:
    """Append the shards that extend the merged prefix to masks.npy/margins.npy; return what it did.

    Only the new models' rows are written, each shard read once: its rows go past the end of the arrays,
    are read back and compared, synced, and then the headers' shapes are rewritten in place. The manifest's
    n_models and whatever `after_merge(n)` writes then commit as one transaction (the commit point: until
    it, a rerun appends the same rows again). `on_rows(start, masks, margins, predictions or None)` sees
    each block of new rows in model order. Last, every shard the merged arrays hold is deleted, after
    checking its rows equal the merged ones, unless keep_shards; a kill anywhere loses no model.
    """
    run_dir = Path(run_dir)
    with merge_lock(run_dir):
        recover(run_dir)
        base = merged_models(run_dir)
        dtype = np.dtype(margins_dtype(read_manifest(run_dir)))
        if min(_held_rows(MASKS.path(run_dir)), _held_rows(MARGINS.path(run_dir))) < base and _shards_cover(run_dir, base):
            for artifact in (MASKS, MARGINS):  # lost or cut merged arrays whose shards were kept: merge them afresh
                artifact.path(run_dir).unlink(missing_ok=True)
            base = 0
        done = done_models(run_dir)
        n = int(np.argmin(done)) if not done.all() else len(done)
        masks = _Growable(run_dir, MASKS, np.dtype(bool), n_train, base)
        try:
            margins = _Growable(run_dir, MARGINS, dtype, n_targets, base)
        except BaseException:
            masks.close()
            raise
        written, verified = 0, set()
        try:
            # Shards an earlier merge already holds are checked first, so a broken one stops the merge
            # before it writes anything.
            verified = set() if keep_shards else _verify_merged_shards(run_dir, base, masks, margins)
            sizes = {"n_train": n_train, "n_targets": n_targets}
            for s, e, take in prefix_pieces(run_dir, n, lo=base):
                shard = read_npz(run_dir, SHARD, dict(sizes, n=e - s), start=s, end=e)
                if shard["margins"].dtype != dtype:
                    raise broken(run_dir, SHARD, SHARD.path(run_dir, start=s, end=e),
                                 f"holds {shard['margins'].dtype} margins but the run stores {dtype}")
                at = s + take.start
                written += masks.write_rows(at, shard["masks"][take]) + margins.write_rows(at, shard["margins"][take])
                if on_rows is not None:
                    predictions = shard["predictions"]
                    on_rows(at, shard["masks"][take], shard["margins"][take],
                            None if predictions is None else predictions[take])
                if take == slice(0, e - s):
                    verified.add((s, e))
                _kill_point("merge:rows")
            written += masks.commit(n)
            _kill_point("merge:masks-header")
            written += margins.commit(n)
            _kill_point("merge:headers")
            with transaction(run_dir, "merge"):
                update_manifest(run_dir, n_models=n)
                if after_merge is not None:
                    after_merge(n)
            _kill_point("merge:committed")
            deleted = 0 if keep_shards else _delete_merged_shards(run_dir, n, verified)
            run_bytes = masks.path.stat().st_size + margins.path.stat().st_size
        finally:
            masks.close()
            margins.close()
    return Merge(n_models=n, added=n - base, bytes_written=written, run_bytes=run_bytes, shards_deleted=deleted)


def _held_rows(path: Path) -> int:
    """Rows an .npy file's header covers; -1 for a missing or unreadable one."""
    try:
        return len(np.load(path, mmap_mode="r", allow_pickle=False))
    except (*_UNREADABLE, TypeError):
        return -1


def _shards_cover(run_dir: Path, n: int) -> bool:
    return sum(take.stop - take.start for _, _, take in prefix_pieces(run_dir, n)) == n


def _verify_merged_shards(run_dir: Path, n: int, masks: _Growable, margins: _Growable) -> set:
    """The shards within models [0, n) whose rows equal the merged arrays'; one that differs is an error."""
    verified = set()
    for s, e in shard_ranges(run_dir):
        if e <= n:
            shard_masks, shard_margins = read_shard(run_dir, s, e)
            if not (masks.rows_equal(s, shard_masks) and margins.rows_equal(s, shard_margins)):
                raise RunError(f"{SHARD.path(run_dir, start=s, end=e)} differs from models {s}..{e} of the merged "
                               f"arrays: keep it, and check whether the run's files were altered")
            verified.add((s, e))
    return verified


def _delete_merged_shards(run_dir: Path, n: int, verified: set) -> int:
    """Delete the shards within models [0, n) found equal to the merged rows (before this merge, or as it
    wrote them); any other is kept."""
    deleted = 0
    for s, e in shard_ranges(run_dir):
        if e <= n and (s, e) in verified:
            SHARD.path(run_dir, start=s, end=e).unlink()
            deleted += 1
            _kill_point("merge:deleting")
    return deleted


def merge_shards(run_dir: Path, n_train: int, n_targets: int, after_merge=None, *, keep_shards: bool = False,
                 on_rows=None) -> int:
    """Append the finished shards to masks.npy/margins.npy (append_merge); return the models they hold."""
    return append_merge(run_dir, n_train, n_targets, keep_shards=keep_shards, on_rows=on_rows,
                        after_merge=after_merge).n_models


def write_npy_header(f, dtype: np.dtype, shape: tuple) -> None:
    """The .npy header np.save would write for a C-ordered array of this dtype and shape; its data follows."""
    np.lib.format.write_array_header_1_0(
        f, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)})


class Run:
    """Read access to a run directory: every array memory-mapped on first use, shapes checked.

    The dashboard holds one Run per run directory (st.cache_resource) and slices it per query.
    """

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        if not self.dir.is_dir():
            raise RunError(f"run {self.dir} does not exist: create it with `python -m precompute train --out {self.dir}`")
        recover(self.dir, clean_temps=False)
        self.manifest = read_manifest(self.dir)  # its dataset entry's sizes and class names checked by the schema
        dataset = self.manifest["dataset"]
        self.n_train, self.n_test = dataset["n_train"], dataset["n_test"]
        self.class_names = list(dataset["class_names"])
        self._arrays: dict[str, np.ndarray] = {}
        # An imported run's arrays that live in the release (backend.store.external): file name -> parts.
        found = read_json(self.dir, EXTERNAL, missing_ok=True)
        self.external: dict = {} if found is None else found["arrays"]
        self.release = None if found is None else found["release"]

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def n_targets(self) -> int:
        return self.n_train + self.n_test

    @property
    def sizes(self) -> dict[str, int]:
        """The run's sizes that schema shapes are stated in."""
        return {"n_train": self.n_train, "n_test": self.n_test, "n_targets": self.n_targets,
                "n_classes": len(self.class_names)}

    def has(self, artifact: Artifact, **fields) -> bool:
        return artifact.name in self.external or current_path(artifact.path(self.dir, **fields)).exists()

    def stamp(self, artifact: Artifact) -> list:
        """What a resume compares to tell whether an array changed: [size, mtime] of the run's file, or the
        sampled checksums of an external array's parts."""
        if artifact.name in self.external:
            return [p["sha256_sampled"] for p in self.external[artifact.name]["parts"]]
        st = os.stat(artifact.path(self.dir))
        return [st.st_size, st.st_mtime_ns]

    def array(self, artifact: Artifact, **sizes: int) -> np.ndarray:
        """A memory-mapped npy artifact, opened once, checked against its schema entry.

        sizes : values for the entry's free size symbols (M, k, C, D, ...), e.g. run.array(LEAKAGE_QUEUE, k=10).
        """
        if artifact.name not in self._arrays:
            entry = self.external.get(artifact.name)
            self._arrays[artifact.name] = read_array(self.dir, artifact, dict(self.sizes, **sizes)) if entry is None \
                else self._external_array(artifact, entry, dict(self.sizes, **sizes))
        return self._arrays[artifact.name]

    def _external_array(self, artifact: Artifact, entry: dict, sizes: dict):
        """An array external.json places in the release: its parts mapped in place, checked like a run file."""
        try:
            array = external.open_array(entry, self.release, self.dir)
        except external.ExternalError as exc:
            raise RunError(str(exc)) from None
        except _UNREADABLE as exc:
            raise RunError(f"an external part of {self.dir / artifact.name} is unreadable ({exc}): restore the "
                           "release's file, or import the release again") from None
        problem = _shape_problem(array.dtype, array.shape, artifact.dtype, artifact.shape, sizes) or \
            _value_problem(array, artifact, sizes)
        if problem:
            raise broken(self.dir, artifact, EXTERNAL.path(self.dir), f"places a {artifact.name} that {problem}")
        return array

    @property
    def masks(self) -> np.ndarray:
        """bool (M, n_train): the models of the last committed merge."""
        return self._merged(MASKS)

    @property
    def margins(self) -> np.ndarray:
        """float32 or float16 (the manifest's margins_dtype) (M, n_train + n_test)."""
        return self._merged(MARGINS)

    def _merged(self, artifact: Artifact) -> np.ndarray:
        """The first n_models rows: append_merge grows the headers before its manifest commit, so after a
        kill between the two the files hold rows the next merge appends again; the manifest says which count."""
        rows, n = self.array(artifact), int(self.manifest.get("n_models", 0))
        if len(rows) < n:
            raise RunError(f"{artifact.path(self.dir)} holds {len(rows)} models but the manifest records {n}: "
                           f"rerun `python -m precompute merge --run {self.dir}`")
        return rows[:n] if len(rows) > n else rows

    @property
    def labels(self) -> np.ndarray:
        return self.array(LABELS)

    @property
    def images(self) -> np.ndarray:
        """uint8 (n_targets, H, W, C), H, W, C as the manifest's dataset entry records them."""
        images = self.array(IMAGES)
        expected = self.manifest["dataset"].get("image_shape")
        if isinstance(expected, list) and tuple(images.shape[1:]) != tuple(expected):
            raise broken(self.dir, IMAGES, IMAGES.path(self.dir),
                         f"has images of shape {images.shape[1:]}, the manifest says {tuple(expected)}: it is corrupt")
        return images
