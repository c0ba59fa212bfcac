"""Every artifact of an analysed run, corrupted every way: each CLI verb that reads it ends with exit 2 and one
line naming the file, and leaves every other file of the run as it was.

The corruptions: truncated, zero-length, garbage bytes, wrong dtype and wrong shape (arrays and archive
members), JSON of the wrong shape (a list, an empty object, a required key of the wrong type). The verbs
run in-process (cli.main), on one copy of the run made per module: each case corrupts one file, runs, and
puts the file back. The case counts are printed at the end of the session (tests/conftest.py).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from backend.store import schema
from precompute import cli
from tests.conftest import record_count

CORRUPTIONS = {
    "npy": ("truncated", "zero-length", "garbage", "wrong-dtype", "wrong-shape"),
    "npz": ("truncated", "zero-length", "garbage", "wrong-dtype", "wrong-shape"),
    "json": ("truncated", "zero-length", "garbage", "json-list", "json-empty", "json-wrong-type"),
}


def _verbs(run: Path) -> dict[str, list[str]]:
    cpu = ["--device", "cpu"]
    return {
        "merge": ["merge", "--run", run],
        "fit": ["fit", "--run", run, *cpu],
        "eval": ["eval", "--run", run, "--heldout", run / "heldout", "--no-complexity", "--force", *cpu],
        "control": ["control", "--run", run, "--control-models", "8", *cpu],
        # the request the fixture logged: answered from counterfactuals/, no training
        "counterfactual": ["counterfactual", "--run", run, "--target", "test:0", "--remove", "top:5", "--models", "2",
                           "--control-models", "8", *cpu],
        # a new request: reads labels and images to train one model
        "retrain": ["counterfactual", "--run", run, "--target", "test:1", "--remove", "ids:1,2,3", "--models", "1",
                    "--control-models", "8", *cpu],
        "faithfulness": ["faithfulness", "--run", run, "--pc", "0", "--k", "5", "--models", "1", "--controls", "8", *cpu],
    }


# Which verbs read each artifact (the others are read by the dashboard only: tests/pages/test_corrupt_pages.py).
READERS = (
    (schema.MANIFEST, ("merge", "fit", "control")),
    (schema.MASKS, ("fit", "eval")),
    (schema.MARGINS, ("fit", "eval")),
    (schema.LABELS, ("retrain",)),
    (schema.IMAGES, ("retrain",)),
    (schema.WEIGHTS, ("eval", "counterfactual")),
    (schema.BIAS, ("eval",)),
    (schema.CONTROL_MARGINS, ("control", "counterfactual")),
    (schema.CONTROL_FEATURES, ("control",)),
    (schema.CONTROL_META, ("control",)),
    (schema.SHARD, ("merge",)),
    (schema.COUNTERFACTUAL, ("counterfactual",)),
    (schema.COUNTERFACTUAL_META, ("counterfactual",)),
    (schema.PCA_COMPONENTS, ("faithfulness",)),
    (schema.PCA_PROJECTIONS, ("faithfulness",)),
)


@pytest.fixture(scope="module")
def corruptible_run(dashboard_data_dir, tmp_path_factory) -> Path:
    """A private copy of the analysed digits-tiny run (held-out run included) with one logged counterfactual."""
    run = tmp_path_factory.mktemp("corrupt") / "run"
    shutil.copytree(dashboard_data_dir / "runs" / "digits-tiny", run)
    # Earlier tests may have retrained into the shared run: keep exactly the one entry the verbs below ask for.
    shutil.rmtree(schema.COUNTERFACTUAL.folder(run), ignore_errors=True)
    assert cli.main([str(a) for a in _verbs(run)["counterfactual"]]) == 0
    return run


def corrupt(path: Path, kind: str, how: str, artifact: schema.Artifact) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "zero-length":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(b"\xff\xfe\x00garbage{[" * 7)
    elif kind == "npy":
        array = np.load(path, allow_pickle=False)
        if how == "wrong-dtype":
            array = array.astype(np.int8 if array.dtype != np.int8 else np.float32)
        else:
            array = array[..., :-1]  # the last dimension one short
        with open(path, "wb") as f:
            np.save(f, array)
    elif kind == "npz":
        with np.load(path, allow_pickle=False) as z:
            members = {k: z[k] for k in z.files}
        key = next(k for k in members if members[k].ndim == 2)  # margins: (n, n_targets)
        members[key] = (members[key].astype(np.float64) if how == "wrong-dtype" else members[key][:, :-1])
        with open(path, "wb") as f:
            np.savez(f, **members)
    elif how == "json-list":
        path.write_text("[]")
    elif how == "json-empty":
        path.write_text("{}")
    else:  # json-wrong-type: the first key a reader relies on, holding a value of another type
        obj = json.loads(data)
        key = next(iter(artifact.keys))
        obj[key] = 17 if isinstance(obj[key], str) else "corrupt"
        path.write_text(json.dumps(obj))


def signature(run: Path) -> dict[str, tuple]:
    """Every file of the run with its size, inode and mtime: a rewrite, a rename or an edit changes it."""
    return {p.relative_to(run).as_posix(): (p.stat().st_size, p.stat().st_ino, p.stat().st_mtime_ns)
            for p in sorted(run.rglob("*")) if p.is_file()}


def error_lines(stderr: str) -> list[str]:
    """stderr without the progress bars (tqdm draws them with carriage returns)."""
    return [line for raw in stderr.splitlines() for line in [raw.split("\r")[-1].strip()] if line and "%|" not in line]


def cases() -> list:
    out = []
    for artifact, verbs in READERS:
        for how in CORRUPTIONS[artifact.kind]:
            if how == "json-wrong-type" and not artifact.keys:
                continue
            for verb in verbs:
                out.append(pytest.param(artifact, how, verb, id=f"{artifact.name}-{how}-{verb}"))
    return out


def first_file(run: Path, artifact: schema.Artifact) -> Path:
    found = artifact.glob(run)
    assert found, f"the fixture run has no {artifact.name}"
    return found[0]


@pytest.mark.parametrize("artifact, how, verb", cases())
def test_a_corrupt_file_is_one_line_and_exit_2_and_touches_nothing_else(corruptible_run, capsys, artifact, how, verb):
    run = corruptible_run
    path = first_file(run, artifact)
    original = path.read_bytes()
    stat = path.stat()
    corrupt(path, artifact.kind, how, artifact)
    before = signature(run)
    capsys.readouterr()
    try:
        code = cli.main([str(a) for a in _verbs(run)[verb]])
        captured = capsys.readouterr()
        after = signature(run)
    finally:
        path.write_bytes(original)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    lines = error_lines(captured.err)
    record_count("corrupt file x CLI verb", "exit 2, one line" if code == 2 and len(lines) == 1 else "FAILED")
    assert code == 2, captured.err[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert path.name in lines[0] or artifact.name in lines[0], lines[0]
    assert "Traceback" not in captured.err
    assert after == before, sorted(set(after.items()) ^ set(before.items()))


def test_every_artifact_a_verb_reads_is_in_the_matrix():
    """The matrix covers the artifacts that the CLI reads; the rest are the dashboard's (its own matrix)."""
    kinds = {a.kind for a, _ in READERS}
    assert kinds == {"npy", "npz", "json"}
    assert len(cases()) >= 100
