"""Agreement statistics against Cohen's (1960) formula by counting, and Fleiss' (1971) published example and formula."""
import numpy as np
import pytest

from backend.leakage.agreement import category_counts, cohen_kappa, fleiss_kappa, pairwise_cohen_kappa


def kappa_by_counting(a, b) -> float:
    """(p_o − p_e) / (1 − p_e) from the agreement table, counted item by item (Cohen 1960)."""
    labels = sorted(set(a) | set(b))
    table = {(x, y): 0 for x in labels for y in labels}
    for x, y in zip(a, b):
        table[x, y] += 1
    n = len(a)
    p_o = sum(table[x, x] for x in labels) / n
    p_e = sum(sum(table[x, y] for y in labels) * sum(table[y, x] for y in labels) for x in labels) / n ** 2
    return (p_o - p_e) / (1 - p_e)


def test_cohen_kappa_reproduces_the_worked_example():
    # Wikipedia ("Cohen's kappa", simple example): 50 items, 20 yes-yes, 5 yes-no, 10 no-yes, 15 no-no; κ = 0.4.
    a = np.array([1] * 25 + [0] * 25)
    b = np.array([1] * 20 + [0] * 5 + [1] * 10 + [0] * 15)
    assert cohen_kappa(a, b) == pytest.approx(0.4)


@pytest.mark.parametrize("seed", range(5))
def test_cohen_kappa_matches_the_formula(seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2 + seed % 2, size=40)
    b = np.where(rng.random(40) < 0.7, a, rng.integers(0, 3, size=40))
    assert cohen_kappa(a, b) == pytest.approx(kappa_by_counting(a.tolist(), b.tolist()))


def test_cohen_kappa_is_nan_when_undefined():
    assert np.isnan(cohen_kappa(np.array([1, 1, 1]), np.array([1, 1, 1])))
    assert np.isnan(cohen_kappa(np.array([]), np.array([])))
    assert cohen_kappa(np.array([0, 1, 0, 1]), np.array([0, 1, 0, 1])) == 1.0


def test_fleiss_kappa_reproduces_the_worked_example():
    # Fleiss (1971) as tabulated on Wikipedia ("Fleiss' kappa", worked example): 10 items, 14 raters, κ = 0.210.
    table = np.array([
        [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
    ])
    assert fleiss_kappa(table) == pytest.approx(0.2099, abs=5e-4)


def fleiss_by_hand(table):
    """Fleiss' κ written out term by term (statsmodels' inter_rater.fleiss_kappa formula), constant raters."""
    table = np.asarray(table, float)
    n_items, n_raters = len(table), table[0].sum()
    p_j = table.sum(0) / (n_items * n_raters)
    p_i = ((table ** 2).sum(1) - n_raters) / (n_raters * (n_raters - 1))
    p_bar, p_e = p_i.mean(), (p_j ** 2).sum()
    return (p_bar - p_e) / (1 - p_e)


def test_fleiss_kappa_matches_the_formula_and_scotts_pi_for_two_raters():
    rng = np.random.default_rng(7)
    ratings = np.where(rng.random((60, 4)) < 0.8, rng.integers(0, 2, size=(60, 1)), rng.integers(0, 2, size=(60, 4)))
    table = category_counts(ratings.astype(float), np.array([0, 1]))
    assert fleiss_kappa(table) == pytest.approx(fleiss_by_hand(table))
    # Two raters: Fleiss' κ is Scott's π, whose chance term pools both raters' label frequencies.
    a, b = ratings[:, 0], ratings[:, 1]
    pooled = np.concatenate([a, b]).mean()
    expected = pooled ** 2 + (1 - pooled) ** 2
    scott = ((a == b).mean() - expected) / (1 - expected)
    assert fleiss_kappa(category_counts(ratings[:, :2].astype(float), np.array([0, 1]))) == pytest.approx(scott)


def test_fleiss_kappa_with_missing_ratings_uses_the_items_rated_twice_or_more():
    ratings = np.array([[1, 1, np.nan], [0, 0, 0], [1, np.nan, np.nan], [0, 1, 1], [np.nan, np.nan, np.nan]])
    table = category_counts(ratings, np.array([0, 1]))
    np.testing.assert_array_equal(table, [[0, 2], [3, 0], [0, 1], [1, 2], [0, 0]])
    # By hand over items 0, 1, 3: P_i = 1, 1, 1/3; pooled p = (4/8, 4/8) -> P_e = 1/2.
    assert fleiss_kappa(table) == pytest.approx(((1 + 1 + 1 / 3) / 3 - 0.5) / 0.5)
    assert np.isnan(fleiss_kappa(np.array([[0, 1], [1, 0]])))


def test_pairwise_kappa_uses_the_items_both_annotators_rated():
    rng = np.random.default_rng(9)
    ratings = rng.integers(0, 2, size=(50, 3)).astype(float)
    ratings[rng.random(ratings.shape) < 0.3] = np.nan
    kappa, overlap = pairwise_cohen_kappa(ratings)
    for i in range(3):
        assert overlap[i, i] == (~np.isnan(ratings[:, i])).sum() and kappa[i, i] == 1.0
        for j in range(3):
            if i != j:
                both = ~np.isnan(ratings[:, i]) & ~np.isnan(ratings[:, j])
                assert overlap[i, j] == both.sum()
                assert kappa[i, j] == pytest.approx(kappa_by_counting(ratings[both, i].tolist(), ratings[both, j].tolist()))
