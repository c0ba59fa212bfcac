"""What the CLI prints: the plan of `all`, one summary line per stage on stderr, and JSON on stdout only with --json."""
from __future__ import annotations

import json
import re

import numpy as np
from sklearn.datasets import load_digits

from tests.conftest import run_cli


def small_dataset(path) -> str:
    digits = load_digits()
    np.savez(path, images=np.round(digits.images[:150] * 255 / 16).astype(np.uint8), labels=digits.target[:150],
             split=np.where(np.arange(150) < 100, "train", "test"))
    return f"npz:{path}"


def test_all_prints_a_plan_an_estimate_and_one_line_per_stage(tmp_path):
    spec = small_dataset(tmp_path / "small.npz")
    out = tmp_path / "run"
    proc = run_cli("all", "--dataset", spec, "--models", "20", "--heldout-models", "10", "--batch-models", "5",
                   "--epochs", "2", "--hidden", "8", "--no-complexity", "--n-lambdas", "3", "--device", "cpu", "--out", out)
    assert proc.stdout == ""
    lines = [line for line in proc.stderr.replace("\r", "\n").splitlines() if line.strip() and "|" not in line]
    assert lines[0].startswith(f"plan for {out} (") and "100 train / 50 test" in lines[0]
    assert [line.split()[1] for line in lines[1:5]] == ["train", "fit", "train", "eval"]
    assert "20 models (20 to train)" in lines[1] and "150 datamodels" in lines[2] and "10 held-out" in lines[3]
    stages = [line.split(":")[0] for line in lines[5:]]
    assert stages == ["estimate", "train", "fit", "train", "eval", "all"], lines
    assert "to train all 30 models" in lines[5] and lines[6].startswith("train: 20 models in")
    assert " 0/0 " not in proc.stderr and "λ steps" in proc.stderr and "models" in proc.stderr

    quiet = run_cli("merge", "--run", out, in_process=True)
    assert quiet.stdout == "" and re.fullmatch(rf"merge: 20 models in {re.escape(str(out))} "
                                               r"\(wrote 0 B of [0-9.]+ KiB \(0%\), deleted 0 shards\)", quiet.stderr.strip())
    again = json.loads(run_cli("merge", "--run", out, "--json", in_process=True).stdout)  # nothing new: none appended
    assert again["run"] == str(out) and again["n_models"] == 20 and again["added"] == again["bytes_written"] == 0


def test_the_merge_part_counts_its_shards_in_words():
    from precompute.report import merge_part

    lines = [merge_part({"bytes_written": 2048, "run_bytes": 4096, "shards_deleted": n}) for n in (0, 1, 2)]
    assert lines == ["wrote 2.0 KiB of 4.0 KiB (50%), deleted 0 shards", "wrote 2.0 KiB of 4.0 KiB (50%), deleted 1 shard",
                     "wrote 2.0 KiB of 4.0 KiB (50%), deleted 2 shards"]
