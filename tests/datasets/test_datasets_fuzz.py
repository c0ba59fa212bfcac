"""Hypothesis: any arrays saved as an npz dataset either load as a dataset that passes every check, or are
refused with one DatasetError; nothing else escapes (no numpy error, no traceback from the CLI)."""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from backend.datasets import DatasetError, load_dataset
from tests.conftest import record_count

DTYPES = [np.int64, np.int8, np.float32, np.float64, np.bool_]
MUTATIONS = ("none", "images-dtype", "images-shape", "labels-dtype", "labels-range", "labels-length", "split-values",
             "class-names", "drop-key", "empty-split", "nan-images")


@st.composite
def npz_members(draw):
    """A valid npz dataset with at most one thing wrong with it (the mutation)."""
    n = draw(st.integers(2, 12))
    channels = draw(st.sampled_from([None, 1, 3]))
    shape = (n, 4, 4) if channels is None else (n, 4, 4, channels)
    images = draw(hnp.arrays(np.uint8, shape))
    labels = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, 2)))
    split = np.array(["train", "test"] * (n // 2) + ["train"] * (n % 2))
    members = {"images": images, "labels": labels, "split": split}
    mutation = draw(st.sampled_from(MUTATIONS))
    if mutation == "images-dtype":
        members["images"] = images.astype(draw(st.sampled_from(DTYPES)))
    elif mutation == "images-shape":
        members["images"] = images.reshape(n, -1)[:, : draw(st.integers(1, 16))].reshape(n, 1, 1, -1)
    elif mutation == "labels-dtype":
        members["labels"] = labels.astype(draw(st.sampled_from([np.float32, np.float64, np.bool_])))
    elif mutation == "labels-range":
        labels = labels.copy()
        labels[draw(st.integers(0, n - 1))] = draw(st.sampled_from([-1, 3, 2**40]))
        members["labels"], members["class_names"] = labels, np.array(["a", "b", "c"])
    elif mutation == "labels-length":
        members["labels"] = labels[: draw(st.integers(0, n - 1))]
    elif mutation == "split-values":
        members["split"] = draw(hnp.arrays(np.int64, (n,), elements=st.integers(-1, 2)))
    elif mutation == "class-names":
        members["class_names"] = draw(st.sampled_from([np.array(["a", "a", "b"]), np.arange(3), np.array([["a"]])]))
    elif mutation == "drop-key":
        members.pop(draw(st.sampled_from(["images", "labels", "split"])))
    elif mutation == "empty-split":
        members["split"] = np.array(["train"] * n)
    elif mutation == "nan-images":
        members["images"] = np.full(shape, np.nan, dtype=np.float32)
    return members


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(members=npz_members())
def test_any_npz_loads_as_a_valid_dataset_or_is_one_dataset_error(tmp_path, members):
    path = tmp_path / "ds.npz"
    np.savez(path, **members)
    try:
        ds = load_dataset(f"npz:{path}")
    except DatasetError as exc:
        assert "\n" not in str(exc)
        record_count("hypothesis npz dataset", "refused with one DatasetError")
        return
    record_count("hypothesis npz dataset", "loaded and valid")
    for images, labels in ((ds.train_images, ds.train_labels), (ds.test_images, ds.test_labels)):
        assert images.dtype == np.uint8 and images.ndim == 4 and images.shape[3] in (1, 3)
        assert labels.dtype == np.int64 and len(labels) == len(images) > 0
        assert ((labels >= 0) & (labels < len(ds.class_names))).all()
