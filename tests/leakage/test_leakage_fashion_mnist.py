"""The leak candidate lists on real near-duplicates: a run on the Fashion-MNIST slice, whose two real
train-test pairs (the same product photographed twice) every list must rank first."""
import json

import numpy as np
import pytest

from backend.datasets.fashion_mnist import CLASS_NAMES
from backend.leakage.analysis import load_candidates
from backend.store.run_dir import Run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(fashion_slice_data_dir) -> Run:
    return Run(fashion_slice_data_dir / "runs" / "fashion-slice")


def test_the_manifest_records_the_dataset_and_its_class_names(run, fashion_mnist_slice):
    folder, _ = fashion_mnist_slice
    dataset = json.loads((run.dir / "manifest.json").read_text())["dataset"]
    assert dataset["spec"] == dataset["name"] == f"idx:{folder}"
    assert dataset["class_names"] == list(CLASS_NAMES) and run.class_names == list(CLASS_NAMES)
    assert dataset["image_shape"] == [28, 28, 1] and run.images.shape == (2504, 28, 28, 1)


def test_every_list_ranks_each_real_pair_first(run, fashion_mnist_slice):
    _, pairs = fashion_mnist_slice
    c = load_candidates(run)
    for test, train in pairs:
        for name in ("weight_top", "feature_nn", "pixel_nn", "combined"):
            assert getattr(c, name)[test, 0] == train, (name, test, getattr(c, name)[test])
    # The review queue puts both pair images among its first ten of 502.
    assert {t for t, _ in pairs} <= set(c.queue[:10].tolist()), c.queue[:10]
    assert np.all(c.pixel_similarity[[t for t, _ in pairs], 0] > 0.99)
