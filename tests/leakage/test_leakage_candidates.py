"""Candidate lists against brute force: numpy argsort, brute-force cosine and correlation, dictionary rank
fusion, AP as the mean precision at each positive counted by hand."""
import numpy as np
import pytest
from scipy import ndimage

from backend.leakage import candidates as lc
from backend.datasets import load_dataset
from backend.datasets.planted import plant_leaks
from backend.leakage.candidates import (NO_CANDIDATE, average_precision, feature_neighbours, fuse_lists, fuse_scores,
                                        pixel_neighbours, ratio_test, recall_at_k, weight_extremes)


def sparse_weights(n_rows, n_cols, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(n_rows, n_cols)).astype(np.float32)
    w[rng.random(w.shape) < 0.7] = 0.0  # LASSO-like: most weights exactly zero
    w[0] = 0.0  # a datamodel with no weights at all
    w[1, :] = -np.abs(w[1])  # no positive weights
    return w


@pytest.mark.parametrize("k", [1, 7, 40])
def test_weight_extremes_match_argsort(tmp_path, monkeypatch, k):
    monkeypatch.setattr(lc, "ROW_BLOCK_BYTES", 3 * 40 * 4)  # three rows per block: exercises the blocking
    w = sparse_weights(11, 40)
    np.save(tmp_path / "w.npy", w)
    top, top_v, bottom, bottom_v = weight_extremes(np.load(tmp_path / "w.npy", mmap_mode="r"), k)
    assert top.shape == bottom.shape == (11, k) and top.dtype == np.int64 and top_v.dtype == np.float32
    for r, row in enumerate(w):
        want_top = [i for i in np.argsort(-row, kind="stable")[:k] if row[i] > 0]
        want_bottom = [i for i in np.argsort(row, kind="stable")[:k] if row[i] < 0]
        np.testing.assert_array_equal(top[r], want_top + [NO_CANDIDATE] * (k - len(want_top)))
        np.testing.assert_array_equal(bottom[r], want_bottom + [NO_CANDIDATE] * (k - len(want_bottom)))
        np.testing.assert_array_equal(top_v[r], np.where(top[r] >= 0, row[top[r]], 0))
        np.testing.assert_array_equal(bottom_v[r], np.where(bottom[r] >= 0, row[bottom[r]], 0))


def test_feature_neighbours_match_brute_force_cosine():
    rng = np.random.default_rng(1)
    train, test = rng.normal(size=(300, 24)), rng.normal(size=(40, 24))
    train[5] = 0.0  # a dead feature vector: cosine 0 with everything
    nn, sim = feature_neighbours(test, train, 12)
    unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)
    cosine = unit(test) @ unit(train).T
    np.testing.assert_array_equal(nn, np.argsort(-cosine, axis=1, kind="stable")[:, :12])
    np.testing.assert_allclose(sim, np.take_along_axis(cosine, nn, axis=1), atol=1e-5)


def test_pixel_neighbours_match_brute_force_correlation_at_the_best_shift():
    rng = np.random.default_rng(4)
    train = rng.integers(0, 256, size=(40, 6, 7, 2), dtype=np.uint8)
    test = rng.integers(0, 256, size=(9, 6, 7, 2), dtype=np.uint8)
    test[0] = train[3]
    neighbours, similarity = pixel_neighbours(test, train, 5, block=4)  # block 4: exercises the blocking
    assert neighbours.shape == similarity.shape == (9, 5) and neighbours.dtype == np.int64
    # Oracle: Pearson correlation (np.corrcoef) of every training image with every edge-repeating shift
    # (scipy.ndimage, mode "nearest") of the test image, best over the nine shifts.
    best = np.full((len(test), len(train)), -np.inf)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            moved = np.stack([ndimage.shift(t, (dy, dx, 0), order=0, mode="nearest") for t in test])
            r = np.corrcoef(moved.reshape(len(test), -1).astype(np.float64),
                            train.reshape(len(train), -1).astype(np.float64))[:len(test), len(test):]
            best = np.maximum(best, r)
    for j in range(len(test)):
        np.testing.assert_allclose(similarity[j], np.sort(best[j])[::-1][:5], atol=1e-5)
        np.testing.assert_allclose(best[j, neighbours[j]], similarity[j], atol=1e-5)
    assert neighbours[0, 0] == 3 and similarity[0, 0] == pytest.approx(1.0, abs=1e-5)


