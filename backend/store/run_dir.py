"""The run directory: the one store every stage reads and writes, and `Run`, its reader.

Files (all plain .npy/.json; read any of them with np.load(mmap_mode="r") without this code):
  manifest.json  what the run is and how to reproduce it
  masks.npy      bool    (M, n_train)           which training examples model m saw
  margins.npy    float32 or float16 (M, n_train + n_test)  correct-class margin of model m on each target
  labels.npy     int64   (n_train + n_test,)    target labels, training targets first
  images.npy     uint8   (n_train + n_test, H, W, C)
  shards/        models [a, b) as they finish; appended to masks.npy/margins.npy, then deleted
backend.store.schema lists every file of a run; every read checks a file against its entry, and a missing or
broken one is a RunError naming the file and the command that rebuilds it.

The store's modules, lowest first:
  errors     RunError, and the one message of a broken artifact
  atomic     atomic writes and transactions (every file appears by one rename; a kill is recovered)
  artifacts  one artifact read or written, checked against its schema entry
  manifest   the manifest, creating a run, the identity a resume must match
  shards     model shards and the completion bitmap
  merge      shards appended to masks.npy/margins.npy in place
  run_dir    Run: read access to a whole run
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from backend.store import external
from backend.store.artifacts import read_array, read_json, shape_problem, value_problem
from backend.store.atomic import current_path, recover
from backend.store.errors import UNREADABLE, RunError, broken
from backend.store.manifest import read_manifest
from backend.store.schema import CLI, EXTERNAL, IMAGES, LABELS, MARGINS, MASKS, Artifact


class Run:
    """Read access to a run directory: every array memory-mapped on first use, shapes checked.

    The dashboard holds one Run per run directory (st.cache_resource) and slices it per query.
    """

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        if not self.dir.is_dir():
            raise RunError(f"run {self.dir} does not exist: create it with `{CLI} all --dataset digits --out {self.dir}`")
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
        except UNREADABLE as exc:
            raise RunError(f"an external part of {self.dir / artifact.name} is unreadable ({exc}): restore the "
                           "release's file, or import the release again") from None
        problem = shape_problem(array.dtype, array.shape, artifact.dtype, artifact.shape, sizes) or \
            value_problem(array, artifact, sizes)
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
                           f"rerun `{MASKS.command(self.dir)}`")
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
