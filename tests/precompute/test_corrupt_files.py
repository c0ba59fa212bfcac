"""Every artifact of an analysed run, corrupted every way: each CLI verb that reads it ends with exit 2 and one
line naming the file, and leaves every other file of the run as it was.

The corruptions: truncated, zero-length, garbage bytes, wrong dtype and wrong shape (arrays and archive
members), a value its entry's constraints refuse (an index or label out of range, a NaN: schema `below`,
`finite`), JSON of the wrong shape (a list, an empty object, a required key of the wrong type, and a key of
the wrong type one level down in an object the schema spells out). The verbs run in-process (cli.main), on
one copy of the run made per module: each case corrupts one file, runs, and puts the file back. Files no verb
reads (WRITTEN_ONLY) are replaced by the verb that writes them. Every schema entry is in READERS, in
WRITTEN_ONLY or read by the dashboard only (tests/pages/test_corrupt_pages.py checks that union against the
schema). The case counts are printed at the end of the session (tests/conftest.py).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from backend.store import schema
from backend.store.artifacts import read_json, write_array
from backend.store.run_dir import Run
from precompute import cli
from tests.conftest import record_count

CORRUPTIONS = {
    "npy": ("truncated", "zero-length", "garbage", "wrong-dtype", "wrong-shape", "out-of-range", "negative", "non-finite"),
    "npz": ("truncated", "zero-length", "garbage", "wrong-dtype", "wrong-shape"),
    "json": ("truncated", "zero-length", "garbage", "json-list", "json-empty", "json-wrong-type", "json-nested"),
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
        "retrain": ["counterfactual", "--run", run, "--target", "test:1", "--remove", "train:1-3", "--models", "1",
                    "--control-models", "8", *cpu],
        "faithfulness": ["faithfulness", "--run", run, "--pc", "0", "--k", "5", "--models", "1", "--controls", "8", *cpu],
        # the fixture's search again: answered from support/, no training
        "support": ["support", "--run", run, "--targets", "test:0", "--models", "1", "--budget", "1",
                    "--control-models", "8", *cpu],
        "cf-eval": ["cf-eval", "--run", run, "--targets", "test:0", "--k", "2", "--heuristics", "top", "--models", "1",
                    "--control-models", "8", "--force", *cpu],
        "attribute": ["attribute", "--run", run, "--method", "datamodels"],
        # the fixture's evaluation again: every retraining answered from counterfactuals/
        "methods-eval": ["methods-eval", "--run", run, "--targets", "3", "--models", "2", "--budget", "2", *cpu],
    }


# Which verbs read each artifact (the others are read by the dashboard only: tests/pages/test_corrupt_pages.py).
READERS = (
    (schema.MANIFEST, ("merge", "fit", "control", "attribute")),
    (schema.MASKS, ("fit", "eval")),
    (schema.MARGINS, ("fit", "eval")),
    (schema.LABELS, ("retrain",)),
    (schema.IMAGES, ("retrain",)),
    (schema.WEIGHTS, ("eval", "counterfactual", "support", "attribute")),
    (schema.WEIGHTS_BY_TRAIN, ("counterfactual",)),
    (schema.BIAS, ("eval",)),
    (schema.FIT, ("attribute",)),
    (schema.CONTROL_MARGINS, ("control", "counterfactual", "support")),
    (schema.CONTROL_FEATURES, ("control",)),
    (schema.CONTROL_META, ("control",)),
    (schema.SHARD, ("merge",)),
    (schema.TARGET_SUMS, ("merge",)),
    (schema.TARGET_PREDICTIONS, ("merge",)),
    (schema.COUNTERFACTUAL, ("counterfactual",)),
    (schema.COUNTERFACTUAL_META, ("counterfactual",)),
    (schema.SUPPORT, ("support",)),
    (schema.ATTRIBUTION_SCORES, ("methods-eval",)),
    (schema.ATTRIBUTION_META, ("methods-eval",)),
    (schema.METHODS_EVAL, ("methods-eval",)),
    (schema.PCA_COMPONENTS, ("faithfulness",)),
    (schema.PCA_PROJECTIONS, ("faithfulness",)),
)
# The held-out run's files, which eval and methods-eval read beside the run's own.
HELDOUT_READERS = (
    (schema.MANIFEST, ("eval", "methods-eval")),
    (schema.MASKS, ("eval", "methods-eval")),
    (schema.MARGINS, ("eval", "methods-eval")),
)
# Outputs no verb reads back, each with the verb that writes it: a corrupt copy does not stop that verb, which
# replaces it (a verb that takes --force refuses without it, in one line naming the file).
WRITTEN_ONLY = ((schema.SUPPORT_SUMMARY, "support"), (schema.COUNTERFACTUAL_EVAL, "cf-eval"))


@pytest.fixture(scope="module")
def corruptible_run(dashboard_data_dir, tmp_path_factory) -> Path:
    """A private copy of the analysed digits-tiny run (held-out run included) with one logged counterfactual."""
    run = tmp_path_factory.mktemp("corrupt") / "run"
    shutil.copytree(dashboard_data_dir / "runs" / "digits-tiny", run)
    # Earlier tests may have retrained into the shared run: keep exactly the entries the verbs below ask for.
    shutil.rmtree(schema.COUNTERFACTUAL.folder(run), ignore_errors=True)
    # The fixture's datamodels come from scikit-learn, not fit: the transposed test rows fit writes beside them.
    run_obj = Run(run)
    write_array(run, schema.WEIGHTS_BY_TRAIN, np.ascontiguousarray(run_obj.array(schema.WEIGHTS)[run_obj.n_train:].T))
    verbs = _verbs(run)
    assert cli.main([str(a) for a in verbs["counterfactual"]]) == 0
    # the counterfactual verb's own entry, among the ones the verbs below log
    (run / LOGGED).write_text(schema.COUNTERFACTUAL.glob(run)[0].stem)
    for verb in ("methods-eval", "support", "cf-eval"):
        assert cli.main([str(a) for a in verbs[verb]]) == 0, verb
    return run


def corrupt(path: Path, kind: str, how: str, artifact: schema.Artifact) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "zero-length":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(b"\xff\xfe\x00garbage{[" * 7)
    elif how in ("out-of-range", "negative", "non-finite"):
        array = np.load(path, allow_pickle=False)
        array.flat[len(array.flat) // 2] = {"non-finite": np.nan, "negative": artifact.lowest - 1}.get(how) \
            if how != "out-of-range" else out_of_range(path, artifact)
        with open(path, "wb") as f:
            np.save(f, array)
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
        key = max(members, key=lambda k: members[k].ndim)  # the first of most dimensions: masks, margins, margin_sum
        members[key] = (members[key].astype(np.int8 if members[key].dtype != np.int8 else np.float64)
                        if how == "wrong-dtype" else members[key][..., :-1])
        with open(path, "wb") as f:
            np.savez(f, **members)
    elif how == "json-list":
        path.write_text("[]")
    elif how == "json-empty":
        path.write_text("{}")
    elif how == "json-wrong-type":  # the first key a reader relies on, holding a value of another type
        obj = json.loads(data)
        key = next(iter(artifact.keys))
        obj[key] = 17 if isinstance(obj[key], str) else "corrupt"
        path.write_text(json.dumps(obj))
    else:  # json-nested: the same one level down, in the first object or list the schema spells out
        obj = json.loads(data)
        nested_wrong_type(obj, artifact.keys)
        path.write_text(json.dumps(obj))


def out_of_range(path: Path, artifact: schema.Artifact) -> int:
    """The first value past the entry's `below` bound, for the run that holds `path`."""
    run = next(p for p in path.parents if (p / schema.MANIFEST.name).exists())
    return Run(run).sizes[artifact.below]


