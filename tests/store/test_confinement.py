"""Hostile run files: a crafted journal, symlink or external.json inside a run reaches nothing outside it.

Each case plants real victim files beside the run (in tmp_path), opens the run or runs a CLI verb on it, and
checks the victims byte for byte afterwards; the run's refusal is one RunError (exit 2) naming the run file.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from backend.store import schema
from backend.store.artifacts import write_array
from backend.store.atomic import recover
from backend.store.errors import RunError
from backend.store.run_dir import Run
from precompute import cli
from tests.conftest import FAST_TRAIN, record_count


def _run(tiny_run, tmp_path: Path, name: str = "run") -> Path:
    return shutil.copytree(tiny_run, tmp_path / name)


def _victims(tmp_path: Path) -> dict[Path, bytes]:
    """Files outside the run that an escape would delete, overwrite or take."""
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    victims = {outside / "victim.txt": b"precious\n", outside / "taken.npy": b"someone else's file\n"}
    for path, data in victims.items():
        path.write_bytes(data)
    return victims


def _intact(victims: dict[Path, bytes]) -> bool:
    return all(path.is_file() and not path.is_symlink() and path.read_bytes() == data for path, data in victims.items())


# (name, renames, deletes) of a journal a dead writer left; {outside} is the victims' folder, {run} the run.
JOURNALS = {
    "absolute delete": ([], ["{outside}/victim.txt"]),
    "relative ../ delete": ([], ["../outside/victim.txt"]),
    "rename over an outside file": ([["manifest.json", "../outside/victim.txt"]], []),
    "rename over an outside file, absolute": ([["manifest.json", "{outside}/victim.txt"]], []),
    "rename in an outside file": ([["../outside/taken.npy", "bias.npy"]], []),
    "rename in an outside file, absolute": ([["{outside}/taken.npy", "bias.npy"]], []),
    "delete through a linked folder": ([], ["linked/victim.txt"]),
    "rename over through a linked folder": ([["manifest.json", "linked/victim.txt"]], []),
    "a valid rename, then an escaping delete": ([["labels.npy", "labels-copy.npy"]], ["../outside/victim.txt"]),
    "a NUL in a name": ([], ["victim\u0000.txt"]),
    "a name that is not a string": ([], [["../outside/victim.txt"]]),
}


def _plant_journal(run: Path, outside: Path, renames, deletes, pid: int = 999_999_999) -> Path:
    (run / "linked").symlink_to(outside, target_is_directory=True)
    fill = lambda v: v.format(outside=outside, run=run) if isinstance(v, str) else v  # noqa: E731
    journal = run / ".transaction-fit.json"
    journal.write_text(json.dumps({"stage": "fit", "pid": pid, "renames": [[fill(a), fill(b)] for a, b in renames],
                                   "deletes": [fill(d) for d in deletes]}))
    return journal


@pytest.mark.parametrize("case", JOURNALS)
def test_a_crafted_journal_changes_nothing_outside_the_run_when_the_run_opens(tiny_run, tmp_path, case):
    run, victims = _run(tiny_run, tmp_path), _victims(tmp_path)
    manifest = (run / "manifest.json").read_bytes()
    journal = _plant_journal(run, tmp_path / "outside", *JOURNALS[case])
    with pytest.raises(RunError, match=r"\.transaction-fit\.json"):
        Run(run)
    held = _intact(victims) and (run / "manifest.json").read_bytes() == manifest and journal.exists()
    record_count("crafted journal x open the run", "held" if held else "FAILED")
    assert held
    assert not (run / "labels-copy.npy").exists()  # no entry of a refused journal is carried out


@pytest.mark.parametrize("case", ["absolute delete", "relative ../ delete", "rename over an outside file",
                                  "rename in an outside file", "delete through a linked folder"])
def test_a_crafted_journal_changes_nothing_outside_the_run_under_a_cli_verb(tiny_run, tmp_path, capsys, case):
    run, victims = _run(tiny_run, tmp_path), _victims(tmp_path)
    _plant_journal(run, tmp_path / "outside", *JOURNALS[case])
    code = cli.main(["merge", "--run", str(run)])
    err = capsys.readouterr().err
    held = code == 2 and ".transaction-fit.json" in err and len(err.strip().splitlines()) == 1 and _intact(victims)
    record_count("crafted journal x CLI verb", "held" if held else "FAILED")
    assert held, (code, err)


def test_a_journal_of_a_malformed_owner_is_dropped_and_nothing_else_happens(tiny_run, tmp_path):
    """A pid that is not a process id (negative, huge, a bool) marks a journal this code never wrote."""
    run, victims = _run(tiny_run, tmp_path), _victims(tmp_path)
    for pid in (-1, 0, 10**30, True, "12"):
        journal = _plant_journal(run, tmp_path / "outside", [], ["../outside/victim.txt"], pid=pid)
        Run(run)
        (run / "linked").unlink()
        assert not journal.exists() and _intact(victims), pid
        record_count("crafted journal x open the run", "held")


def test_a_legitimate_journal_inside_the_run_is_still_finished(tiny_run, tmp_path):
    run = _run(tiny_run, tmp_path)
    (run / ".bias.npy.999999999.x.tmp").write_bytes((run / "labels.npy").read_bytes())
    (run / "old.json").write_text("{}")
    (run / ".transaction-fit.json").write_text(json.dumps(
        {"stage": "fit", "pid": 999_999_999, "renames": [[".bias.npy.999999999.x.tmp", "bias.npy"]],
         "deletes": ["old.json"]}))
    Run(run)
    assert (run / "bias.npy").read_bytes() == (run / "labels.npy").read_bytes() and not (run / "old.json").exists()


def test_a_top_up_refuses_to_append_through_a_symlinked_masks_file(tiny_run, tmp_path, capsys):
    """masks.npy linked to another run's: the top-up's merge must not grow that run's file."""
    run, other = _run(tiny_run, tmp_path), _run(tiny_run, tmp_path, "other")
    before = {name: (other / name).read_bytes() for name in ("masks.npy", "margins.npy")}
    (run / "masks.npy").unlink()
    (run / "masks.npy").symlink_to(other / "masks.npy")
    code = cli.main(["train", "--dataset", "digits", "--alpha", "0.5", "--models", "61", "--seed", "0",
                     "--out", str(run), "--batch-models", "30", "--keep-shards", *FAST_TRAIN])
    err = capsys.readouterr().err
    held = (code == 2 and "masks.npy" in err and "symbolic link" in err
            and all((other / name).read_bytes() == data for name, data in before.items()))
    record_count("symlinked run file", "held" if held else "FAILED")
    assert held, (code, err)


