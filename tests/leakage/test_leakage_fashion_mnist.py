"""The leak candidate lists on real near-duplicates: a run on the Fashion-MNIST slice, whose two real
train-test pairs (the same product photographed twice) every list must rank first."""
import json

import numpy as np
import pytest

from backend.datasets.fashion_mnist import CLASS_NAMES
from backend.leakage.analysis import load_candidates
from backend.store.run_dir import Run
from tests.conftest import FASHION_MNIST_PAIRS

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


def test_results_counts_the_committed_pairs_in_the_slice(run, fashion_mnist_slice, tmp_path):
    """`results` on the real slice with the committed ground truth mapped to the slice's positions: the pairs whose
    two images the slice holds are the two above, and every list ranks both in its top 10."""
    from backend.leakage.duplicates import read_pairs, write_pairs
    from tests.conftest import FASHION_SLICE, ROOT, run_cli

    _, pairs = fashion_mnist_slice
    test_ids, train_ids, rms = read_pairs(ROOT / "data" / "fashion-mnist" / "near_duplicates.csv")
    # The slice's positions: the first FASHION_SLICE images, then the pair images in file order (conftest).
    extra_test = sorted({t for t, _ in FASHION_MNIST_PAIRS})
    extra_train = sorted({r for _, r in FASHION_MNIST_PAIRS})
    test_map = {**{j: j for j in range(FASHION_SLICE[1])}, **{t: FASHION_SLICE[1] + k for k, t in enumerate(extra_test)}}
    train_map = {**{i: i for i in range(FASHION_SLICE[0])},
                 **{r: FASHION_SLICE[0] + k for k, r in enumerate(extra_train)}}
    inside = [(test_map[t], train_map[r], d) for t, r, d in zip(test_ids.tolist(), train_ids.tolist(), rms.tolist())
              if t in test_map and r in train_map]
    assert sorted((t, r) for t, r, _ in inside) == sorted(pairs)
    csv = tmp_path / "pairs.csv"
    write_pairs(csv, *(np.array(column) for column in zip(*inside)))
    run_cli("results", "--run", run.dir, "--pairs", csv, "--out", tmp_path / "report")
    report = json.loads((tmp_path / "report" / "results.json").read_text())
    assert report["leakage"]["lists"] == {"top weights": 2, "features": 2, "pixels": 2, "combined": 2}
    assert report["leakage"]["queue_pairs"] == 2
