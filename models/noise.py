"""Noise machinery of the promotion gate: paired intervals of a metric's change.

``models.gate`` holds a compared check (against parent or champion) within noise when the
interval of its change on the run date's rows contains 0; this module computes the parts of
those intervals. Both models are always scored on the same (resampled) rows: paired.

* ne, log_loss, calibration: percentile interval of a Poisson(1) bootstrap. Each of
  ``bootstrap_samples`` resamples weighs every row by an independent Poisson(1) count (drawn
  through a 16-bit inverse-CDF table: probabilities resolved to 2^-16), and every metric is a
  ratio of weighted row sums (NE = weighted log loss / entropy of the weighted click rate),
  so all resamples, models and slices come out of one chunked matrix product
  (``paired_bootstrap_sums`` -> ``bootstrap_sums``; ``bootstrap_changes`` turns the sums
  into each resample's change). The weights are shared by all models and slices (paired).
  Identical predictions give exactly [0, 0].
* auc: DeLong's paired variance (DeLong et al. 1988; Sun & Xu 2014 via midranks), a normal
  interval ``delta +- z * se`` (``auc_components``, ``paired_auc_delta``), O(B log B) instead
  of re-ranking every resample; the relative change divides delta and se by the reference
  AUC (delta method).

Pure numpy / scipy: nothing here knows about rules, policies or decisions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import cache

import numpy as np
from scipy.stats import rankdata
from threadpoolctl import threadpool_limits

from quantrec.models.metrics import PROB_CLIP

_CHUNK_ROWS = 4096  # bootstrap rows per matrix product: bounds memory to ~R x 4096 x 8 B


def paired_bootstrap_sums(labels: np.ndarray, probs: Mapping[str, np.ndarray],
                          groups: np.ndarray, *, refs: Sequence[str], skip: str,
                          samples: int, seed: int) -> tuple[np.ndarray, dict]:
    """Weighted row sums of every resample and row group, and the column index.

    Args:
        labels: float64 (B,) 0/1 clicks.
        probs: model name -> float64 (B,) click probabilities.
        groups: bool (G, B) row masks.
        refs: the models changes are taken against (the parent, the champion if any).
        skip: a model never compared against a reference (the champion).

    Returns:
        float64 (samples, G, K) ``bootstrap_sums`` of the columns, and column key -> index:
        "one", "y", per reference r ("l", r) its row loss and ("p", r) its probabilities,
        and per other model v ("dl", v, r) / ("dp", v, r) the row differences to r.
    """
    loss = {n: _row_loss(labels, p) for n, p in probs.items()}
    columns = {"one": np.ones_like(labels), "y": labels}
    for r in refs:
        columns[("l", r)], columns[("p", r)] = loss[r], probs[r]
    for r in refs:
        for v in probs:
            if v not in (r, skip):  # differences are exact zeros for equal models
                columns[("dl", v, r)] = loss[v] - loss[r]
                columns[("dp", v, r)] = probs[v] - probs[r]
    table = np.stack(list(columns.values()), axis=1)
    sums = bootstrap_sums(table, groups, samples=samples, seed=seed)
    return sums, {k: i for i, k in enumerate(columns)}


def bootstrap_changes(s: np.ndarray, column: Mapping, *, metric: str, change: str,
                      variant: str, ref: str) -> np.ndarray:
    """(R,) the change of ``metric`` of ``variant`` vs ``ref`` in every resample.

    ``s`` is one group's float64 (R, K) slice of ``paired_bootstrap_sums``; NaN or inf
    where a resample is single-class.
    """
    weight, clicks = s[:, 0], s[:, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric == "calibration":
            diff = s[:, column[("dp", variant, ref)]]
            return diff / s[:, column[("p", ref)]] if change == "rel" else diff / clicks
        diff = s[:, column[("dl", variant, ref)]]
        if change == "rel":  # same rows, same click rate: NE and log loss move alike
            return diff / s[:, column[("l", ref)]]
        rate = clicks / weight
        entropy = -(rate * np.log(rate) + (1 - rate) * np.log1p(-rate))
        return diff / weight / (entropy if metric == "ne" else 1.0)


@cache
def _poisson_table() -> np.ndarray:
    """uint8 (65536,): the Poisson(1) quantile at each 16-bit level's midpoint."""
    cdf = np.cumsum([math.exp(-1.0) / math.factorial(k) for k in range(16)])
    return np.searchsorted(cdf, (np.arange(65536) + 0.5) / 65536).astype(np.uint8)