def test_pixel_list_finds_shifted_planted_copies_that_exact_alignment_misses():
    """The default planted set (1-px shift, noise and brightness 0.05): every copy is found."""
    arrays, truth = plant_leaks(load_dataset("digits"), n=30, noise=0.05, seed=0)
    test = arrays["images"][arrays["split"] == "test"]
    train = arrays["images"][arrays["split"] == "train"]
    tolerant, _ = pixel_neighbours(test, train, 10)
    aligned, _ = pixel_neighbours(test, train, 10, max_shift=0)
    assert recall_at_k(tolerant, truth["planted_test"], truth["planted_train"], 10) == 1.0
    assert recall_at_k(aligned, truth["planted_test"], truth["planted_train"], 10) < 0.5


def test_ratio_test_is_nearest_over_second_nearest_distance():
    sim = np.array([[1.0, 0.5, 0.1], [0.9, 0.9, 0.0], [0.8, 0.6, 0.2], [1.0, 1.0, 0.3]])
    d = np.sqrt(2 - 2 * sim[:, :2])
    np.testing.assert_allclose(ratio_test(sim), [0.0, 1.0, d[2, 0] / d[2, 1], 0.0])


def brute_fusion(lists, fusion_k):
    scores = {}
    for lst in lists:
        for rank, item in enumerate(lst, start=1):
            if item != NO_CANDIDATE:
                scores[item] = scores.get(item, 0.0) + 1.0 / (fusion_k + rank)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


@pytest.mark.parametrize("fusion_k", [0.5, 1, 60])
def test_fuse_lists_matches_a_dictionary_fusion(fusion_k):
    rng = np.random.default_rng(2)
    a = np.stack([rng.permutation(30)[:8] for _ in range(25)])
    b = np.stack([rng.permutation(30)[:5] for _ in range(25)])
    a[3, 4:] = NO_CANDIDATE
    b[4, :] = NO_CANDIDATE
    a[5, :], b[5, :3], b[5, 3:] = NO_CANDIDATE, [7, 8, 9], NO_CANDIDATE  # only three items: the rest is empty
    items, score = fuse_lists([a, b], 10, fusion_k)
    assert items.shape == score.shape == (25, 10)
    for r in range(25):
        want = brute_fusion([a[r], b[r]], fusion_k)[:10]
        got = [(int(i), float(s)) for i, s in zip(items[r], score[r]) if i != NO_CANDIDATE]
        assert [i for i, _ in got] == [i for i, _ in want]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=1e-6)
        assert (items[r, len(want):] == NO_CANDIDATE).all() and (score[r, len(want):] == 0).all()


def test_rank_fusion_keeps_each_lists_first_entry_near_the_top():
    # K = 1: an item first in one list and absent from the other (score 1/2) is outscored only by an item
    # ranked (2, <= 4) or (1, any), and tied by (3, 3).
    a = np.array([[0, 1, 2, 3, 4, 5, 6, 7]])
    b = np.array([[9, 1, 2, 3, 4, 5, 6, 8]])
    items, score = fuse_lists([a, b], 10)
    assert list(items[0, :4]) == [1, 0, 2, 9]
    np.testing.assert_allclose(score[0, :4], [2 / 3, 1 / 2, 1 / 2, 1 / 2])


def test_fuse_scores_matches_brute_force():
    rng = np.random.default_rng(3)
    s1, s2 = rng.normal(size=50), rng.integers(0, 5, size=50).astype(float)  # s2 full of ties
    order, fused = fuse_scores([s1, s2])
    rank = lambda s: np.array([1 + sum((s[j] > s[i]) or (s[j] == s[i] and j < i) for j in range(len(s))) for i in range(len(s))])
    want = 1 / (1 + rank(s1)) + 1 / (1 + rank(s2))
    np.testing.assert_allclose(fused, want, rtol=1e-6)
    np.testing.assert_array_equal(order, sorted(range(50), key=lambda i: (-want[i], i)))


def test_recall_and_average_precision():
    lists = np.array([[4, 2, 9], [1, NO_CANDIDATE, NO_CANDIDATE], [7, 8, 3], [0, 0, 0]])
    planted_test, planted_train = np.array([0, 1, 2]), np.array([9, 5, 7])
    assert recall_at_k(lists, planted_test, planted_train, 3) == pytest.approx(2 / 3)
    assert recall_at_k(lists, planted_test, planted_train, 1) == pytest.approx(1 / 3)
    rng = np.random.default_rng(4)
    scores = rng.normal(size=200)
    positives = rng.choice(200, size=17, replace=False)
    order = np.argsort(-scores)
    ranks = sorted(1 + list(order).index(p) for p in positives)  # 1-based positions of the positives
    by_hand = np.mean([(n + 1) / rank for n, rank in enumerate(ranks)])  # precision at each positive's rank
    assert average_precision(order, positives) == pytest.approx(by_hand)
    assert average_precision(np.array([3, 1, 0, 2]), np.array([1, 2])) == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert np.isnan(average_precision(np.array([0, 1]), np.array([], dtype=np.int64)))
