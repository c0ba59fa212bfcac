"""One artifact read or written, checked against its schema entry: dtype, shape, value bounds, JSON keys.

Every read is memory-mapped where it can be and never unpickles; a missing or broken file is a RunError
naming the file and the command that rebuilds it (errors.broken). Every write is atomic (backend.store.atomic).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from backend.store.atomic import atomic_path, confined, current_path, save_json, save_npy
from backend.store.errors import UNREADABLE, broken, shown
from backend.store.schema import Artifact, Count


def _existing(run_dir: Path, artifact: Artifact, fields: dict) -> Path:
    path = current_path(artifact.path(run_dir, **fields))
    if not path.is_file():
        raise broken(run_dir, artifact, path, "is missing")
    confined(run_dir, path)
    if path.stat().st_size == 0:
        raise broken(run_dir, artifact, path, "is empty (0 bytes)")
    return path


def shape_problem(got_dtype, got_shape: tuple, dtype: str | None, shape: tuple, sizes: dict) -> str | None:
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
    except UNREADABLE as exc:
        raise broken(run_dir, artifact, path, f"is corrupt or truncated ({exc})") from None
    if not isinstance(array, np.ndarray):
        array.close()
        raise broken(run_dir, artifact, path, "is corrupt (an .npz archive, not one array)")
    problem = shape_problem(array.dtype, array.shape, artifact.dtype, artifact.shape, sizes or {}) or \
        value_problem(array, artifact, sizes or {})
    if problem:
        raise broken(run_dir, artifact, path, f"{problem}: it is stale or corrupt")
    return array


def value_problem(array, artifact: Artifact, sizes: dict) -> str | None:
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
    except UNREADABLE as exc:
        raise broken(run_dir, artifact, path, f"is corrupt ({exc})") from None
    if not isinstance(obj, dict):
        raise broken(run_dir, artifact, path, f"is corrupt (a JSON {type(obj).__name__}, not an object)")
    problem = json_problem(obj, artifact.keys or {}, "")
    if problem:
        raise broken(run_dir, artifact, path, f"is corrupt ({problem})")
    return obj


def json_problem(value, spec, where: str) -> str | None:
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
                problem = json_problem(value[k], inner, _join(where, k))
                if problem:
                    return problem
        return None
    if isinstance(spec, list):
        if not isinstance(value, list):
            return f"{where!r} is a JSON {type(value).__name__}"
        return next((p for i, item in enumerate(value) if (p := json_problem(item, spec[0], f"{where}[{i}]"))), None)
    if isinstance(spec, Count):
        if type(value) is not int or value < spec.minimum:
            return f"{where!r} is {shown(value)}, not an integer of at least {spec.minimum}"
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
    except UNREADABLE as exc:
        raise broken(run_dir, artifact, path, f"is corrupt or truncated ({exc})") from None
    for key, (dtype, shape) in artifact.members.items():
        if members[key] is None:
            continue
        problem = shape_problem(members[key].dtype, members[key].shape, dtype, shape, sizes or {})
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
    problem = shape_problem(array.dtype, array.shape, artifact.dtype, artifact.shape, {})
    if problem:
        raise ValueError(f"refusing to write {artifact.name}: it {problem}")
    save_npy(_writable(run_dir, artifact, **fields), array)


def write_npz(run_dir: Path, artifact: Artifact, **members: np.ndarray) -> None:
    """Write an npz artifact atomically; members not its entry's (dtype, rank) are a bug, refused."""
    for key, (dtype, shape) in artifact.members.items():
        problem = shape_problem(np.asarray(members[key]).dtype, np.shape(members[key]), dtype, shape, {})
        if problem:
            raise ValueError(f"refusing to write {artifact.name}: member {key} {problem}")
    path = artifact.path(run_dir)
    confined(run_dir, path.parent)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **members)


def write_json(run_dir: Path, artifact: Artifact, obj: dict, **fields) -> None:
    save_json(_writable(run_dir, artifact, **fields), obj)
