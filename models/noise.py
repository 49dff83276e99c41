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
  into each resample's change, ``bootstrap_values`` into each resample's value). The weights
  are shared by all models and slices (paired). Identical predictions give exactly [0, 0].
  A resample whose weighted labels are single-class (all its clicks, or all its non-clicks,
  drew weight 0: likely on a slice with a handful of either) has no NE and no calibration;
  it is NaN and left out, and ``percentile_interval`` gives no interval when fewer than half
  of the resamples remain.
* auc: DeLong's paired variance (DeLong et al. 1988; Sun & Xu 2014 via midranks), a normal
  interval ``delta +- z * se`` (``auc_components``, ``paired_auc_delta``), O(B log B) instead
  of re-ranking every resample; the relative change divides delta and se by the reference
  AUC (delta method).

``PairedIntervals`` puts these together for one day's rows: every model, every row group,
one bootstrap. Pure numpy / scipy: nothing here knows about rules, policies or decisions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from functools import cache

import numpy as np
from scipy.stats import norm, rankdata
from threadpoolctl import threadpool_limits

from quantrec.models.metrics import PROB_CLIP

_CHUNK_ROWS = 4096  # bootstrap rows per matrix product: bounds memory to ~R x 4096 x 8 B


class PairedIntervals:
    """Confidence intervals of models' metrics on row groups of one day, all paired.

    Args:
        labels: float64 (B,) 0/1 clicks.
        probs: model name -> float64 (B,) click probabilities.
        groups: group name -> bool (B,) row mask, or None for every row.
        refs: models changes are taken against; skip: models never compared (see
            ``paired_bootstrap_sums``).
        samples, seed: the bootstrap's resamples and seed; confidence: e.g. 0.95.

    The bootstrap runs once, on first use, for every model and group.
    """

    def __init__(
        self,
        labels: np.ndarray,
        probs: Mapping[str, np.ndarray],
        groups: Mapping[str, np.ndarray | None],
        *,
        refs: Sequence[str],
        skip: Iterable[str],
        samples: int,
        seed: int,
        confidence: float,
    ) -> None:
        self.labels, self.probs, self.groups = labels, probs, dict(groups)
        self.refs, self.skip = list(refs), list(skip)
        self.samples, self.seed, self.confidence = samples, seed, confidence
        self._auc: dict[tuple[str, str], tuple | None] = {}
        self._sums: tuple[np.ndarray, dict] | None = None

    def rows(self, model: str, group: str) -> tuple[np.ndarray, np.ndarray]:
        """(labels, probabilities of ``model``) on the group's rows."""
        mask = self.groups[group]
        probs = self.probs[model]
        return (self.labels, probs) if mask is None else (self.labels[mask], probs[mask])

    def auc(self, model: str, group: str) -> tuple | None:
        """``auc_components`` of ``model`` on the group (cached), None if a class is short."""
        if (model, group) not in self._auc:
            self._auc[(model, group)] = auc_components(*self.rows(model, group))
        return self._auc[(model, group)]

    def change(
        self, metric: str, change: str, variant: str, ref: str, group: str
    ) -> tuple[float, float] | None:
        """Interval of the change (abs | rel) of ``metric``, ``variant`` vs ``ref``."""
        if metric == "auc":
            a, b = self.auc(variant, group), self.auc(ref, group)
            if a is None or b is None:
                return None
            delta, se = paired_auc_delta(a, b)
            scale = 1.0 if change == "abs" else 1.0 / b[0]
            z = float(norm.ppf(1.0 - (1.0 - self.confidence) / 2))
            return (delta - z * se) * scale, (delta + z * se) * scale
        sums, column = self._group_sums(group)
        return percentile_interval(
            bootstrap_changes(sums, column, metric=metric, change=change, variant=variant, ref=ref),
            self.confidence,
        )

    def value(self, metric: str, model: str, group: str) -> tuple[float, float] | None:
        """Bootstrap interval of the value of ``metric`` (ne | log_loss | calibration)."""
        sums, column = self._group_sums(group)
        return percentile_interval(
            bootstrap_values(sums, column, metric=metric, model=model), self.confidence
        )

    def _group_sums(self, group: str) -> tuple[np.ndarray, dict]:
        if self._sums is None:
            masks = np.stack(
                [np.ones(self.labels.size, bool) if m is None else m for m in self.groups.values()]
            )
            self._sums = paired_bootstrap_sums(
                self.labels,
                self.probs,
                masks,
                refs=self.refs,
                skip=self.skip,
                samples=self.samples,
                seed=self.seed,
            )
        sums, column = self._sums
        return sums[:, list(self.groups).index(group), :], column


