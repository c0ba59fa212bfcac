"""The merge: finished shards appended to masks.npy/margins.npy in place, never rewriting the rows they hold.

masks.npy/margins.npy are the one exception to whole-file atomic writes: a merge grows them in place, and
readers only ever see the rows their header's shape covers (the manifest's n_models says which count).
"""
from __future__ import annotations

import fcntl
import io
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from backend.store.artifacts import read_npz
from backend.store.atomic import recover, save_npy, transaction
from backend.store.errors import UNREADABLE, RunError, broken
from backend.store.manifest import margins_dtype, merged_models, read_manifest, update_manifest
from backend.store.schema import MARGINS, MASKS, SHARD, Artifact
from backend.store.shards import done_models, prefix_pieces, read_shard, shard_ranges


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
            except UNREADABLE as exc:
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
            written += masks.commit(n)
            written += margins.commit(n)
            with transaction(run_dir, "merge"):
                update_manifest(run_dir, n_models=n)
                if after_merge is not None:
                    after_merge(n)
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
    except (*UNREADABLE, TypeError):
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
    return deleted


def write_npy_header(f, dtype: np.dtype, shape: tuple) -> None:
    """The .npy header np.save would write for a C-ordered array of this dtype and shape; its data follows."""
    np.lib.format.write_array_header_1_0(
        f, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)})
