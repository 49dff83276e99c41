"""Drift v0: how far a day's inputs moved from a reference window (pure numpy / scipy).

- Dense columns: population stability index (PSI) and Jensen-Shannon distance on the
  reference's quantile bins. Quantile bins ignore any monotone transform, so raw counts
  and ``log1p`` counts give the same values.
- Categorical columns: out-of-vocabulary rate (rows whose id the reference never saw) and
  a PSI over the reference's most frequent ids plus one "other" bucket, which catches a
  re-ranked head that OOV alone misses.
- Label: relative change of the click rate.

Rules of thumb for PSI: < 0.1 stable, 0.1-0.25 moderate, > 0.25 a shift worth acting on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial.distance import jensenshannon

from data_checks.schema import FeatureSchema

# Floor of a bin's share before the log ratio: keeps PSI finite when a bin is empty on
# one side. Shares are not renormalised, so identical samples give PSI exactly 0; a bin
# empty in the reference but holding share q now adds about q * ln(q / 1e-4).
EPSILON = 1e-4
TOP_IDS = 50  # ids of the reference head binned one by one in the categorical PSI


class DriftError(ValueError):
    """Drift cannot be measured on the given inputs (empty, missing columns, no clicks)."""


def _finite(values: np.ndarray, role: str) -> np.ndarray:
    """The finite values of a 1-D array; NaN/inf are the contract's to report, not drift's."""
    array = np.asarray(values, dtype=np.float64).ravel()
    array = array[np.isfinite(array)]
    if array.size == 0:
        raise DriftError(f"{role} sample has no finite values; pass a non-empty numeric column")
    return array


def quantile_edges(reference: np.ndarray, *, bins: int = 10) -> np.ndarray:
    """Inner bin edges at the reference's 1/bins .. (bins-1)/bins quantiles, ties merged.

    A mass point (say 40 % zeros) repeats a quantile; repeated edges are merged, so such a
    column gets fewer than ``bins`` bins rather than empty zero-width ones. Values below the
    first edge or above the last fall into the two open end bins.
    """
    if bins < 2:
        raise DriftError(f"bins must be at least 2; got {bins}")
    reference = _finite(reference, "reference")
    return np.unique(np.quantile(reference, np.linspace(0.0, 1.0, bins + 1)[1:-1]))


def bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of ``values`` in each of the ``len(edges) + 1`` bins; bin k is [e[k-1], e[k])."""
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=edges.size + 1)
    return counts / counts.sum()


def _psi_from_shares(expected: np.ndarray, actual: np.ndarray) -> float:
    expected, actual = np.maximum(expected, EPSILON), np.maximum(actual, EPSILON)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def psi(reference: np.ndarray, current: np.ndarray, *, bins: int = 10) -> float:
    """Population stability index of ``current`` against ``reference``, >= 0 (nats).

    ``sum_k (q_k - p_k) * ln(q_k / p_k)`` over the reference's quantile bins, where p and q
    are the reference and current shares, each floored at ``EPSILON``.
    """
    edges = quantile_edges(reference, bins=bins)
    expected = bin_shares(_finite(reference, "reference"), edges)
    return _psi_from_shares(expected, bin_shares(_finite(current, "current"), edges))


def js_distance(reference: np.ndarray, current: np.ndarray, *, bins: int = 10) -> float:
    """Jensen-Shannon distance (base 2, so in [0, 1]) of the shares on shared bins.

    The bins are the reference's quantile bins (as in ``psi``); no epsilon is needed, the
    distance is finite with empty bins.
    """
    edges = quantile_edges(reference, bins=bins)
    expected = bin_shares(_finite(reference, "reference"), edges)
    actual = bin_shares(_finite(current, "current"), edges)
    return float(jensenshannon(expected, actual, base=2))


def oov_rate(reference_ids: np.ndarray, current_ids: np.ndarray) -> float:
    """Share of current rows whose id never appears in the reference, in [0, 1]."""
    current = pd.Series(np.asarray(current_ids).ravel())
    if current.empty:
        raise DriftError("current ids are empty; the OOV rate of no rows is undefined")
    seen = pd.unique(np.asarray(reference_ids).ravel())
    return float(1.0 - current.isin(seen).mean())


def category_psi(
    reference_ids: np.ndarray, current_ids: np.ndarray, *, top: int = TOP_IDS
) -> float:
    """PSI over the reference's ``top`` most frequent ids, every other id in one bucket."""
    return _category_stats(reference_ids, current_ids, top=top)[1]


