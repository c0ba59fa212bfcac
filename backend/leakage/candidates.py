"""Candidate train-test leaks: for each test image, the training images most likely to be its near-duplicate.

Three sources:
  * datamodels (Ilyas et al. 2022, Sec. 4.3): a training image that is a near-copy of a test image
    should carry a large positive weight in the test image's datamodel, since training on it raises
    the test margin;
  * the paper's representation baseline: the nearest training images by cosine similarity of
    penultimate features of a model trained on the full training set;
  * pixels, tolerant to small shifts: the nearest training images by pixel correlation, the best over
    every translation of the test image by up to a pixel. Near-duplicates are often a crop or a shift
    apart, and on 8x8 digits a one-pixel shift hides a copy from both other lists (it moves the copy
    farther from its source than most training images of its class), while this list finds it.

They are merged by reciprocal rank fusion (Cormack, Clarke & Büttcher 2009): an item at rank r of a
list scores 1 / (FUSION_K + r), summed over the lists. Ranks need no calibration between weights
(margin units) and cosines, and neither source can drown the other when it fails on a dataset (on
8x8 digits the datamodel list misses leaks the feature list finds at rank 1). FUSION_K is 1, not the
customary 60 (tuned for fusing many 1000-long lists): with a few lists and a cut at 10, K = 1 keeps each
list's first entry near the top of the fusion (its score 1/2 is beaten only by items that two lists rank
high, as (2, <= 4)), while agreement still counts: (2, 2) outscores (1, absent). With K = 60, any item
ranked 61st or better in two lists outscores a first place in one.

The review queue orders test images by the same fusion over the test set, of per-image statistics: the
largest datamodel weight, and the ratio test of Lowe (2004) in features and in pixels: nearest-neighbour
distance over second-nearest distance, small when one training image is far closer than all others, as a
duplicate is.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from backend.datasets.planted import shifted
from backend.lazy_import import lazy_module
from backend.ranking import NO_INDEX, top_k_rows

# Only finding candidates needs them; the Review page reads the stored lists (backend/lazy_import.py).
faiss = lazy_module("faiss")
torch = lazy_module("torch")

FUSION_K = 1
# Marks an empty slot in a candidate list (a sparse datamodel with fewer than k nonzero weights).
NO_CANDIDATE = -1
# Each list is fused from this many of its best entries; deeper entries would add at most 1/(K + 101).
FUSION_DEPTH = 100
ROW_BLOCK_BYTES = 64 << 20
# Pixel matches try every translation of the test image by up to this many pixels in each direction.
PIXEL_SHIFT = 1


def weight_extremes(weights: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The k largest positive and k most negative weights of each row (backend.ranking's rule), a block at a time.

    weights : ndarray of shape (n_rows, n_train), a memmap is fine
    Returns (top, top_values, bottom, bottom_values), each of shape (n_rows, min(k, n_train)): int64
    training positions and float32 weights, top by weight descending, bottom ascending (most negative
    first). A sparse datamodel may have fewer than k positive (negative) weights: the rest of its row
    is NO_CANDIDATE with value 0, so a zero weight is never offered as a candidate.
    """
    n_rows, n_train = weights.shape
    k = min(k, n_train)
    out = [np.full((n_rows, k), NO_CANDIDATE, dtype=np.int64), np.zeros((n_rows, k), dtype=np.float32),
           np.full((n_rows, k), NO_CANDIDATE, dtype=np.int64), np.zeros((n_rows, k), dtype=np.float32)]
    step = max(1, ROW_BLOCK_BYTES // max(1, n_train * 4))
    for lo in range(0, n_rows, step):
        block = np.asarray(weights[lo:lo + step], dtype=np.float32)
        for largest, (index, value) in ((True, out[:2]), (False, out[2:])):
            best = top_k_rows(block, k, largest=largest)
            keep = best != NO_INDEX
            index[lo:lo + step] = np.where(keep, best, NO_CANDIDATE)
            value[lo:lo + step] = np.where(keep, np.take_along_axis(block, np.where(keep, best, 0), axis=1), 0.0)
    return tuple(out)


def float32_unit_rows(x: np.ndarray) -> np.ndarray:
    """float32 copy of x (n, d) with rows scaled to unit L2 norm; all-zero rows stay zero."""
    x = np.array(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x


def feature_neighbours(test_features: np.ndarray, train_features: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k training images nearest to each test image by cosine similarity of features (exact faiss search).

    test_features : ndarray of shape (n_test, d); train_features : ndarray of shape (n_train, d)
    Returns (neighbours int64 (n_test, k'), similarity float32 (n_test, k')), k' = min(k, n_train),
    most similar first: an inner-product search (IndexFlatIP) over L2-normalised rows.
    """
    train = float32_unit_rows(train_features)
    index = faiss.IndexFlatIP(train.shape[1])
    index.add(train)
    similarity, neighbours = index.search(float32_unit_rows(test_features), min(k, len(train)))
    return neighbours.astype(np.int64), similarity.astype(np.float32)


def centred_unit_rows(images: np.ndarray) -> np.ndarray:
    """Images (n, H, W, C) as float32 rows minus their own mean, scaled to unit norm: inner products of
    these are pixel correlations, blind to a change of brightness or contrast. Flat images stay zero."""
    x = np.asarray(images, dtype=np.float32).reshape(len(images), -1)
    return float32_unit_rows(x - x.mean(axis=1, keepdims=True))


def pixel_neighbours(test_images: np.ndarray, train_images: np.ndarray, k: int, max_shift: int = PIXEL_SHIFT,
                     block: int = 1024, device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """The k training images most correlated in pixels with each test image, at its best shift.

    test_images : (n_test, H, W, C); train_images : (n_train, H, W, C); memmaps are read a block at a time.
    A training image's similarity is the largest correlation (`centred_unit_rows`) between it and any
    translation of the test image by up to max_shift pixels: exact products, a GEMM per translation and
    block of test images, on `device` (faiss's flat index ran 5x slower at 3,072 pixels: benchmarks/bench_pixels.py).
    Returns (neighbours int64 (n_test, k'), similarity float32 (n_test, k')), k' = min(k, n_train),
    most similar first, ties among them by lower training position.
    """
    n_train = len(train_images)
    k = min(k, n_train)
    train = torch.cat([torch.from_numpy(centred_unit_rows(train_images[lo:lo + block])).to(device)
                       for lo in range(0, n_train, block)])
    moves = [(dy, dx) for dy in range(-max_shift, max_shift + 1) for dx in range(-max_shift, max_shift + 1)]
    neighbours = np.empty((len(test_images), k), dtype=np.int64)
    similarity = np.empty((len(test_images), k), dtype=np.float32)
    for lo in range(0, len(test_images), block):
        images = np.asarray(test_images[lo:lo + block])
        best = None
        for dy, dx in moves:
            sims = torch.from_numpy(centred_unit_rows(shifted(images, dy, dx))).to(device) @ train.T
            best = sims if best is None else torch.maximum(best, sims, out=best)
        values, ids = (t.cpu().numpy() for t in torch.topk(best, k, dim=1))
        order = np.lexsort((ids, -values), axis=1)
        neighbours[lo:lo + block] = np.take_along_axis(ids, order, axis=1)
        similarity[lo:lo + block] = np.take_along_axis(values, order, axis=1)
    return neighbours, similarity


def ratio_test(similarity: np.ndarray) -> np.ndarray:
    """Lowe's ratio: distance to the nearest over distance to the second-nearest training image.

    similarity : ndarray of shape (n, >= 2), cosine similarities of unit vectors, most similar first
    Returns float ndarray of shape (n,) in [0, 1]; 0 when the nearest is an exact copy.
    """
    distance = np.sqrt(np.maximum(2.0 - 2.0 * np.asarray(similarity[:, :2], dtype=np.float64), 0.0))
    return np.divide(distance[:, 0], distance[:, 1], out=np.zeros(len(distance)), where=distance[:, 1] > 0)


def fuse_lists(lists: Sequence[np.ndarray], k: int, fusion_k: float = FUSION_K) -> tuple[np.ndarray, np.ndarray]:
    """Reciprocal rank fusion of ranked lists, row by row.

    lists : int ndarrays of shape (n, m_i), each row a ranking of item ids, best first, an id at most
            once per row; NO_CANDIDATE entries are empty slots
    Returns (items int64 (n, k), score float32 (n, k)): per row, the k items with the largest sum over
    lists of 1 / (fusion_k + rank), best first, ties by lower id; NO_CANDIDATE with score 0 fill rows
    with fewer than k distinct items.
    """
    ids = np.concatenate([np.asarray(lst, dtype=np.int64) for lst in lists], axis=1)
    n, width = ids.shape
    scores = np.concatenate([np.broadcast_to(1.0 / (fusion_k + np.arange(1, lst.shape[1] + 1)), lst.shape)
                             for lst in lists], axis=1)
    scores = np.where(ids == NO_CANDIDATE, 0.0, scores)
    # Sum each item's contributions: sort every row by id, then add up each run of equal ids at its start.
    order = np.argsort(ids, axis=1, kind="stable")
    ids, scores = np.take_along_axis(ids, order, axis=1), np.take_along_axis(scores, order, axis=1)
    first = np.ones((n, width), dtype=bool)
    first[:, 1:] = ids[:, 1:] != ids[:, :-1]
    run_start = np.maximum.accumulate(np.where(first, np.arange(width), 0), axis=1)
    totals = np.zeros((n, width))
    np.add.at(totals, (np.repeat(np.arange(n), width), run_start.ravel()), scores.ravel())
    valid = first & (ids != NO_CANDIDATE)
    # Sort key: valid items by score descending, then by id; everything else after them.
    best = np.lexsort((ids, np.where(valid, -totals, np.inf)), axis=1)[:, :k]
    items = np.where(np.take_along_axis(valid, best, axis=1), np.take_along_axis(ids, best, axis=1), NO_CANDIDATE)
    fused = np.where(items == NO_CANDIDATE, 0.0, np.take_along_axis(totals, best, axis=1))
    if items.shape[1] < k:
        pad = k - items.shape[1]
        items = np.pad(items, ((0, 0), (0, pad)), constant_values=NO_CANDIDATE)
        fused = np.pad(fused, ((0, 0), (0, pad)))
    return items, fused.astype(np.float32)


def fuse_scores(scores: Sequence[np.ndarray], fusion_k: float = FUSION_K) -> tuple[np.ndarray, np.ndarray]:
    """Reciprocal rank fusion of per-item scores (higher = more suspicious) into one order.

    scores : ndarrays of shape (n,)
    Returns (order int64 (n,), fused float32 (n,)): item positions best first, and each item's fused score
    (indexed by item). Tied scores take consecutive ranks, lower index first.
    """
    fused = np.zeros(len(scores[0]))
    for s in scores:
        ranks = np.empty(len(s), dtype=np.int64)
        ranks[np.argsort(-np.asarray(s, dtype=np.float64), kind="stable")] = np.arange(1, len(s) + 1)
        fused += 1.0 / (fusion_k + ranks)
    return np.argsort(-fused, kind="stable").astype(np.int64), fused.astype(np.float32)


def recall_at_k(lists: np.ndarray, planted_test: np.ndarray, planted_train: np.ndarray, k: int) -> float:
    """Fraction of planted (test, train) pairs whose train image is in the first k entries of its test's list.

    lists : int ndarray of shape (n_test, m), m >= k; planted_test, planted_train : int arrays of shape (n,)
    """
    if len(planted_test) == 0:
        return float("nan")
    found = (np.asarray(lists)[planted_test, :k] == np.asarray(planted_train)[:, None]).any(axis=1)
    return float(found.mean())


def average_precision(order: np.ndarray, positives: np.ndarray) -> float:
    """Average precision of a ranking: mean over positives of the precision at the positive's position.

    order : int ndarray of shape (n,), every item's position once, best first; positives : int array of the true items
    Returns nan when no positive is ranked. The rank is the score (no ties), so scikit-learn's step-wise
    average_precision_score is exactly the mean precision at each positive.
    """
    hit = np.isin(order, positives)
    if not hit.any():
        return float("nan")
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(hit, -np.arange(len(order))))
