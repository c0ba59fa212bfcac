"""Hostile inputs to the CLI (issue 25): each expected failure is one line and exit 2 naming the flag or file
that caused it, never exit 1 or a traceback, and a broken data file is never blamed on the requested sizes.

The failures are real ones: torch's own allocation error, ResNet-9 on 2x2 images, a JSON file nested 200,000
deep, an npz whose header claims 10^12 images; expected_failure (precompute/cli.py) is the one table of them.
"""
from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.store.targets import TargetError, parse_targets, target_column
from precompute import cli
from tests.conftest import record_count


def run(argv, capsys) -> tuple[int, list[str]]:
    capsys.readouterr()
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's own exit (a bad flag)
        code = exc.code
    err = capsys.readouterr().err
    lines = [line for raw in err.splitlines() for line in [raw.split("\r")[-1].strip()] if line and "%|" not in line]
    return code, lines


def held(category: str, code: int, lines: list[str], *needles: str, absent: tuple = ()) -> bool:
    ok = (code == 2 and len(lines) == 1 and all(n in lines[0] for n in needles)
          and not any(a in lines[0] for a in absent) and "Traceback" not in lines[0])
    record_count(category, "exit 2, one line" if ok else "FAILED")
    return ok


def test_a_huge_memory_flag_is_one_line(tmp_path, capsys):
    for value in ("1e400GiB", "1e30TiB", "99999999999999999999GiB"):
        code, lines = run(["fit", "--run", tmp_path, "--memory", value], capsys)
        assert held("exit codes", code, lines, "--memory", value), lines


def test_torch_allocation_failure_is_exit_2_naming_the_flags(tmp_path, capsys, monkeypatch):
    """torch raises a RuntimeError ("DefaultCPUAllocator: can't allocate memory"), not a MemoryError."""
    from precompute import train

    def allocate(args):
        torch.empty(1 << 60, dtype=torch.uint8)
    monkeypatch.setattr(train, "cmd_merge", allocate)
    code, lines = run(["merge", "--run", tmp_path], capsys)
    assert held("exit codes", code, lines, "out of memory", "--models", "--batch-models"), lines


def test_deep_json_recursion_is_exit_2(tmp_path, capsys, monkeypatch):
    from precompute import train

    monkeypatch.setattr(train, "cmd_merge", lambda args: json.loads("[" * 200_000 + "]" * 200_000))
    code, lines = run(["merge", "--run", tmp_path], capsys)
    assert held("exit codes", code, lines, "nested too deeply"), lines


def _npz(path: Path, images, labels, split=None, **extra) -> Path:
    split = (np.arange(len(labels)) >= len(labels) * 3 // 4).astype(int) if split is None else split
    np.savez(path, images=images, labels=labels, split=split, **extra)
    return path


def _train(dataset: Path, out: Path, *flags: str) -> list:
    return ["train", "--dataset", f"npz:{dataset}", "--models", "2", "--alpha", "0.5", "--out", out,
            "--epochs", "1", *flags]


def test_an_architecture_that_cannot_take_the_images_is_exit_2_naming_arch(tmp_path, capsys):
    rng = np.random.default_rng(0)
    data = _npz(tmp_path / "small.npz", rng.integers(0, 255, (40, 2, 2, 3), dtype=np.uint8), np.arange(40) % 2)
    code, lines = run(_train(data, tmp_path / "run", "--arch", "resnet9"), capsys)
    assert held("exit codes", code, lines, "--arch", absent=("out of memory",)), lines


def _claiming(path: Path, shape: tuple) -> Path:
    """An npz whose images member's header declares `shape` but holds 8x8 grey images of 40 examples."""
    rng = np.random.default_rng(0)
    real = rng.integers(0, 255, (40, 8, 8), dtype=np.uint8)
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "|u1", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("images.npy", buffer.getvalue() + real.tobytes())
        for key, value in (("labels", np.arange(40) % 2), ("split", (np.arange(40) >= 30).astype(int))):
            member = io.BytesIO()
            np.save(member, value)
            z.writestr(f"{key}.npy", member.getvalue())
    return path


BROKEN_DATA = {
    "header claiming 10^12 images": (lambda p: _claiming(p, (10**12, 8, 8)), ("declares", "10**12")),
    "label 2^40": (lambda p: _npz(p, np.zeros((40, 8, 8), np.uint8), np.r_[np.arange(39) % 2, 2**40]), ("labels",)),
    "negative label": (lambda p: _npz(p, np.zeros((40, 8, 8), np.uint8), np.r_[np.arange(39) % 2, -1]), ("label -1",)),
    "one class": (lambda p: _npz(p, np.zeros((40, 8, 8), np.uint8), np.zeros(40, int)), ("at least two classes",)),
    "zero-size images": (lambda p: _npz(p, np.zeros((40, 0, 8), np.uint8), np.arange(40) % 2), ("no pixels",)),
}


@pytest.mark.parametrize("case", BROKEN_DATA)
def test_a_broken_data_file_is_named_not_blamed_on_the_sizes(tmp_path, capsys, case):
    make, needles = BROKEN_DATA[case]
    data = make(tmp_path / "data.npz")
    code, lines = run(_train(data, tmp_path / "run"), capsys)
    needles = tuple(n.replace("10**12", f"{10**12}") for n in needles)
    assert held("broken data file", code, lines, *needles, absent=("out of memory", "--hidden")), lines
    assert not (tmp_path / "run" / "manifest.json").exists()


MANIFEST_EDITS = {
    "negative n_models": (lambda m: {**m, "n_models": -3}, "n_models"),
    "epochs -3": (lambda m: {**m, "hparams": {**m["hparams"], "epochs": -3}}, "hparams.epochs"),
    "batch_size 0": (lambda m: {**m, "hparams": {**m["hparams"], "batch_size": 0}}, "hparams.batch_size"),
    "one class": (lambda m: {**m, "dataset": {**m["dataset"], "class_names": ["only"]}}, "two classes"),
    "nested 200,000 deep": (lambda m: "[" * 200_000 + "]" * 200_000, "manifest.json"),
}


@pytest.mark.parametrize("case", MANIFEST_EDITS)
@pytest.mark.parametrize("verb", ["merge", "fit"])
def test_a_silently_wrong_manifest_is_refused_naming_it(tiny_run, tmp_path, capsys, case, verb):
    run_path = shutil.copytree(tiny_run, tmp_path / "run")
    edit, needle = MANIFEST_EDITS[case]
    manifest = run_path / "manifest.json"
    changed = edit(json.loads(manifest.read_text()))
    manifest.write_text(changed if isinstance(changed, str) else json.dumps(changed))
    argv = ["merge", "--run", run_path] if verb == "merge" else ["fit", "--run", run_path, "--device", "cpu"]
    code, lines = run(argv, capsys)
    assert held("silently wrong manifest", code, lines, "manifest.json", needle), lines


@pytest.mark.parametrize("name", ["test:0\n", "test:0\r", "test:0\n-- summary", "test:\u00b2", "test:\u0663",
                                  "test:" + "9" * 5000, "train:1 \t"])
def test_target_names_with_line_breaks_or_foreign_digits_are_refused(name):
    with pytest.raises(TargetError) as raised:
        target_column(name, 10, 10)
    with pytest.raises(TargetError):
        parse_targets(f"train:0,{name}", 10, 10)
    shown = str(raised.value)
    ok = "\n" not in shown and "\r" not in shown and len(shown) < 300
    record_count("target name", "refused, one line" if ok else "FAILED")
    assert ok, shown
    assert target_column(" test:3 ", 10, 10) == 13  # spaces around a name stay harmless
