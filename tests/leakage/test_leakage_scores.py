"""Annotation scores per pair and leakage scores per test image, against counting by hand."""
from datetime import datetime, timezone

import numpy as np

from backend.leakage.annotations import Vote
from backend.leakage.scores import image_scores, pair_scores, rating_matrix

NOW = datetime(2024, 1, 1, tzinfo=timezone.utc)
VOTES = [Vote(name, test, train, leak, NOW) for name, test, train, leak in [
    ("ann", 0, 5, True), ("bob", 0, 5, True), ("cy", 0, 5, False),
    ("ann", 0, 6, False), ("bob", 0, 6, False),
    ("ann", 2, 1, True),
    ("bob", 1, 9, False), ("cy", 1, 9, False),
]]


def test_pair_scores_are_the_fraction_of_annotators_marking_a_leak():
    pairs = pair_scores(VOTES)
    assert list(zip(pairs.test.tolist(), pairs.train.tolist())) == [(0, 5), (0, 6), (1, 9), (2, 1)]
    np.testing.assert_array_equal(pairs.n_votes, [3, 2, 2, 1])
    np.testing.assert_allclose(pairs.score, [2 / 3, 0, 0, 1])
    np.testing.assert_array_equal(pairs.conflict, [True, False, False, False])


def test_leakage_score_is_the_best_candidate_of_each_test_image():
    tests, scores = image_scores(pair_scores(VOTES))
    np.testing.assert_array_equal(tests, [0, 1, 2])
    np.testing.assert_allclose(scores, [2 / 3, 0, 1])


def test_rating_matrix_has_one_column_per_annotator_and_nan_where_not_voted():
    names, pairs, ratings = rating_matrix(VOTES)
    assert names == ["ann", "bob", "cy"]
    want = np.array([[1, 1, 0], [0, 0, np.nan], [np.nan, 0, 0], [1, np.nan, np.nan]])
    np.testing.assert_array_equal(ratings, want)


def test_no_votes():
    pairs = pair_scores([])
    assert len(pairs.test) == 0 and image_scores(pairs)[0].size == 0
    names, _, ratings = rating_matrix([])
    assert names == [] and ratings.shape == (0, 0)
