"""read_row against plain numpy indexing, for every layout np.load can hand back."""
from __future__ import annotations

import numpy as np
import pytest

from backend.store.rows import read_row


@pytest.mark.parametrize("dtype, shape", [(np.float32, (7, 5)), (np.uint8, (6, 4, 4, 3)), (bool, (5, 9)), (np.int64, (4,))])
def test_read_row_equals_indexing(tmp_path, dtype, shape):
    array = (np.random.default_rng(0).random(shape) * 200).astype(dtype)
    np.save(tmp_path / "a.npy", array)
    mapped = np.load(tmp_path / "a.npy", mmap_mode="r", allow_pickle=False)
    for i in (0, 2, len(array) - 1, -1):
        row = read_row(mapped, i)
        assert row.dtype == array.dtype and row.shape == array.shape[1:]
        np.testing.assert_array_equal(row, array[i])
    with pytest.raises(IndexError):
        read_row(mapped, len(array))


def test_read_row_falls_back_to_indexing_for_views_and_fortran_order(tmp_path):
    array = np.arange(60, dtype=np.float32).reshape(6, 10)
    np.save(tmp_path / "c.npy", array)
    np.save(tmp_path / "f.npy", np.asfortranarray(array))
    view = np.load(tmp_path / "c.npy", mmap_mode="r")[2:]
    np.testing.assert_array_equal(read_row(view, 1), array[3])
    np.testing.assert_array_equal(read_row(np.load(tmp_path / "f.npy", mmap_mode="r"), 4), array[4])
    np.testing.assert_array_equal(read_row(array, 5), array[5])