def _category_stats(
    reference_ids: np.ndarray, current_ids: np.ndarray, *, top: int
) -> tuple[float, float]:
    """(OOV rate, head PSI) from one hash pass over each side."""
    reference = pd.Series(np.asarray(reference_ids).ravel())
    current = np.asarray(current_ids).ravel()
    if reference.empty or current.size == 0:
        raise DriftError(f"id samples must be non-empty; got {reference.size} and {current.size}")
    by_count = reference.value_counts(sort=True)  # most frequent first
    position = pd.Index(by_count.index).get_indexer(current)  # -1: never seen
    head = min(top, by_count.size)
    expected = np.append(by_count.to_numpy()[:head], by_count.to_numpy()[head:].sum())
    bucket = np.where((position >= 0) & (position < head), position, head)
    actual = np.bincount(bucket, minlength=head + 1)
    shares = expected / expected.sum(), actual / actual.sum()
    return float(np.mean(position < 0)), _psi_from_shares(*shares)


def label_rate_shift(reference_labels: np.ndarray, current_labels: np.ndarray) -> float:
    """Relative change of the click rate, ``current / reference - 1`` (0.1 = 10 % more)."""
    reference = np.asarray(reference_labels, dtype=np.float64)
    current = np.asarray(current_labels, dtype=np.float64)
    if reference.size == 0 or current.size == 0:
        raise DriftError(
            f"label samples must be non-empty; got {reference.size} and {current.size} rows"
        )
    base = float(np.nanmean(reference))
    if base == 0.0:
        raise DriftError("the reference window has no clicks; pick a window with clicks")
    return float(np.nanmean(current)) / base - 1.0


@dataclass
class DriftReport:
    """Drift of one day against a reference window.

    ``table`` has one row per (feature, statistic): columns feature, kind ("dense",
    "categorical", "label"), statistic ("psi", "js", "oov", "rate_shift"), value.
    """

    table: pd.DataFrame
    max_dense_psi: float
    mean_oov_rate: float
    max_oov_rate: float
    label_rate_shift: float
    reference_rows: int
    current_rows: int

    def value(self, feature: str, statistic: str) -> float:
        rows = self.table[(self.table.feature == feature) & (self.table.statistic == statistic)]
        if rows.empty:
            raise KeyError(f"no {statistic!r} statistic for feature {feature!r} in this report")
        return float(rows.value.iloc[0])

    def to_metrics(self) -> dict[str, float]:
        """Flat metric names, e.g. ``drift.psi.dense_3``, ``drift.oov.cat_7``."""
        metrics = {
            f"drift.{row.statistic}.{row.feature}": float(row.value)
            for row in self.table.itertuples(index=False)
            if row.kind != "label"
        }
        metrics.update(
            {
                "drift.max_dense_psi": self.max_dense_psi,
                "drift.mean_oov_rate": self.mean_oov_rate,
                "drift.max_oov_rate": self.max_oov_rate,
                "drift.label_rate_shift": self.label_rate_shift,
            }
        )
        return metrics


def measure_drift(
    reference: pd.DataFrame, current: pd.DataFrame, schema: FeatureSchema, *, bins: int = 10
) -> DriftReport:
    """Every drift statistic of ``current`` (a day) against ``reference`` (a window)."""
    for role, frame in (("reference", reference), ("current", current)):
        missing = [c for c in schema.columns if c not in frame.columns]
        if missing:
            raise DriftError(f"{role} frame lacks schema columns {missing}; validate it first")
    rows = []
    for column in schema.dense:
        ref = _finite(reference[column].to_numpy(), f"reference {column}")
        cur = _finite(current[column].to_numpy(), f"current {column}")
        edges = quantile_edges(ref, bins=bins)
        expected, actual = bin_shares(ref, edges), bin_shares(cur, edges)
        rows.append((column, "dense", "psi", _psi_from_shares(expected, actual)))
        rows.append((column, "dense", "js", float(jensenshannon(expected, actual, base=2))))
    bags = set(schema.multi_valued_names)
    for column in schema.categorical_names:
        ref_ids, cur_ids = reference[column], current[column]
        if column in bags:  # a bag counts each of its ids once: OOV and PSI are per id
            ref_ids, cur_ids = _bag_ids(ref_ids), _bag_ids(cur_ids)
        oov, head_psi = _category_stats(ref_ids, cur_ids, top=TOP_IDS)
        rows.append((column, "categorical", "oov", oov))
        rows.append((column, "categorical", "psi", head_psi))
    shift = label_rate_shift(reference[schema.label], current[schema.label])
    rows.append((schema.label, "label", "rate_shift", shift))
    table = pd.DataFrame(rows, columns=["feature", "kind", "statistic", "value"])
    dense_psi = table[(table.kind == "dense") & (table.statistic == "psi")].value
    oov = table[table.statistic == "oov"].value
    return DriftReport(
        table=table,
        max_dense_psi=float(dense_psi.max()) if len(dense_psi) else 0.0,
        mean_oov_rate=float(oov.mean()),
        max_oov_rate=float(oov.max()),
        label_rate_shift=shift,
        reference_rows=len(reference),
        current_rows=len(current),
    )


def _bag_ids(bags: pd.Series) -> pd.Series:
    """Every id of a multi-valued column, one per element (empty bags add none)."""
    flat = bags.explode().dropna()
    return flat.astype(str) if flat.dtype == object else flat