def bootstrap_sums(table: np.ndarray, groups: np.ndarray, *, samples: int, seed: int
                   ) -> np.ndarray:
    """Poisson(1)-weighted column sums of every resample over every row group.

    Rows are sorted into cells of equal group membership, so each row enters one matrix
    product however many groups hold it; a group's sums are the sums of its cells. A row's
    weights depend only on ``seed`` and its position, not on the groups.

    Args:
        table: float64 (B, K) per-row terms.
        groups: bool (G, B) row masks (the same weights serve every group: paired).

    Returns:
        float64 (samples, G, K); row i of resample r weighs a Poisson(1) draw w[r, i].
    """
    packed = np.packbits(groups, axis=0)  # (ceil(G / 8), B): each row's membership bits
    order = np.lexsort(packed[::-1])
    packed = packed[:, order]
    starts = np.r_[True, (packed[:, 1:] != packed[:, :-1]).any(axis=0)]
    cells = groups[:, order[starts]]  # (G, C)
    cell_of = np.empty(table.shape[0], dtype=np.int64)
    cell_of[order] = np.cumsum(starts) - 1
    # float32 products of at most _CHUNK_ROWS rows: ~1e-6 relative error, far below any
    # interval's width, at half the time of float64.
    table = table.astype(np.float32)
    rng = np.random.default_rng(seed)
    cell_sums = np.zeros((samples, cells.shape[1], table.shape[1]))
    # Many small products: BLAS threads waiting on a busy core made them 30x slower on the
    # 2-core CI machine (2.7 s vs 0.07 s); one thread is also reproducible.
    with threadpool_limits(limits=1, user_api="blas"):
        _accumulate(table, cell_of, cell_sums, rng)
    return np.einsum("gc,rck->rgk", cells.astype(np.float64), cell_sums)


def _accumulate(table: np.ndarray, cell_of: np.ndarray, cell_sums: np.ndarray,
                rng: np.random.Generator) -> None:
    """Add every resample's weighted sums of each cell's rows to ``cell_sums`` (R, C, K)."""
    lookup, samples = _poisson_table(), cell_sums.shape[0]
    for start in range(0, table.shape[0], _CHUNK_ROWS):
        rows, ids = table[start:start + _CHUNK_ROWS], cell_of[start:start + _CHUNK_ROWS]
        # Weights are drawn in row order, so a row's weights do not depend on the groups.
        # (rows, samples): sorting rows by cell then moves contiguous rows of codes.
        codes = rng.integers(0, 65536, (rows.shape[0], samples), dtype=np.uint16)
        local = np.argsort(ids, kind="stable")
        rows, ids, weights = rows[local], ids[local], lookup[codes[local]].astype(np.float32)
        edges = np.flatnonzero(np.diff(ids)) + 1
        for lo, hi in zip(np.r_[0, edges], np.r_[edges, rows.shape[0]]):
            cell_sums[:, ids[lo]] += weights[lo:hi].T @ rows[lo:hi]  # float64 across chunks


def _row_loss(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """(B,) log loss per row, clipped as ``models.metrics.log_loss``."""
    p = np.clip(probs, PROB_CLIP, 1.0 - PROB_CLIP)
    return -(labels * np.log(p) + (1.0 - labels) * np.log1p(-p))


def auc_components(labels: np.ndarray, probs: np.ndarray
                   ) -> tuple[float, np.ndarray, np.ndarray] | None:
    """(AUC, v10 (positives,), v01 (negatives,)): DeLong's placements, via midranks.

    v10: per positive, the share of negatives scored below it; v01: per negative, the share
    of positives scored above it (ties count half). Both average to the AUC, which equals
    ``sklearn.metrics.roc_auc_score``. None when a class has fewer than 2 rows.
    """
    positive = labels == 1
    m, n = int(positive.sum()), int((~positive).sum())
    if m < 2 or n < 2:
        return None
    ranks = rankdata(probs)
    v10 = (ranks[positive] - rankdata(probs[positive])) / n
    v01 = 1.0 - (ranks[~positive] - rankdata(probs[~positive])) / m
    return float(v10.mean()), v10, v01


def paired_auc_delta(a: tuple, b: tuple) -> tuple[float, float]:
    """(AUC(a) - AUC(b), its DeLong standard error) from two models' ``auc_components``
    on the same rows; exactly (0, 0) for identical scores."""
    (auc_a, v10_a, v01_a), (auc_b, v10_b, v01_b) = a, b
    variance = (np.var(v10_a - v10_b, ddof=1) / v10_a.size
                + np.var(v01_a - v01_b, ddof=1) / v01_a.size)
    return auc_a - auc_b, float(math.sqrt(max(variance, 0.0)))
