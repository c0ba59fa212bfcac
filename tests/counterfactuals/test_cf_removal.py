"""Removal sets: the paper's heuristics against brute force, and the requests that are refused."""
from __future__ import annotations

import numpy as np
import pytest

from backend.counterfactuals.removal import (RemovalError, competitor_class, default_max_remove, format_ids, parse_ids,
                                             removal_set, validate_removal)

LABELS = np.repeat(np.arange(3), [4, 5, 6])  # 15 training images in 3 classes
NAMES = ["a", "b", "c"]


def test_valid_set_is_sorted_and_deduplicated():
    np.testing.assert_array_equal(validate_removal([7, 2, 7, 0], LABELS, NAMES, 10), [0, 2, 7])


@pytest.mark.parametrize("ids, cap, pattern", [
    ([], 10, "empty"),
    ([3, 15], 10, r"training index 15 is out of range: the run has 15 training images \(0..14\)"),
    ([-1], 10, "index -1 is out of range"),
    (range(15), 20, "removing all 15 training images"),
    ([0, 1, 2, 3, 9], 10, "every training image of class 'a' \\(4 images\\)"),
    ([0, 4, 5, 9, 10], 4, "5 images, more than this run's cap of 4"),
    (np.array([1.5]), 10, "must be integers"),
])
def test_bad_requests_are_refused_with_one_line(ids, cap, pattern):
    with pytest.raises(RemovalError, match=pattern) as info:
        validate_removal(ids, LABELS, NAMES, cap)
    assert "\n" not in str(info.value)


def test_default_cap_is_1280_or_half_the_set():
    assert default_max_remove(50_000) == 1280 and default_max_remove(1297) == 648


def test_top_and_bottom_match_brute_force_and_never_remove_a_zero_weight():
    rng = np.random.default_rng(0)
    w = rng.normal(size=40)
    w[::3] = 0.0  # a sparse datamodel: 14 zero weights
    brute_top = [i for _, i in sorted((-w[i], i) for i in range(40) if w[i] > 0)][:20]
    brute_bottom = [i for _, i in sorted((w[i], i) for i in range(40) if w[i] < 0)][:20]
    assert len(brute_top) < 20 and len(brute_bottom) < 20
    np.testing.assert_array_equal(removal_set("top", 20, w, np.zeros(40, int), 0, rng), brute_top)
    np.testing.assert_array_equal(removal_set("bottom", 20, w, np.zeros(40, int), 0, rng), brute_bottom)


def test_random_heuristics_draw_distinct_images_of_the_right_pool():
    rng = np.random.default_rng(1)
    same = removal_set("random-class", 3, np.zeros(15), LABELS, 2, rng)
    assert len(set(same.tolist())) == 3 and (LABELS[same] == 2).all()
    anywhere = removal_set("random", 9, np.zeros(15), LABELS, 2, rng)
    assert len(set(anywhere.tolist())) == 9 and anywhere.max() < 15
    with pytest.raises(RemovalError, match="unknown removal heuristic 'best'"):
        removal_set("best", 3, np.zeros(15), LABELS, 0, rng)


def test_competitor_is_the_class_with_most_negative_weight():
    w = np.zeros(15)
    w[[4, 5]] = -0.3   # class b: -0.6
    w[[9, 10, 11]] = -0.15  # class c: -0.45
    w[[0, 1]] = -5.0   # the target's own class never counts
    assert competitor_class(w, LABELS, 0, 3) == 1
    assert competitor_class(np.zeros(15), LABELS, 0, 3) == 1  # tie: lowest wrong class


def test_an_id_list_round_trips_in_order_with_runs_as_ranges():
    rng = np.random.default_rng(0)
    for _ in range(200):
        ids = list(dict.fromkeys(rng.integers(0, 60, size=rng.integers(0, 40)).tolist()))
        text = format_ids(ids)
        assert parse_ids(text, 60) == ids
        runs = 1 + sum(b != a + 1 for a, b in zip(ids, ids[1:])) if ids else 0  # one part per run of consecutive ids
        assert len([part for part in text.split(",") if part]) == runs
    assert format_ids([3, 10, 11, 12, 13, 14, 7]) == "3,10-14,7"
    assert parse_ids(" 5, 2-4 ,5,", 10) == [5, 2, 3, 4]


@pytest.mark.parametrize("text, pattern", [("3,x", "part 'x'"), ("4-2", "part '4-2'"), ("-3", "part '-3'"),
                                           ("1-", "part '1-'"), ("2,60", "index 60 is out of range"),
                                           ("50-70", "index 70 is out of range")])
def test_a_bad_id_list_is_one_line_naming_the_part(text, pattern):
    with pytest.raises(RemovalError, match=pattern) as info:
        parse_ids(text, 60)
    assert "\n" not in str(info.value)
