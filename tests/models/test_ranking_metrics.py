"""Ranking metrics against hand-computed values, ties included; bootstrap interval sanity."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import ndcg_score

from quantrec.models.ranking_metrics import (
    RankingMetricError,
    hit_rate_at_k,
    mean_interval,
    ndcg_at_k,
    paired_difference_interval,
    recall_at_k,
    top_k,
)


def test_top_k_breaks_ties_to_the_lower_position() -> None:
    scores = np.array([0.5, 0.9, 0.5, 0.9, 0.1, 0.5])
    assert top_k(scores, 3).tolist() == [1, 3, 0]
    assert top_k(scores, 4).tolist() == [1, 3, 0, 2]
    assert top_k(scores, 10).tolist() == [1, 3, 0, 2, 5, 4]  # k > N: all, ordered


def test_top_k_refuses_nan_and_bad_k() -> None:
    with pytest.raises(RankingMetricError, match="NaN"):
        top_k(np.array([0.1, np.nan]), 1)
    with pytest.raises(RankingMetricError, match="at least 1"):
        top_k(np.array([0.1]), 0)


def test_recall_against_the_reference_top_k() -> None:
    assert recall_at_k(["a", "b", "c"], ["a", "c", "d"], 3) == pytest.approx(2 / 3)
    assert recall_at_k(["a", "b", "c", "z"], ["c", "b", "a", "y"], 3) == 1.0  # order-free
    assert recall_at_k(["a"], ["a", "b"], 5) == 0.5  # fewer than k candidates: of those held


def test_ndcg_by_hand() -> None:
    # relevant at ranks 2 and 4 of 4; three relevant items in all.
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(["x1", "r1", "x2", "r2"], {"r1", "r2", "r3"}, 4) == pytest.approx(dcg / ideal)
    # k cuts the list and the ideal: only rank 2 counts, ideal of 2 relevant items.
    assert ndcg_at_k(["x1", "r1", "x2", "r2"], {"r1", "r2", "r3"}, 2) == pytest.approx(
        (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    )
    assert ndcg_at_k(["r1"], {"r1"}, 10) == 1.0


def test_ndcg_with_tied_scores_follows_the_served_order() -> None:
    # Items 1 and 2 tie; the lower position (item "b", irrelevant) is served first.
    items = np.array(["a", "b", "c", "d"])
    scores = np.array([0.2, 0.7, 0.7, 0.1])
    served = items[top_k(scores, 2)]
    assert served.tolist() == ["b", "c"]
    assert ndcg_at_k(served, {"c"}, 2) == pytest.approx(1 / math.log2(3))
    # The relevant item listed first among the tied: it wins the tie and NDCG is 1.
    served = np.array(["a", "c", "b", "d"])[top_k(scores, 2)]
    assert ndcg_at_k(served, {"c"}, 2) == 1.0


def test_ndcg_matches_scikit_learn_without_ties() -> None:
    rng = np.random.default_rng(0)
    scores = rng.random(30)
    relevant = {3, 7, 11, 20}
    gains = np.isin(np.arange(30), list(relevant)).astype(float)
    served = top_k(scores, 10)
    expected = ndcg_score(gains[None, :], scores[None, :], k=10)
    assert ndcg_at_k(served, relevant, 10) == pytest.approx(expected)


def test_hit_rate() -> None:
    assert hit_rate_at_k(["x", "y", "r"], {"r"}, 3) == 1.0
    assert hit_rate_at_k(["x", "y", "r"], {"r"}, 2) == 0.0


def test_metrics_refuse_a_query_without_positives() -> None:
    with pytest.raises(RankingMetricError, match="no relevant"):
        ndcg_at_k(["a"], set(), 10)
    with pytest.raises(RankingMetricError, match="no relevant"):
        hit_rate_at_k(["a"], set(), 10)


def test_paired_interval_of_identical_values_is_zero() -> None:
    values = np.random.default_rng(1).random(50)
    assert paired_difference_interval(values, values.copy()) == (0.0, 0.0)


def test_intervals_hold_the_mean_are_seeded_and_see_a_consistent_shift() -> None:
    rng = np.random.default_rng(2)
    reference = rng.random(200)
    values = reference - 0.05 + rng.normal(0, 0.01, 200)
    low, high = mean_interval(values, seed=3)
    assert low < values.mean() < high
    assert mean_interval(values, seed=3) == (low, high)
    low, high = paired_difference_interval(values, reference, seed=3)
    assert high < 0 and low < -0.05 < high
    with pytest.raises(RankingMetricError, match="same queries"):
        paired_difference_interval(values, reference[:10])
