"""Bad CLI input: one clear line on stderr, exit code 2, no traceback and no run left behind."""
from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import FAST_TRAIN, run_cli


def assert_clean_error(proc, pattern: str):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert pattern in proc.stderr, proc.stderr


@pytest.mark.parametrize("flag,value,pattern", [
    ("--alpha", "1.5", "outside (0, 1)"),
    ("--alpha", "0", "outside (0, 1)"),
    ("--alpha", "half", "not a number"),
    ("--models", "-3", "negative"),
    ("--seed", "x", "not an integer"),
    ("--batch-models", "0", "at least 1"),
])
def test_bad_numbers_are_refused(tmp_path, flag, value, pattern):
    args = {"--alpha": "0.5", "--models": "4", "--seed": "0"}
    args[flag] = value
    out = tmp_path / "r"
    proc = run_cli("train", *[x for kv in args.items() for x in kv], "--out", out, check=False)
    assert_clean_error(proc, pattern)
    assert not out.exists()


def test_unknown_dataset_leaves_no_run(tmp_path):
    out = tmp_path / "r"
    proc = run_cli("train", "--dataset", "mnist", "--models", "4", "--out", out, check=False)
    assert_clean_error(proc, "unknown dataset 'mnist'")
    assert not out.exists()


def test_bad_npz_dataset_leaves_no_run(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, images=np.zeros((4, 8, 8), np.uint8), labels=np.zeros(3, np.int64), split=np.zeros(4, np.int64))
    out = tmp_path / "r"
    proc = run_cli("train", "--dataset", f"npz:{path}", "--models", "4", "--out", out, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_foreign_out_directory_is_refused(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    proc = run_cli("train", "--models", "4", "--out", out, check=False)
    assert_clean_error(proc, "is not a run")
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]


def test_resume_with_other_settings_is_refused(tmp_path):
    out = tmp_path / "r"
    run_cli("train", "--models", "2", "--out", out, *FAST_TRAIN)
    proc = run_cli("train", "--models", "4", "--alpha", "0.3", "--out", out, *FAST_TRAIN, check=False)
    assert_clean_error(proc, "different alpha")
    assert np.load(out / "masks.npy").shape[0] == 2


def test_bad_shard_and_missing_cifar(tmp_path):
    assert_clean_error(run_cli("train", "--models", "4", "--out", tmp_path / "a", "--shard", "3/2", check=False), "--shard")
    proc = run_cli("train", "--dataset", "cifar10", "--data-dir", tmp_path / "nowhere", "--models", "4",
                   "--out", tmp_path / "b", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "--data-dir" in proc.stderr
    assert not (tmp_path / "b").exists()


def test_missing_fashion_mnist_and_a_truncated_idx_file_are_one_line(tmp_path):
    from backend.datasets.idx import FILES
    from tests.dataset_files import write_idx

    proc = run_cli("train", "--dataset", "fashion-mnist", "--data-dir", tmp_path / "nowhere", "--models", "4",
                   "--out", tmp_path / "a", check=False)
    assert_clean_error(proc, "apt-get install dataset-fashion-mnist")
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "a").exists()
    folder = tmp_path / "idx"
    folder.mkdir()
    for name in FILES:
        shape = (6, 4, 4) if "images" in name else (6,)
        write_idx(folder / f"{name}.gz", (np.arange(np.prod(shape)) % 2).astype(np.uint8).reshape(shape))
    truncated = folder / "t10k-images-idx3-ubyte.gz"
    truncated.write_bytes(truncated.read_bytes()[:-9])
    proc = run_cli("train", "--dataset", f"idx:{folder}", "--models", "4", "--out", tmp_path / "b", check=False)
    assert_clean_error(proc, f"{truncated} is not a complete gzip file")
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "b").exists()


def test_help_explains_every_verb():
    out = run_cli("--help").stdout
    assert "train" in out and "merge" in out
    train_help = run_cli("train", "--help").stdout
    for flag in ("--alpha", "--models", "--seed", "--out", "--device", "--batch-models", "--shard", "--dataset"):
        assert flag in train_help


_REST = '"alpha": 0.5, "seed": 0, "arch": "mlp", "hparams": {}, "n_models": 0'


@pytest.mark.parametrize("manifest,pattern", [('{"dataset": {"n_train": 10}, %s}' % _REST, "manifest.json is corrupt (no 'dataset.n_test' entry)"),
                                              ('{"dataset": "digits", %s}' % _REST, "('dataset' is a JSON str)"),
                                              ("{}", "manifest.json is corrupt (no 'dataset' entry)"),
                                              ("[]", "manifest.json is corrupt (a JSON list, not an object)")])
def test_a_manifest_without_its_dataset_entry_is_a_clean_error(tmp_path, manifest, pattern):
    (tmp_path / "manifest.json").write_text(manifest)
    assert_clean_error(run_cli("fit", "--run", tmp_path, check=False), pattern)
    assert_clean_error(run_cli("merge", "--run", tmp_path, check=False), pattern)