def paired_bootstrap_sums(
    labels: np.ndarray,
    probs: Mapping[str, np.ndarray],
    groups: np.ndarray,
    *,
    refs: Sequence[str],
    skip: Iterable[str],
    samples: int,
    seed: int,
) -> tuple[np.ndarray, dict]:
    """Weighted row sums of every resample and row group, and the column index.

    Args:
        labels: float64 (B,) 0/1 clicks.
        probs: model name -> float64 (B,) click probabilities.
        groups: bool (G, B) row masks.
        refs: the models changes are taken against (the parent, the champion, baselines).
        skip: models never compared against a reference (the champion, the baselines).

    Returns:
        float64 (samples, G, K) ``bootstrap_sums`` of the columns, and column key -> index:
        "one", "y", per model m ("l", m) its row loss and ("p", m) its probabilities, and per
        compared model v and reference r ("dl", v, r) / ("dp", v, r) the row differences.
    """
    skip = {skip} if isinstance(skip, str) else set(skip)  # one name, or several
    loss = {n: _row_loss(labels, p) for n, p in probs.items()}
    columns = {"one": np.ones_like(labels), "y": labels}
    for n in probs:
        columns[("l", n)], columns[("p", n)] = loss[n], probs[n]
    for r in refs:
        for v in probs:
            if v != r and v not in skip:  # differences are exact zeros for equal models
                columns[("dl", v, r)] = loss[v] - loss[r]
                columns[("dp", v, r)] = probs[v] - probs[r]
    table = np.stack(list(columns.values()), axis=1)
    sums = bootstrap_sums(table, groups, samples=samples, seed=seed)
    return sums, {k: i for i, k in enumerate(columns)}


def bootstrap_changes(
    s: np.ndarray, column: Mapping, *, metric: str, change: str, variant: str, ref: str
) -> np.ndarray:
    """(R,) the change of ``metric`` of ``variant`` vs ``ref`` in every resample.

    ``s`` is one group's float64 (R, K) slice of ``paired_bootstrap_sums``; NaN where a
    resample is single-class.
    """
    weight, clicks = s[:, 0], s[:, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric == "calibration":
            diff = s[:, column[("dp", variant, ref)]]
            out = diff / s[:, column[("p", ref)]] if change == "rel" else diff / clicks
        else:
            diff = s[:, column[("dl", variant, ref)]]
            if change == "rel":  # same rows, same click rate: NE and log loss move alike
                out = diff / s[:, column[("l", ref)]]
            else:
                out = diff / weight / (_entropy(clicks, weight) if metric == "ne" else 1.0)
    return _drop_single_class(out, clicks, weight)


def bootstrap_values(s: np.ndarray, column: Mapping, *, metric: str, model: str) -> np.ndarray:
    """(R,) the value of ``metric`` (ne | log_loss | calibration) of ``model`` in every
    resample of one group's (R, K) sums; NaN where a resample is single-class."""
    weight, clicks = s[:, 0], s[:, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric == "calibration":
            out = s[:, column[("p", model)]] / clicks
        else:
            out = s[:, column[("l", model)]] / weight
            if metric == "ne":
                out = out / _entropy(clicks, weight)
    return _drop_single_class(out, clicks, weight)


def percentile_interval(draws: np.ndarray, confidence: float) -> tuple[float, float] | None:
    """The central ``confidence`` percentile interval of the finite ``draws``, or None when
    fewer than half of them are finite (most resamples single-class: no interval)."""
    finite = draws[np.isfinite(draws)]
    if finite.size < 0.5 * draws.size or finite.size == 0:
        return None
    alpha = 1.0 - confidence
    low, high = np.quantile(finite, [alpha / 2, 1.0 - alpha / 2])
    return float(low), float(high)


def _entropy(clicks: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Entropy (nats) of each resample's weighted click rate; 0 when single-class."""
    rate = clicks / weight
    return -(rate * np.log(rate) + (1 - rate) * np.log1p(-rate))


def _drop_single_class(values: np.ndarray, clicks: np.ndarray, weight: np.ndarray) -> np.ndarray:
    # Float32 sums of integer weights are exact below 2^24 rows, so == compares safely.
    single = (clicks <= 0) | (clicks >= weight)
    return np.where(single | ~np.isfinite(values), np.nan, values)


@cache
def _poisson_table() -> np.ndarray:
    """uint8 (65536,): the Poisson(1) quantile at each 16-bit level's midpoint."""
    cdf = np.cumsum([math.exp(-1.0) / math.factorial(k) for k in range(16)])
    return np.searchsorted(cdf, (np.arange(65536) + 0.5) / 65536).astype(np.uint8)


def bootstrap_sums(table: np.ndarray, groups: np.ndarray, *, samples: int, seed: int) -> np.ndarray:
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


def _accumulate(
    table: np.ndarray, cell_of: np.ndarray, cell_sums: np.ndarray, rng: np.random.Generator
) -> None:
    """Add every resample's weighted sums of each cell's rows to ``cell_sums`` (R, C, K)."""
    lookup, samples = _poisson_table(), cell_sums.shape[0]
    for start in range(0, table.shape[0], _CHUNK_ROWS):
        rows, ids = table[start : start + _CHUNK_ROWS], cell_of[start : start + _CHUNK_ROWS]
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


def auc_components(
    labels: np.ndarray, probs: np.ndarray
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
    variance = (
        np.var(v10_a - v10_b, ddof=1) / v10_a.size + np.var(v01_a - v01_b, ddof=1) / v01_a.size
    )
    return auc_a - auc_b, float(math.sqrt(max(variance, 0.0)))
