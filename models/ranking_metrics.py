"""Ranking quality of served top-k lists: recall@k against a reference ranking, NDCG@k and
HR@k on the day's positives, and bootstrap intervals over queries.

A *query* is one user with a candidate set; a pipeline serves its top k candidates as an
ordered list of item ids. Every metric here reads that served list, not a score vector:
what counts is what the user would be shown.

Ties: ``top_k`` orders candidates by score, highest first, and breaks equal scores by the
candidate's position in the candidate list (lower first), so one set of scores always gives
one list, whatever the sort algorithm or the number of threads. With candidates listed in
catalogue order this is "the lower catalogue position wins". NDCG@k then scores the list as
served (binary gains, ``1 / log2(rank + 1)`` at 1-based rank); it is not the tie-averaged
NDCG of McSherry & Najork (2008) that ``sklearn.metrics.ndcg_score`` computes by default,
because a server shows one order, not the average over the orders of its ties. Without
ties the two agree (a test checks it against scikit-learn).

Intervals: per-query values are resampled over queries with ``scipy.stats.bootstrap``
(percentile method, paired when two pipelines are compared on the same queries), so a
difference between two pipelines is judged on the queries both served.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
from scipy.stats import bootstrap

DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95


class RankingMetricError(ValueError):
    """A ranking metric cannot be computed: bad k, NaN scores, no relevant items, no queries."""


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` highest ``scores``, best first, ties to the lower position.

    Args:
        scores: float (N,), e.g. logits; NaN is refused.
        k: at least 1; more than N returns all N.

    Returns:
        int64 (min(k, N),) positions into ``scores``. O(N) selection plus a sort of the k
        chosen, so a 14k-candidate query costs no full sort.
    """
    scores = np.asarray(scores).reshape(-1)
    if k < 1:
        raise RankingMetricError(f"k must be at least 1, got {k}")
    if np.isnan(scores).any():
        raise RankingMetricError(
            f"{int(np.isnan(scores).sum())} of {scores.size} scores are NaN; a model that "
            "outputs NaN cannot rank (check its inputs and weights)"
        )
    n = scores.size
    if k >= n:
        chosen = np.arange(n)
    else:
        threshold = np.partition(scores, n - k)[n - k]  # the k-th largest score
        above = np.flatnonzero(scores > threshold)
        tied = np.flatnonzero(scores == threshold)[: k - above.size]
        chosen = np.concatenate((above, tied))
    # lexsort's last key is primary: score descending, then position ascending.
    return chosen[np.lexsort((chosen, -scores[chosen]))].astype(np.int64)


def recall_at_k(served: Sequence, reference: Sequence, k: int) -> float:
    """Share of the reference's top k that the served top k holds.

    Args:
        served, reference: item ids, best first (only the first k of each count).
        k: at least 1. When the reference holds fewer than k items (N < k) the share is
            of those it holds.
    """
    _check_k(k)
    truth = set(list(reference)[:k])
    if not truth:
        raise RankingMetricError("the reference ranking is empty: recall@k is undefined")
    return len(truth.intersection(list(served)[:k])) / len(truth)


def ndcg_at_k(served: Sequence, relevant: Collection, k: int) -> float:
    """Binary-gain NDCG@k of the served list: DCG / ideal DCG, in [0, 1].

    DCG = sum over the first k served items that are relevant of ``1 / log2(rank + 1)``
    (rank 1-based); the ideal DCG puts ``min(k, |relevant|)`` relevant items first.

    Raises:
        RankingMetricError: ``relevant`` is empty (the query has no positive: drop it).
    """
    _check_k(k)
    relevant = set(relevant)
    if not relevant:
        raise RankingMetricError(
            "the query has no relevant item: NDCG is undefined (keep queries with a positive)"
        )
    hits = np.array([item in relevant for item in list(served)[:k]], dtype=bool)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = discounts[: min(k, len(relevant))].sum()
    return float(discounts[: hits.size][hits].sum() / ideal)


def hit_rate_at_k(served: Sequence, relevant: Collection, k: int) -> float:
    """1.0 when any of the first k served items is relevant, else 0.0."""
    _check_k(k)
    relevant = set(relevant)
    if not relevant:
        raise RankingMetricError("the query has no relevant item: HR is undefined")
    return float(any(item in relevant for item in list(served)[:k]))


def mean_interval(
    values: np.ndarray,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-query ``values`` (float (Q,))."""
    values = _checked_values(values, "values")
    if np.all(values == values[0]):
        return float(values[0]), float(values[0])  # no spread: scipy would warn
    result = bootstrap(
        (values,),
        np.mean,
        vectorized=True,
        method="percentile",
        n_resamples=resamples,
        confidence_level=confidence,
        random_state=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def paired_difference_interval(
    values: np.ndarray,
    reference: np.ndarray,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE,
) -> tuple[float, float]:
    """Paired percentile bootstrap interval of ``mean(values - reference)`` over queries.

    Both arrays are float (Q,), one value per query, the same queries in the same order:
    each resample draws queries, not values. Identical arrays give exactly (0, 0).
    """
    values = _checked_values(values, "values")
    reference = _checked_values(reference, "reference")
    if values.shape != reference.shape:
        raise RankingMetricError(
            f"paired values need the same queries: {values.size} values, "
            f"{reference.size} reference values"
        )
    return mean_interval(values - reference, resamples=resamples, seed=seed, confidence=confidence)


def _check_k(k: int) -> None:
    if k < 1:
        raise RankingMetricError(f"k must be at least 1, got {k}")


def _checked_values(values: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise RankingMetricError(f"{name}: no queries to take an interval over")
    if not np.isfinite(values).all():
        raise RankingMetricError(f"{name}: per-query values must be finite")
    return values
