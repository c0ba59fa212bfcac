"""Every CLI input is checked at the edge: hypothesis over the numeric flags (each accepted value is valid by
an independent rule, each refused one is exit 2 and one line naming the flag), and the hostile cases of
issue 17, each refused with exit 2, one line naming the argument, and no run directory left behind."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from precompute import cli
from tests.conftest import FAST_TRAIN, record_count


def parse(argv: list[str], capsys) -> tuple[int, str]:
    """(exit code, stderr) of parsing argv alone: 0 when the parser accepts it."""
    capsys.readouterr()
    try:
        cli.build_parser().parse_args(cli.attach_negative_values(argv))
    except SystemExit as exc:
        return int(exc.code), capsys.readouterr().err
    return 0, ""


def as_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def as_int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


# flag -> the rule a value must satisfy, stated independently of precompute/args.py
RULES = {
    "--alpha": lambda t: (v := as_float(t)) is not None and math.isfinite(v) and 0 < v < 1,
    "--lr": lambda t: (v := as_float(t)) is not None and math.isfinite(v) and 0 < v <= 100,
    "--width": lambda t: (v := as_float(t)) is not None and math.isfinite(v) and 0 < v <= 64,
    "--hidden": lambda t: (v := as_int(t)) is not None and 1 <= v <= 65536,
    "--epochs": lambda t: (v := as_int(t)) is not None and 1 <= v <= 100_000,
    "--models": lambda t: (v := as_int(t)) is not None and 0 <= v <= 10_000_000,
    "--seed": lambda t: (v := as_int(t)) is not None and v >= 0,
    "--batch-models": lambda t: (v := as_int(t)) is not None and v >= 1,
}
NUMBERS = st.one_of(
    st.floats(0, 2).map(repr),
    st.integers(-3, 200).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-10**25, 10**25).map(str),
    st.sampled_from(["nan", "inf", "-inf", "1e-4", "1e400", "0", "1", "-1", "0x10", "", " ", "½", "1_000", "1e3"]),
    st.text(max_size=6),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flag=st.sampled_from(sorted(RULES)), value=NUMBERS)
def test_numeric_flags_accept_exactly_the_valid_values(capsys, flag, value):
    argv = ["train", "--models", "4", "--out", "r", flag, value] if flag != "--models" else ["train", "--out", "r", flag, value]
    if value.startswith("-") and not value[1:2].isdigit() and value[1:2] != ".":
        argv[-2:] = [f"{flag}={value}"]  # a value argparse would take for an option: give it as --flag=VALUE
    code, err = parse(argv, capsys)
    valid = RULES[flag](value)
    record_count("hypothesis CLI flag values", "accepted (valid)" if code == 0 else "refused, exit 2, one line")
    assert code == (0 if valid else 2), (flag, value, err)
    if not valid:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and f"argument {flag}" in lines[0], err


def run(argv: list, capsys) -> tuple[int, list[str]]:
    """cli.main in-process: (exit code, stderr lines without progress bars)."""
    capsys.readouterr()
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exc:
        code = int(exc.code)
    err = capsys.readouterr().err
    return code, [line for raw in err.splitlines() for line in [raw.split("\r")[-1].strip()]
                  if line and "%|" not in line]


HOSTILE = [  # (argv with OUT for a fresh path, text the line must hold)
    (["train", "--models", "4", "--out", "OUT", "--lr", "nan"], "--lr"),
    (["train", "--models", "4", "--out", "OUT", "--lr", "inf"], "--lr"),
    (["train", "--models", "4", "--out", "OUT", "--width", "-1"], "--width"),
    (["train", "--models", "4", "--out", "OUT", "--width", "nan"], "--width"),
    (["train", "--models", "4", "--out", "OUT", "--alpha", "1e-4"], "--alpha"),
    (["train", "--models", "1000000000000", "--out", "OUT"], "--models"),
    (["train", "--models", "4", "--out", "OUT", "--hidden", "1000000000"], "--hidden"),
    (["train", "--models", "4", "--out", "OUT", "--shard", "-1/2"], "--shard"),
    (["train", "--models", "4", "--out", "OUT", "--shard", "2/2"], "--shard"),
    (["train", "--models", "4", "--out", "OUT", "--shard", "a/b"], "--shard"),
    (["all", "--models", "4", "--out", "OUT", "--heldout-seed", "-1"], "--heldout-seed"),
    (["fit", "--run", "OUT", "--val-frac", "0"], "--val-frac"),
    (["fit", "--run", "OUT", "--val-frac", "1"], "--val-frac"),
    (["fit", "--run", "OUT", "--eps", "0"], "--eps"),
    (["fit", "--run", "OUT", "--eps", "2"], "--eps"),
    (["fit", "--run", "OUT", "--memory", "0"], "--memory"),
    (["fit", "--run", "OUT", "--memory", "4 potatoes"], "--memory"),
    (["fit", "--run", "OUT", "--block-targets", "0"], "--block-targets"),
    (["fit", "--run", "OUT", "--dtype", "int8"], "--dtype"),
    (["plant-leaks", "--noise", "inf", "--out", "OUT"], "--noise"),
    (["plant-leaks", "--noise", "nan", "--out", "OUT"], "--noise"),
    (["fit", "--run", "OUT"], "not exist"),
]


@pytest.mark.parametrize("argv, says", HOSTILE, ids=[" ".join(a[:1] + a[-2:]) for a, _ in HOSTILE])
def test_hostile_arguments_are_one_line_exit_2_and_leave_nothing(tmp_path, capsys, argv, says):
    out = tmp_path / "out"
    code, lines = run([out if a == "OUT" else a for a in argv], capsys)
    record_count("hostile CLI arguments", "exit 2, one line" if code == 2 and len(lines) == 1 else "FAILED")
    assert code == 2 and len(lines) == 1, lines
    assert says in lines[0], lines
    assert not out.exists()


def test_train_into_a_file_and_plant_leaks_into_a_directory_are_refused(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    code, lines = run(["train", "--models", "2", "--out", afile / "run"], capsys)
    assert code == 2 and len(lines) == 1 and "is a file" in lines[0], lines
    code, lines = run(["plant-leaks", "--out", tmp_path], capsys)
    assert code == 2 and len(lines) == 1 and "is a directory" in lines[0], lines
    assert afile.read_text() == "mine"


def test_plant_leaks_keeps_an_existing_file_unless_forced(tmp_path, capsys):
    out = tmp_path / "planted.npz"
    out.write_bytes(b"precious")
    code, lines = run(["plant-leaks", "--n", "3", "--out", out], capsys)
    assert code == 2 and len(lines) == 1 and "--force" in lines[0], lines
    assert out.read_bytes() == b"precious"
    code, _ = run(["plant-leaks", "--n", "3", "--out", out, "--force"], capsys)
    assert code == 0 and np.load(out)["planted_test"].shape == (3,)


def test_eval_refuses_an_empty_heldout_run_and_keeps_existing_metrics(tmp_path, capsys, tiny_run):
    import shutil

    run_dir = shutil.copytree(tiny_run, tmp_path / "run")
    (run_dir / "metrics.json").write_text('{"kept": true}')
    code, lines = run(["train", "--models", "0", "--out", tmp_path / "empty", *FAST_TRAIN], capsys)
    assert code == 0
    code, lines = run(["eval", "--run", run_dir, "--heldout", tmp_path / "empty", "--no-complexity", "--force"], capsys)
    assert code == 2 and len(lines) == 1 and "holds no models" in lines[0], lines
    code, lines = run(["eval", "--run", run_dir, "--heldout", tiny_run, "--no-complexity"], capsys)
    assert code == 2 and len(lines) == 1 and "--force" in lines[0], lines
    assert (run_dir / "metrics.json").read_text() == '{"kept": true}'


def test_removal_specs_out_of_range_name_the_flag(cf_run, capsys):
    base = ["counterfactual", "--run", cf_run, "--target", "test:0", "--models", "1", "--control-models", "8",
            "--device", "cpu", "--remove"]
    for spec, says in (("train:99999999999999999999", "bad target"), ("random:999999", "more than the run's"),
                       ("train:-1", "bad target"), ("train:99999", "out of range"), ("top:x", "bad --remove")):
        code, lines = run([*base, spec], capsys)
        assert code == 2 and len(lines) == 1 and says in lines[0] and "--remove" in lines[0], (spec, lines)


def test_cf_eval_with_zero_targets_is_refused_before_anything_is_written(cf_run, capsys):
    code, lines = run(["cf-eval", "--run", cf_run, "--targets", "0", "--control-models", "8", "--device", "cpu"], capsys)
    assert code == 2 and len(lines) == 1 and "--targets" in lines[0], lines
    assert not (cf_run / "counterfactual_eval.json").exists()


def test_a_bug_is_one_line_pointing_to_debug_and_exit_1(monkeypatch, capsys, tmp_path):
    from precompute import train

    def boom(args):
        raise KeyError("surprise")
    monkeypatch.setattr(train, "cmd_merge", boom)
    code, lines = run(["merge", "--run", tmp_path], capsys)
    assert code == 1 and len(lines) == 1 and "--debug" in lines[0] and "KeyError" in lines[0], lines
    capsys.readouterr()
    assert cli.main(["--debug", "merge", "--run", str(tmp_path)]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_os_errors_are_one_line_and_exit_2(monkeypatch, capsys, tmp_path):
    import errno

    from precompute import train

    for number in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EIO):
        def fail(args, number=number):
            raise OSError(number, "simulated", str(tmp_path / "f"))
        monkeypatch.setattr(train, "cmd_merge", fail)
        code, lines = run(["merge", "--run", tmp_path], capsys)
        assert code == 2 and len(lines) == 1 and str(tmp_path / "f") in lines[0], lines
    monkeypatch.setattr(train, "cmd_merge", lambda args: (_ for _ in ()).throw(MemoryError()))
    code, lines = run(["merge", "--run", tmp_path], capsys)
    assert code == 2 and len(lines) == 1 and "memory" in lines[0], lines
