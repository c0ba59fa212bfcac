"""The schema table against README.md's run-format tables, the code, and broken files of a real run."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from backend.datamodels import quality
from backend.store import schema
from backend.store.artifacts import write_array, write_json
from backend.store.shards import read_shard, shard_ranges
from backend.store.errors import RunError
from backend.store.run_dir import Run
from backend.structure import clusters
from tests.conftest import ROOT

# README section heading -> the directory its table's names are relative to.
TABLES = {"## Run directory format": "", "### Candidates (`RUN/leakage/`": "leakage/",
          "## Structure of datamodel space": "structure/"}
DTYPES = r"\b(bool|uint8|int32|int64|float16|float32|float64)\b"
# README size names -> schema size symbols (dimensions the schema leaves free are not compared).
SIZES = {"N_train": "n_train", "N_test": "n_test", "N_train + N_test": "n_targets", "M": "M", "k": "k", "C": "C",
         "D": "D", "N_control": "n_control", "N": "n", "n": "n", "2": 2,
         "n_classes": "n_classes"}


def readme_rows() -> dict[str, tuple[list[str], list[list[str]]]]:
    """{run-relative file name: (its README dtypes, its README shapes)} from the three run-format tables."""
    lines = (ROOT / "README.md").read_text().splitlines()
    rows = {}
    for heading, prefix in TABLES.items():
        start = next(i for i, line in enumerate(lines) if line.startswith(heading))
        table = []
        for line in lines[start + 1:]:
            if line.startswith("|"):
                table.append(line)
            elif table:
                break
        assert table[0].startswith("| file |"), heading
        for line in table[2:]:
            names_cell, contents = line.strip("|").split("|", 1)
            names = [prefix + name for name in re.findall(r"`([^`]+)`", names_cell)]
            stated = contents.split(":", 1)[0]
            dtypes = re.findall(DTYPES, stated)
            shapes = [[d.strip() for d in shape.split(",")] for shape in re.findall(r"`\[([^\]]*)\]`", stated)]
            for i, name in enumerate(names):
                rows[name] = (list(dict.fromkeys(dtypes)) if len(names) == 1 else [dtypes[i if len(dtypes) == len(names) else 0]] if dtypes else [],
                              [shapes[i if len(shapes) == len(names) else 0]] if shapes else [])
    return rows


def test_readme_and_schema_list_the_same_files():
    readme = set(readme_rows())
    table = {a.name for a in schema.ARTIFACTS}
    assert readme - table == set(), "in README.md but not in backend/store/schema.py"
    assert table - readme == set(), "in backend/store/schema.py but not in README.md"
    assert len(table) == len(schema.ARTIFACTS), "a file is listed twice in the schema"


def test_readme_dtypes_and_shapes_match_the_schema():
    by_name = {a.name: a for a in schema.ARTIFACTS}
    unstated = set()
    for name, (dtypes, shapes) in readme_rows().items():
        artifact = by_name[name]
        if artifact.kind != "npy":
            assert not dtypes, f"{name}: README states a dtype for a {artifact.kind}"
            continue
        if dtypes:
            assert dtypes == [artifact.dtype] or tuple(dtypes) == artifact.dtype, name
        else:
            unstated.add(name)
        for shape in shapes:
            assert len(shape) == len(artifact.shape), name
            for readme_dim, dim in zip(shape, artifact.shape):
                if dim is not None:
                    assert SIZES.get(readme_dim) == dim, f"{name}: README {shape} vs schema {artifact.shape}"
    # The README describes these in words ("the same for ...", "per-target LDS") rather than by dtype.
    assert unstated == {"lds.npy", "structure/clusters_all.npy", "structure/layout_all.npy",
                        "structure/silhouette_all.npy"}


def test_every_rebuild_command_and_stage_is_a_cli_verb():
    from precompute.cli import build_parser

    verbs = set(next(a for a in build_parser()._actions if a.dest == "verb").choices)
    for artifact in schema.ARTIFACTS:
        assert artifact.stage in verbs, artifact.name
        assert re.match(rf"{re.escape(schema.CLI)} (\S+)", artifact.rebuild).group(1) in verbs, artifact.name


def test_no_file_name_is_spelled_outside_the_schema():
    sources = [p for d in ("backend", "pages", "precompute") for p in (ROOT / d).rglob("*.py")] + [ROOT / "app.py"]
    for artifact in schema.ARTIFACTS:
        quoted = re.compile(rf"""(?<![\w"'])["']{re.escape(artifact.name)}["'](?![\w"'])""")  # a literal, not prose
        spelled = [p.relative_to(ROOT).as_posix() for p in sources if quoted.search(p.read_text())]
        assert set(spelled) <= {"backend/store/schema.py"}, artifact.name


def test_patterned_names_round_trip(tmp_path):
    path = schema.SHARD.path(tmp_path, start=3, end=10)
    assert path == tmp_path / "shards" / "000000003-000000010.npz"
    assert schema.SHARD.fields_of(path, tmp_path) == {"start": "000000003", "end": "000000010"}
    for name in ("remove-5.json", "remove-17.json", "mislabel-5.json", "summary-remove.json"):
        (tmp_path / "support").mkdir(exist_ok=True)
        (tmp_path / "support" / name).write_text("{}")
    assert [p.name for p in schema.SUPPORT.glob(tmp_path, mode="remove")] == ["remove-17.json", "remove-5.json"]
    assert schema.SUPPORT_SUMMARY.glob(tmp_path) == [tmp_path / "support" / "summary-remove.json"]


def test_a_write_that_breaks_the_schema_is_refused(tmp_path):
    with pytest.raises(ValueError, match="dtype float64, expected float32"):
        write_array(tmp_path, schema.WEIGHTS, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="shape"):
        write_array(tmp_path, schema.BIAS, np.zeros((3, 2), np.float32))
    assert list(tmp_path.iterdir()) == []


_SUMMARY = {"n_targets": 8, "n_undefined": 0}
METRICS = {"heldout_run": "x", "lds": {"test": _SUMMARY, "train": _SUMMARY}, "mse": {"test": {}, "train": {}},
           "n_heldout_models": 30, "table5": {"n_fit_models": 60, "n_heldout_models": 30}}


@pytest.fixture(scope="module")
def artifacts_run(tiny_run, tmp_path_factory) -> Path:
    """tiny_run plus one artifact of each family the tests below break, written by the schema's writers."""
    out = tmp_path_factory.mktemp("schema") / "run"
    shutil.copytree(tiny_run, out)
    run = Run(out)
    write_array(out, schema.WEIGHTS, np.zeros((run.n_targets, run.n_train), np.float32))
    write_json(out, schema.METRICS, METRICS)
    write_array(out, schema.LEAKAGE_QUEUE, np.arange(run.n_test, dtype=np.int64))
    write_json(out, schema.CLUSTERS, {"per_class": [], "whole": {"k": 2, "gamma": 1.0, "silhouette": None, "nmi": 0.5},
                                      "pixels": {"nmi": 0.25}})
    return out


def _read(artifact: schema.Artifact, directory: Path):
    """Read the artifact the way the stages and pages do."""
    if artifact is schema.MANIFEST:
        return Run(directory)
    if artifact is schema.METRICS:
        return quality.read_metrics(Run(directory))
    if artifact is schema.CLUSTERS:
        return clusters.load_quality(Run(directory))
    if artifact is schema.SHARD:
        start, end = shard_ranges(directory)[0]
        return read_shard(directory, start, end)
    return Run(directory).array(artifact)


def _shard_path(directory: Path) -> Path:
    return schema.SHARD.glob(directory)[0]


def _wrong_dtype(path: Path, artifact) -> None:
    good = np.load(path)
    np.save(path, good.astype(np.float64 if good.dtype != np.float64 else np.float32))


def _wrong_shape(path: Path, artifact) -> None:
    good = np.load(path)
    np.save(path, np.concatenate([good, good[..., :1]], axis=-1) if good.ndim > 1 else good[:-1])


CORRUPTIONS = {
    "missing": lambda path, a: path.unlink(),
    "empty": lambda path, a: path.write_bytes(b""),
    "truncated": lambda path, a: path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2]),
    "garbage": lambda path, a: path.write_bytes(bytes(range(256)) * 4),
    "not utf-8": lambda path, a: path.write_bytes(b"\xff\xfe\x93NUMPY{\xc3"),
}
NPY_CORRUPTIONS = {"wrong dtype": _wrong_dtype, "wrong shape": _wrong_shape,
                   "pickled": lambda path, a: np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True),
                   "an npz": lambda path, a: np.savez(open(path, "wb"), x=np.zeros(3))}