def applies(artifact: schema.Artifact, how: str) -> bool:
    """Whether a corruption kind means anything for the entry (a value constraint it has, a JSON key spec)."""
    return {"out-of-range": artifact.below is not None, "negative": artifact.below is not None,
            "non-finite": artifact.finite,
            "json-wrong-type": bool(artifact.keys), "json-nested": nested_spec(artifact)}.get(how, True)


def nested_spec(artifact: schema.Artifact) -> bool:
    """Whether the entry's keys spell out an object or a list one level down (json-nested applies)."""
    return any(isinstance(spec, (dict, list)) for spec in (artifact.keys or {}).values())


def nested_wrong_type(obj: dict, keys: dict) -> str:
    """Give the first key one level down that the schema spells out a value of another type; its key path."""
    key, spec = next((k, v) for k, v in keys.items() if isinstance(v, (dict, list)))
    if isinstance(spec, list):
        inner, holder, sub = spec[0], obj[key], 0
    else:
        sub = next((k for k in spec if k != "*"), None) or next(iter(obj[key]))
        inner, holder = spec.get(sub, spec.get("*")), obj[key]
    accepts_str = inner is str or (isinstance(inner, tuple) and str in inner)
    holder[sub] = 17 if accepts_str else "corrupt"
    return f"{key}.{sub}" if isinstance(spec, dict) else f"{key}[0]"