@pytest.mark.parametrize("name", ["labels.npy", "manifest.json", "weights_dir"])
def test_a_run_file_linked_outside_the_run_is_refused_naming_it(tiny_run, tmp_path, name):
    run = _run(tiny_run, tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    if name == "weights_dir":  # a linked folder: a stage's writes into it would land outside
        (outside / "structure").mkdir()
        (run / "structure").symlink_to(outside / "structure", target_is_directory=True)
        with pytest.raises(RunError, match="structure.*outside the run"):
            write_array(run, schema.CLUSTERS_ALL, np.zeros(3, np.int32))
        held = not any((outside / "structure").iterdir())
    else:
        shutil.copy(run / name, outside / name)
        (run / name).unlink()
        (run / name).symlink_to(outside / name)
        with pytest.raises(RunError, match=f"{name}.*outside the run"):
            Run(run).labels
        held = True
    record_count("symlinked run file", "held" if held else "FAILED")
    assert held


def test_a_write_under_a_linked_folder_makes_no_folder_outside_the_run(tiny_run, tmp_path):
    """attribution/ linked outside: writing attribution/ssl-esvm/embeddings.npy is refused before its folder
    ssl-esvm is made, so nothing appears in the linked-to folder."""
    run = _run(tiny_run, tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (run / "attribution").symlink_to(outside, target_is_directory=True)
    with pytest.raises(RunError, match="outside the run"):
        write_array(run, schema.SSL_EMBEDDINGS, np.zeros((3, 2), np.float32))
    held = not any(outside.iterdir())
    record_count("symlinked run file", "held" if held else "FAILED")
    assert held


def _external(run: Path, release: Path, part: dict) -> None:
    record = {"path": "masks.npy", "base": "release", "dtype": "|b1", "shape": [60, 1], "rows": [0, 60],
              "columns": [0, 1], "sha256_sampled": "0" * 64}
    schema.EXTERNAL.path(run).write_text(json.dumps({"release": str(release),
                                                     "arrays": {"masks.npy": {"parts": [dict(record, **part)]}}}))


EXTERNAL_CASES = {
    "absolute path": {"path": "{outside}/taken.npy"},
    "absolute base": {"base": "absolute", "path": "{outside}/taken.npy"},
    "release-relative ../": {"path": "../outside/taken.npy"},
    "run-relative ../": {"base": "run", "path": "../outside/taken.npy"},
    "release a linked folder out": {"path": "linked/taken.npy"},
    "rows not integers": {"rows": ["0", 60]},
    "a part that is a list": None,
}


@pytest.mark.parametrize("case", EXTERNAL_CASES)
def test_an_external_part_outside_its_release_is_refused(tiny_run, tmp_path, case):
    run, release = _run(tiny_run, tmp_path), tmp_path / "release"
    outside = tmp_path / "outside"
    release.mkdir()
    outside.mkdir()
    np.save(outside / "taken.npy", np.ones((60, 1), bool))
    (release / "linked").symlink_to(outside, target_is_directory=True)
    part = EXTERNAL_CASES[case]
    if part is None:
        schema.EXTERNAL.path(run).write_text(json.dumps({"release": str(release), "arrays": {"masks.npy": {"parts": [[1]]}}}))
    else:
        _external(run, release, {k: v.format(outside=outside) if isinstance(v, str) else v for k, v in part.items()})
    with pytest.raises(RunError, match="external.json"):
        Run(run).masks
    record_count("crafted external.json", "held")


def test_an_external_part_that_is_not_npy_does_not_echo_its_bytes(tiny_run, tmp_path):
    """external.json pointed at /etc/passwd (here a file like it): the error names the file, not its contents."""
    run, release = _run(tiny_run, tmp_path), tmp_path / "etc"
    release.mkdir()
    (release / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    _external(run, release, {"path": "passwd"})
    with pytest.raises(RunError) as raised:
        Run(run).masks
    held = "passwd" in str(raised.value) and "root" not in str(raised.value).replace(str(tmp_path), "")
    record_count("crafted external.json", "held" if held else "FAILED")
    assert held, str(raised.value)


def test_temps_of_dead_writers_are_removed_only_inside_the_run(tiny_run, tmp_path):
    """A folder linked outside holding what looks like a dead writer's temp: cleaning the run leaves it."""
    run, outside = _run(tiny_run, tmp_path), tmp_path / "outside"
    outside.mkdir()
    victim = outside / ".victim.npy.999999999.abc.tmp"
    victim.write_bytes(b"precious")
    (run / "linked").symlink_to(outside, target_is_directory=True)
    (run / ".linked-file.999999999.abc.tmp").symlink_to(victim)
    recover(run)
    held = victim.read_bytes() == b"precious"
    record_count("symlinked run file", "held" if held else "FAILED")
    assert held and not (run / ".linked-file.999999999.abc.tmp").is_symlink()
