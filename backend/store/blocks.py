"""Outputs filled block by block that survive a kill: the fit's weights, a method's attribution scores.

At CIFAR scale one output is (10k targets × 50k training images) float32, 2 GB: it cannot sit in RAM
until the end, and a kill must not lose the hours already spent. So each output is preallocated as a
memory-mapped .npy in a staging folder of the run (`.partial/<name>/`), every finished block of rows is
written in place, flushed, then marked in a completion bitmap (`done.npy`, replaced atomically). A rerun
with the same configuration resumes from the bitmap; a different configuration starts the staging afresh.
When every block is done, `commit` hands the staged files to the caller's transaction, which renames
them into the run together with whatever else the stage writes: no reader ever sees new weights beside
an old bias, and a commit cut by a kill is finished by the journal (backend.store.atomic).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from backend.store.rows import write_rows
from backend.store.atomic import adopt, save_json, save_npy
from backend.store.schema import Artifact

_STAGING = ".partial"


class BlockedOutput:
    """Arrays of `n_rows` rows, written `block_rows` rows at a time, resumable from a completion bitmap.

    name    : the staging folder's name, one per output (e.g. "fit", "attribution-trak")
    config  : everything the rows depend on (JSON); staged blocks of another configuration are discarded
    arrays  : {member: (dtype, shape)} with shape[0] == n_rows for every member
    """

    def __init__(self, run_dir: str | Path, name: str, config: dict, arrays: dict[str, tuple], block_rows: int):
        if block_rows < 1:
            raise ValueError(f"block_rows must be at least 1, got {block_rows}")
        rows = {shape[0] for _, shape in arrays.values()}
        if len(rows) != 1:
            raise ValueError(f"every array of a blocked output needs the same number of rows, got {sorted(rows)}")
        self.run_dir = Path(run_dir)
        self.folder = self.run_dir / _STAGING / name
        self.n_rows, self.block_rows = rows.pop(), int(block_rows)
        self.n_blocks = -(-self.n_rows // self.block_rows)
        self.arrays = {key: (np.dtype(dtype), tuple(shape)) for key, (dtype, shape) in arrays.items()}
        layout = {"config": config, "block_rows": self.block_rows,
                  "arrays": {key: [dtype.str, list(shape)] for key, (dtype, shape) in self.arrays.items()}}
        self.resumed = self._matches(layout)
        if not self.resumed:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder.mkdir(parents=True)
            for key, (dtype, shape) in self.arrays.items():
                np.lib.format.open_memmap(self._file(key), mode="w+", dtype=dtype, shape=shape).flush()
            save_npy(self.folder / "done.npy", np.zeros(self.n_blocks, dtype=bool))
            save_json(self.folder / "layout.json", layout)  # last: a folder without it is not resumed
        self._maps: dict[str, np.memmap] = {}

    def _file(self, key: str) -> Path:
        return self.folder / f"{key}.npy"

    def _matches(self, layout: dict) -> bool:
        try:
            if json.loads((self.folder / "layout.json").read_text()) != json.loads(json.dumps(layout)):
                return False
            done = np.load(self.folder / "done.npy", allow_pickle=False)
            for key, (dtype, shape) in self.arrays.items():
                staged = np.load(self._file(key), mmap_mode="r", allow_pickle=False)
                if staged.dtype != dtype or staged.shape != shape:
                    return False
        except (OSError, ValueError):
            return False
        return done.dtype == bool and done.shape == (self.n_blocks,)

    @property
    def done(self) -> np.ndarray:
        """bool (n_blocks,): the blocks whose rows are on disk."""
        return np.load(self.folder / "done.npy", allow_pickle=False)

    def missing(self) -> list[int]:
        return [int(b) for b in np.flatnonzero(~self.done)]

    def rows(self, block: int) -> slice:
        return slice(block * self.block_rows, min((block + 1) * self.block_rows, self.n_rows))

    def view(self, key: str) -> np.memmap:
        """The staged array, memory-mapped read-write (finished blocks hold their final values)."""
        if key not in self._maps:
            self._maps[key] = np.load(self._file(key), mmap_mode="r+", allow_pickle=False)
        return self._maps[key]

    def write(self, block: int, **values: np.ndarray) -> None:
        """Store one block's rows of every array, then mark the block done (never the other way round).

        The rows go in with plain writes at their offset, not through a memory map: mapped pages stay in
        the writer's resident set, so a map would grow it with every block (the fit's memory would then
        depend on the number of targets), and a full disk is an OSError here rather than a SIGBUS.
        """
        if set(values) != set(self.arrays):
            raise ValueError(f"a block needs every array {sorted(self.arrays)}, got {sorted(values)}")
        rows = self.rows(block)
        for key, value in values.items():
            dtype, shape = self.arrays[key]
            write_rows(self._file(key), np.arange(rows.start, rows.stop),
                       np.broadcast_to(np.asarray(value).astype(dtype, copy=False), (rows.stop - rows.start, *shape[1:])))
        done = self.done
        done[block] = True
        save_npy(self.folder / "done.npy", done)

    def commit(self, destinations: dict[str, tuple[Artifact, dict]]) -> None:
        """Hand staged arrays to the open transaction as their artifacts ({member: (artifact, fields)}).

        Call inside `transaction(run, stage)`; `discard` after it commits removes what is left of the staging,
        members without a destination included (e.g. the fit's per-target diagnostics, summarised in fit.json).
        """
        if not self.done.all():
            raise RuntimeError(f"{self.folder}: {int((~self.done).sum())} of {self.n_blocks} blocks are not written yet")
        if not set(destinations) <= set(self.arrays):
            raise ValueError(f"commit's destinations {sorted(destinations)} are not among the arrays {sorted(self.arrays)}")
        for map_ in self._maps.values():
            map_.flush()
        self._maps.clear()
        for key, (artifact, fields) in destinations.items():
            final = artifact.path(self.run_dir, **fields)
            final.parent.mkdir(parents=True, exist_ok=True)
            adopt(final, self._file(key))

    def discard(self) -> None:
        self._maps.clear()
        shutil.rmtree(self.folder, ignore_errors=True)
        try:
            self.folder.parent.rmdir()  # the last staged output gone: no empty .partial/ left in the run
        except OSError:
            pass
