"""`python -m precompute near-duplicates`: the pair list it writes, read back, and one-line errors with exit code 2."""
import json

import numpy as np
import pytest

from backend.datasets import load_dataset
from backend.leakage.duplicates import near_duplicates, read_pairs
from tests.conftest import run_cli


def test_writes_every_pair_within_the_radius_and_finds_shifted_copies(tmp_path):
    planted = tmp_path / "planted.npz"
    truth = json.loads(run_cli("plant-leaks", "--n", "6", "--noise", "0", "--seed", "2", "--out", planted,
                               "--json").stdout)
    out = tmp_path / "pairs" / "near_duplicates.csv"
    summary = json.loads(run_cli("near-duplicates", "--dataset", f"npz:{planted}", "--radius", "20", "--out", out,
                                 "--json").stdout)
    ds = load_dataset(f"npz:{planted}")
    want = near_duplicates(ds.test_images, ds.train_images, 20.0, max_shift=1)
    got = read_pairs(out)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_allclose(got[2], want[2], atol=0.005)
    assert summary["pairs"] == len(want[0]) and summary["max_shift"] == 1
    # The planted copies are a pixel's shift of their originals: 5 of the 6 lie within 20 at their best shift (the
    # sixth lost a row of ink past the 8x8 border), none without trying shifts.
    planted_pairs = set(zip(truth["planted_test"], truth["planted_train"]))
    assert len(planted_pairs & set(zip(got[0].tolist(), got[1].tolist()))) == 5
    unshifted = near_duplicates(ds.test_images, ds.train_images, 20.0, max_shift=0)
    assert not planted_pairs & set(zip(unshifted[0].tolist(), unshifted[1].tolist()))


@pytest.mark.parametrize("text, message", [
    ("a,b,c\n", "is not a near-duplicate pair list"),
    ("test,train,rms\n1,2\n", "line 2 is not"),
    ("test,train,rms\n1,-2,0.5\n", "line 2 is not"),
])
def test_a_foreign_pair_list_is_refused_with_one_line(tmp_path, text, message):
    path = tmp_path / "pairs.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_pairs(path)


@pytest.mark.parametrize("args, message", [
    (["--radius", "-1"], "is negative"),
    (["--radius", "3", "--max-shift", "x"], "is not"),
    (["--radius", "3", "--dataset", "nope"], "unknown dataset"),
])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, args, message):
    out = tmp_path / "x.csv"
    proc = run_cli("near-duplicates", *args, "--out", out, check=False)
    assert proc.returncode == 2 and message in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()