JSON_CORRUPTIONS = {"a list": lambda path, a: path.write_text("[1, 2]"),
                    "a string": lambda path, a: path.write_text('"weights"'),
                    "bad json": lambda path, a: path.write_text('{"k": 10,'),
                    "no keys": lambda path, a: path.write_text("{}"),
                    "a key of the wrong type": lambda path, a: path.write_text(json.dumps(
                        dict(json.loads(path.read_text()), **{next(iter(a.keys)): "wrong"})))}
CASES = [(artifact, name, corrupt) for artifact, extra in (
    (schema.WEIGHTS, NPY_CORRUPTIONS), (schema.MASKS, NPY_CORRUPTIONS), (schema.LEAKAGE_QUEUE, NPY_CORRUPTIONS),
    (schema.MANIFEST, JSON_CORRUPTIONS), (schema.METRICS, JSON_CORRUPTIONS), (schema.CLUSTERS, JSON_CORRUPTIONS),
    (schema.SHARD, {})) for name, corrupt in {**CORRUPTIONS, **extra}.items()
    if not (artifact in (schema.METRICS, schema.SHARD) and name == "missing")]


@pytest.mark.parametrize("artifact,how,corrupt", CASES, ids=[f"{a.name}-{how}" for a, how, _ in CASES])
def test_a_broken_artifact_is_one_run_error_naming_the_file_and_its_rebuild(artifacts_run, tmp_path, artifact, how,
                                                                            corrupt):
    copy = Path(shutil.copytree(artifacts_run, tmp_path / "run"))
    path = _shard_path(copy) if artifact is schema.SHARD else artifact.path(copy)
    corrupt(path, artifact)
    with pytest.raises(RunError) as err:
        _read(artifact, copy)
    message = str(err.value)
    assert path.name in message and artifact.command(copy) in message, message
    assert "\n" not in message


def test_a_missing_metrics_file_means_no_eval_yet(artifacts_run, tmp_path):
    copy = Path(shutil.copytree(artifacts_run, tmp_path / "run"))
    schema.METRICS.path(copy).unlink()
    assert quality.read_metrics(Run(copy)) is None


def test_masks_and_margins_must_hold_the_same_models(artifacts_run, tmp_path):
    copy = Path(shutil.copytree(artifacts_run, tmp_path / "run"))
    np.save(schema.MARGINS.path(copy), np.load(schema.MARGINS.path(copy))[:-1])
    with pytest.raises(RunError, match="precompute merge"):
        Run(copy).margins


def test_intact_artifacts_read_back_as_written(artifacts_run):
    run = Run(artifacts_run)
    np.testing.assert_array_equal(run.array(schema.LEAKAGE_QUEUE), np.arange(run.n_test))
    assert quality.read_metrics(run) == METRICS
    assert json.loads(schema.CLUSTERS.path(artifacts_run).read_text()) == clusters.load_quality(run)
    masks, margins = read_shard(artifacts_run, *shard_ranges(artifacts_run)[0])
    assert masks.dtype == bool and margins.dtype == np.float32 and margins.shape[1] == run.n_targets