def signature(run: Path) -> dict[str, tuple]:
    """Every file of the run with its size, inode and mtime: a rewrite, a rename or an edit changes it."""
    return {p.relative_to(run).as_posix(): (p.stat().st_size, p.stat().st_ino, p.stat().st_mtime_ns)
            for p in sorted(run.rglob("*")) if p.is_file()}


def error_lines(stderr: str) -> list[str]:
    """stderr without the progress bars (tqdm draws them with carriage returns)."""
    return [line for raw in stderr.splitlines() for line in [raw.split("\r")[-1].strip()] if line and "%|" not in line]


def cases() -> list:
    out = []
    for where, readers in (("", READERS), (schema.HELDOUT.name, HELDOUT_READERS)):
        for artifact, verbs in readers:
            for how in CORRUPTIONS[artifact.kind]:
                if not applies(artifact, how):
                    continue
                for verb in verbs:
                    out.append(pytest.param(artifact, how, verb, where, id=f"{where}{artifact.name}-{how}-{verb}"))
    return out


LOGGED = "logged-request.txt"  # beside the run's files: the key of the request the counterfactual verb asks


def first_file(run: Path, artifact: schema.Artifact) -> Path:
    """The file of the entry that the verbs read: the counterfactual verb's own entry for counterfactuals/."""
    if artifact in (schema.COUNTERFACTUAL, schema.COUNTERFACTUAL_META) and (run / LOGGED).exists():
        return artifact.path(run, key=(run / LOGGED).read_text())
    found = artifact.glob(run)
    assert found, f"the fixture run has no {artifact.name}"
    return found[0]


@pytest.mark.parametrize("artifact, how, verb, where", cases())
def test_a_corrupt_file_is_one_line_and_exit_2_and_touches_nothing_else(corruptible_run, capsys, artifact, how, verb,
                                                                         where):
    run = corruptible_run
    path = first_file(run / where, artifact)
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


@pytest.mark.parametrize("artifact, verb", WRITTEN_ONLY, ids=[a.name for a, _ in WRITTEN_ONLY])
def test_a_corrupt_output_no_verb_reads_is_replaced_by_its_writer(corruptible_run, capsys, artifact, verb):
    run = corruptible_run
    path = first_file(run, artifact)
    original = path.read_bytes()
    args = [str(a) for a in _verbs(run)[verb]]
    try:
        path.write_text("[]")
        capsys.readouterr()
        if "--force" in args:  # without it an existing output is refused: one line naming it, the file untouched
            assert cli.main([a for a in args if a != "--force"]) == 2
            assert path.read_text() == "[]" and path.name in error_lines(capsys.readouterr().err)[-1]
        code = cli.main(args)
        record_count("corrupt output x its writer", "replaced" if code == 0 else "FAILED")
        assert code == 0, capsys.readouterr().err[-2000:]
        assert isinstance(read_json(run, artifact, **artifact.fields_of(path, run)), dict)
    finally:
        path.write_bytes(original)


def test_every_corruption_kind_is_in_the_matrix():
    """The matrix holds every kind of file and every corruption of each; which files it must cover is checked
    against the schema in tests/pages/test_corrupt_pages.py (with the dashboard's readers)."""
    held = {(a.kind, how) for a, how, _, _ in (c.values for c in cases())}
    assert held == {(kind, how) for kind, hows in CORRUPTIONS.items() for how in hows}
