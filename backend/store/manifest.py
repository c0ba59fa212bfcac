"""The run's manifest: what the run is and how to reproduce it; creating a run, and the identity a resume must match."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from backend.store.artifacts import json_problem, read_json, write_array, write_json
from backend.store.atomic import current_path, recover
from backend.store.errors import RunError, broken, shown
from backend.store.schema import EXTERNAL, IMAGES, LABELS, MANIFEST, MARGINS, SHARD, Count

FORMAT_VERSION = 1

_HPARAMS = {"epochs": Count(1), "batch_size": Count(1), "hidden": Count(1)}


def read_manifest(run_dir: Path) -> dict:
    if not current_path(MANIFEST.path(run_dir)).exists():
        raise RunError(f"{run_dir} is not a run (no {MANIFEST.name}): create one with `{MANIFEST.command(run_dir)}`")
    manifest = read_json(Path(run_dir), MANIFEST)
    for key, spec in _HPARAMS.items():  # those a retraining takes from the manifest, where the run has them
        problem = json_problem(manifest["hparams"][key], spec, f"hparams.{key}") if key in manifest["hparams"] else None
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
                    f"({shown(existing.get(key))} vs {shown(manifest.get(key))}): choose another --out or match its settings"
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


def update_manifest(run_dir: Path, **changes) -> dict:
    manifest = dict(read_manifest(run_dir), **changes)
    write_json(Path(run_dir), MANIFEST, manifest)
    return manifest


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
