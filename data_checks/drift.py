"""Drift monitor: how far day D's inputs, labels and scores moved from the champion's window.

``measure(profile, day, schema)`` compares a day with a ``DriftProfile`` (the reference,
built from the champion's training window and saved with it; see ``drift_profile``):

- dense column: PSI on the reference's quantile bins (decides) and Jensen-Shannon
  distance, base 2, in [0, 1] (informational);
- categorical column, over the reference's top-K ids plus one "other" bucket: JS distance
  and L-infinity distance (largest change of one bucket's share), and the OOV rate (share
  of rows, or bag elements, whose id the reference never saw); all three decide. The
  bucket PSI is kept as information. A window misses part of a Zipf tail, so a stable day
  shows OOV too: its threshold is the reference's Good-Turing estimate of that rate (its
  singleton share) plus a margin;
- label: relative and absolute change of the click rate;
- prediction: PSI of the champion's scores on the reference's score quantile bins.

A feature (dense or categorical) is *drifted* when one of its deciding statistics is at or
over its ``*_warn`` threshold; the dataset drift share is drifted features / all features.
The level (``DriftThresholds`` documents each default):

- "severe" if dataset drift share >= share_severe, or prediction PSI >=
  prediction_psi_severe, or |relative click-rate shift| >= label_shift_severe;
- "warn" if one of those is at or over its ``*_warn`` value, or any single feature reaches
  its ``*_severe`` value (one feature alone rarely moves a model: prediction PSI says
  whether it did, so it raises a warning, not an alarm);
- "ok" otherwise. ``DriftReport.reasons`` lists every condition met, with value and threshold.

PSI rules of thumb: < 0.1 stable, 0.1-0.25 moderate, > 0.25 a shift worth acting on.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy.special import rel_entr

from quantrec.data_checks.drift_profile import (
    CategoricalProfile,
    DriftError,
    DriftProfile,
    bin_shares,
    finite_values,
    id_elements,
    id_keys,
    quantile_edges,
    require_columns,
    schema_fingerprint,
)
from quantrec.data_checks.schema import FeatureSchema

__all__ = [
    "DriftError",
    "DriftProfile",
    "DriftReason",
    "DriftReport",
    "DriftThresholds",
    "LEVELS",
    "measure",
]

# Floor of a bin's share before the log ratio: keeps PSI finite when a bin is empty on
# one side. Shares are not renormalised, so identical samples give PSI exactly 0; a bin
# empty in the reference but holding share q now adds about q * ln(q / 1e-4).
EPSILON = 1e-4
LEVELS = ("ok", "warn", "severe")  # drift.level metric: the index


def psi_from_shares(expected: np.ndarray, actual: np.ndarray) -> float:
    """``sum_k (q_k - p_k) ln(q_k / p_k)`` (nats, >= 0), shares floored at ``EPSILON``."""
    expected, actual = np.maximum(expected, EPSILON), np.maximum(actual, EPSILON)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def js_from_shares(expected: np.ndarray, actual: np.ndarray) -> float:
    """Jensen-Shannon distance, base 2, in [0, 1]; finite with empty bins (no epsilon).

    ``scipy.spatial.distance.jensenshannon`` computes the same value but returns NaN when
    rounding leaves the divergence of two (near-)identical distributions a hair below
    zero, so the divergence is clipped at 0 here before the square root.
    """
    p, q = np.asarray(expected, dtype=np.float64), np.asarray(actual, dtype=np.float64)
    m = (p + q) / 2.0
    divergence = (rel_entr(p, m).sum() + rel_entr(q, m).sum()) / (2.0 * np.log(2.0))
    return float(np.sqrt(max(divergence, 0.0)))


def linf_from_shares(expected: np.ndarray, actual: np.ndarray) -> float:
    """Largest absolute change of one bucket's share, in [0, 1]."""
    return float(np.max(np.abs(np.asarray(actual) - np.asarray(expected))))


def psi(reference: np.ndarray, current: np.ndarray, *, bins: int = 10) -> float:
    """PSI of ``current`` against ``reference`` on the reference's quantile bins."""
    reference = finite_values(reference, "reference")
    edges = quantile_edges(reference, bins=bins)
    current = finite_values(current, "current")
    return psi_from_shares(bin_shares(reference, edges), bin_shares(current, edges))


def js_distance(reference: np.ndarray, current: np.ndarray, *, bins: int = 10) -> float:
    """JS distance (base 2) of ``current`` and ``reference`` on the reference's quantile bins."""
    reference = finite_values(reference, "reference")
    edges = quantile_edges(reference, bins=bins)
    current = finite_values(current, "current")
    return js_from_shares(bin_shares(reference, edges), bin_shares(current, edges))


def _share(default: float, description: str) -> Any:
    return Field(default, ge=0.0, le=1.0, description=f"{description} Default {default}.")


def _at_least_0(default: float, description: str) -> Any:
    return Field(default, ge=0.0, description=f"{description} Default {default}.")


class DriftThresholds(BaseModel):
    """Every drift threshold; a statistic at or over its value counts (>=).

    Defaults were tuned on the synthetic feed (3-day window, 10k rows a day, seeds 0-4):
    on stable days the worst values were 0.003 dense PSI, 0.044 JS, 0.018 L-inf, 0.010 OOV
    excess, 0.13 |label shift| (no drifted feature, "ok"); on a sudden shift day 64-74 % of
    features drifted ("severe"). Noise shrinks as 1/rows (PSI) or 1/sqrt(rows) (JS, L-inf,
    label), so larger days only widen the margins; the values sit in test_drift_profile.py.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Per feature: a column is drifted from its *_warn value; *_severe alone gives "warn".
    psi_warn: float = _at_least_0(0.2, "Dense PSI (nats) from which a column is drifted.")
    psi_severe: float = _at_least_0(1.0, "Dense PSI of one column that warns by itself.")
    js_warn: float = _share(0.15, "Categorical JS distance (base 2) from which it is drifted.")
    js_severe: float = _share(0.4, "Categorical JS distance of one column that warns by itself.")
    linf_warn: float = _share(
        0.1,
        "Categorical L-inf (largest change of one bucket's share) from which a column is drifted.",
    )
    linf_severe: float = _share(0.3, "Categorical L-inf of one column that warns by itself.")
    oov_warn: float = _share(
        0.05,
        "OOV rate above the reference's Good-Turing expected rate "
        "(its singleton share) from which a column is drifted.",
    )
    oov_severe: float = _share(0.25, "OOV rate above the expected rate that warns by itself.")
    # Whole day.
    share_warn: float = _share(0.1, "Dataset drift share (drifted / all features) giving warn.")
    share_severe: float = _share(0.3, "Dataset drift share giving severe.")
    prediction_psi_warn: float = _at_least_0(0.1, "PSI of the champion's scores giving warn.")
    prediction_psi_severe: float = _at_least_0(0.25, "PSI of the champion's scores giving severe.")
    label_shift_warn: float = _at_least_0(
        0.25, "|click rate / reference click rate - 1| giving warn (0.25: 3 % -> 3.75 %)."
    )
    label_shift_severe: float = _at_least_0(0.5, "|relative click-rate shift| giving severe.")
    # Calibration on the reference's own days. On the synthetic feed a day differs from the
    # rest of its window by noise only, so the fixed values above decide. A ratings log is
    # not like that: MovieLens-100K's days each hold other users (user_id OOV 0.96 day
    # after day, their history features PSI 4), so every day was "severe" (198 of 198).
    day_to_day_margin: float = _at_least_0(
        1.5,
        "Each deciding threshold is at least this multiple of the value the reference's own "
        "days show against the rest of its window (the largest, leaving one day out): "
        "what a feed's days differ by every day is not drift. 0 turns it off.",
    )

    @model_validator(mode="after")
    def _warn_below_severe(self) -> DriftThresholds:
        for stem in ("psi", "js", "linf", "oov", "share", "prediction_psi", "label_shift"):
            warn, severe = getattr(self, f"{stem}_warn"), getattr(self, f"{stem}_severe")
            if warn > severe:
                raise ValueError(f"{stem}_warn ({warn}) must not exceed {stem}_severe ({severe})")
        return self


@dataclass(frozen=True)
class DriftReason:
    """One condition that set (or helped set) the level: ``value >= threshold``."""

    level: str
    statistic: str  # e.g. "dataset_drift_share", "prediction_psi", "oov"
    value: float
    threshold: float
    feature: str | None = None

    def __str__(self) -> str:
        name = f"{self.feature} {self.statistic}" if self.feature else self.statistic
        return f"{self.level}: {name} {self.value:.4g} >= {self.threshold:.4g}"


@dataclass(frozen=True)
class DriftReport:
    """Drift of one day against a profile.

    ``table``: one row per (feature, statistic); columns feature, kind ("dense",
    "categorical", "label", "prediction"), statistic, value, threshold (NaN: informational)
    and over_threshold. Rates and shares in [0, 1]; PSI in nats; JS base 2.
    """

    table: pd.DataFrame
    level: str
    reasons: tuple[DriftReason, ...]
    dataset_drift_share: float
    drifted_features: tuple[str, ...]
    prediction_psi: float | None  # None: the profile or the day has no scores
    label_rate: float
    reference_label_rate: float
    reference_rows: int
    current_rows: int
    thresholds: DriftThresholds

    @property
    def label_rate_shift(self) -> float:
        """Relative change of the click rate, ``rate / reference - 1`` (0.1: 10 % more)."""
        return self.label_rate / self.reference_label_rate - 1.0

    @property
    def label_rate_abs_shift(self) -> float:
        return self.label_rate - self.reference_label_rate

    def _values(self, kind: str, statistic: str) -> pd.Series:
        return self.table.value[(self.table.kind == kind) & (self.table.statistic == statistic)]

    @property
    def max_dense_psi(self) -> float:
        values = self._values("dense", "psi")
        return float(values.max()) if len(values) else 0.0

    @property
    def mean_oov_rate(self) -> float:
        return float(self._values("categorical", "oov").mean())

    @property
    def max_oov_rate(self) -> float:
        return float(self._values("categorical", "oov").max())

    def value(self, feature: str, statistic: str) -> float:
        rows = self.table[(self.table.feature == feature) & (self.table.statistic == statistic)]
        if rows.empty:
            raise KeyError(f"no {statistic!r} statistic for feature {feature!r} in this report")
        return float(rows.value.iloc[0])

    def summary(self) -> str:
        head = (
            f"drift {self.level}: {len(self.drifted_features)} drifted features "
            f"(share {self.dataset_drift_share:.2f})"
        )
        return "; ".join([head, *map(str, self.reasons)])

    def to_metrics(self) -> dict[str, float]:
        """Every score as ``drift.<statistic>.<feature>`` plus summary metrics; keys are valid
        MLflow metric names (other characters of a column name become "_")."""
        metrics: dict[str, float] = {}
        for row in self.table.itertuples(index=False):
            if row.kind in ("dense", "categorical"):
                _put(metrics, f"drift.{row.statistic}.{metric_name(row.feature)}", row.value)
        summary = {
            "drift.level": float(LEVELS.index(self.level)),
            "drift.dataset_drift_share": self.dataset_drift_share,
            "drift.drifted_features": float(len(self.drifted_features)),
            "drift.label_rate": self.label_rate,
            "drift.label_rate_shift": self.label_rate_shift,
            "drift.label_rate_abs_shift": self.label_rate_abs_shift,
            "drift.max_dense_psi": self.max_dense_psi,
            "drift.mean_oov_rate": self.mean_oov_rate,
            "drift.max_oov_rate": self.max_oov_rate,
            "drift.current_rows": float(self.current_rows),
        }
        if self.prediction_psi is not None:
            summary["drift.prediction_psi"] = self.prediction_psi
        metrics.update({k: float(v) for k, v in summary.items()})
        return metrics

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: summary, reasons, thresholds and the table (NaN thresholds as null)."""
        records = self.table.astype(object).where(self.table.notna(), None).to_dict("records")
        return {
            "level": self.level,
            "summary": self.summary(),
            "reasons": [dict(vars(r)) for r in self.reasons],
            "dataset_drift_share": self.dataset_drift_share,
            "drifted_features": list(self.drifted_features),
            "prediction_psi": self.prediction_psi,
            "label_rate": self.label_rate,
            "reference_label_rate": self.reference_label_rate,
            "label_rate_shift": self.label_rate_shift,
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "thresholds": self.thresholds.model_dump(),
            "table": records,
        }


DEFAULT_THRESHOLDS = DriftThresholds()


def measure(
    profile: DriftProfile,
    day: pd.DataFrame,
    schema: FeatureSchema,
    *,
    scores: np.ndarray | None = None,
    thresholds: DriftThresholds = DEFAULT_THRESHOLDS,
) -> DriftReport:
    """Drift of ``day`` (one partition) against ``profile``; ``scores`` are the champion's
    click probabilities on ``day``'s rows (prediction drift needs them and profile scores)."""
    _check_schema(profile, schema)
    require_columns(day, schema, "current")
    if len(day) == 0:
        raise DriftError("the current day has no rows; drift of an empty day is undefined")
    t = thresholds
    rows: list[tuple[str, str, str, float, float]] = []
    for column, ref in profile.dense.items():
        shares = bin_shares(finite_values(day[column], f"current {column!r}"), ref.edges)
        rows.append((column, "dense", "psi", psi_from_shares(ref.shares, shares), t.psi_warn))
        rows.append((column, "dense", "js", js_from_shares(ref.shares, shares), math.nan))
    bags = set(schema.multi_valued_names)
    for column, ref in profile.categorical.items():
        shares, oov = _id_shares(ref, day[column], column in bags, column)
        expected = ref.shares()
        rows += [
            (column, "categorical", "js", js_from_shares(expected, shares), t.js_warn),
            (column, "categorical", "linf", linf_from_shares(expected, shares), t.linf_warn),
            (column, "categorical", "oov", oov, min(1.0, ref.singleton_share + t.oov_warn)),
            (column, "categorical", "psi", psi_from_shares(expected, shares), math.nan),
        ]
    labels = pd.to_numeric(day[schema.label], errors="coerce").to_numpy(np.float64)
    label_rate = float(np.nanmean(labels)) if np.isfinite(labels).any() else 0.0
    shift = label_rate / profile.label_rate - 1.0
    rows.append((schema.label, "label", "rate_shift", shift, t.label_shift_warn))
    absolute = label_rate - profile.label_rate
    rows.append((schema.label, "label", "rate_abs_shift", absolute, math.nan))
    prediction_psi = None
    if scores is not None and profile.scores is not None:
        actual = bin_shares(finite_values(scores, "current scores"), profile.scores.edges)
        prediction_psi = psi_from_shares(profile.scores.shares, actual)
        rows.append(("prediction", "prediction", "psi", prediction_psi, t.prediction_psi_warn))
    table = pd.DataFrame(rows, columns=["feature", "kind", "statistic", "value", "threshold"])
    table["day_to_day"] = [
        profile.day_to_day.get(f"{f}|{st}", math.nan)
        for f, st in zip(table.feature, table.statistic, strict=True)
    ]
    table["threshold"] = _lifted(table.threshold, table.day_to_day, t.day_to_day_margin)
    magnitude = np.where(table.statistic == "rate_shift", table.value.abs(), table.value)
    table["over_threshold"] = magnitude >= table.threshold  # NaN threshold: never over
    features = table[table.kind.isin(["dense", "categorical"])]
    drifted = tuple(features.feature[features.over_threshold].unique())
    share = len(drifted) / features.feature.nunique()
    reasons = _reasons(table, share, prediction_psi, shift, profile, t)
    level = max((r.level for r in reasons), key=LEVELS.index, default="ok")
    return DriftReport(
        table=table,
        level=level,
        reasons=reasons,
        dataset_drift_share=share,
        drifted_features=drifted,
        prediction_psi=prediction_psi,
        label_rate=label_rate,
        reference_label_rate=profile.label_rate,
        reference_rows=profile.rows,
        current_rows=len(day),
        thresholds=t,
    )


def metric_name(text: str) -> str:
    """``text`` with every character MLflow refuses in a metric key replaced by "_"."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", str(text))


def _put(metrics: dict[str, float], key: str, value: float) -> None:
    # Two column names may sanitise alike ("a@b", "a#b"): number the later ones, never drop.
    unique, k = key, 2
    while unique in metrics:
        unique, k = f"{key}_{k}", k + 1
    metrics[unique] = float(value)


def _check_schema(profile: DriftProfile, schema: FeatureSchema) -> None:
    if profile.schema_fingerprint == schema_fingerprint(schema):
        return
    had = {profile.label, *profile.dense, *profile.categorical}
    has = set(schema.columns)
    raise DriftError(
        f"the drift profile was built on another schema (fingerprint "
        f"{profile.schema_fingerprint}, this one {schema_fingerprint(schema)}; columns only "
        f"in the profile: {sorted(had - has)}, only in the schema: {sorted(has - had)}, or a "
        "column changed kind); measure with the champion's schema or rebuild the profile"
    )


def _id_shares(
    ref: CategoricalProfile, values: pd.Series, multi_valued: bool, column: str
) -> tuple[np.ndarray, float]:
    """(K+1,) shares of the day's elements over the reference's top ids and "other", and the
    share of elements never seen by the reference. One hash lookup per element."""
    keys, codes, _ = id_keys(id_elements(values, multi_valued), column)
    position = pd.Index(ref.vocabulary).get_indexer(keys)  # -1: never seen
    top = ref.top_ids.size
    # bucket of each vocabulary position; the extra last entry catches position -1 (OOV).
    bucket_of = np.full(ref.vocabulary.size + 1, top)
    bucket_of[np.searchsorted(ref.vocabulary, ref.top_ids)] = np.arange(top)
    weights = None if codes is None else np.bincount(codes, minlength=keys.size)
    counts = np.bincount(bucket_of[position], weights=weights, minlength=top + 1)
    total = counts.sum()
    if total == 0:
        raise DriftError(f"current column {column!r} holds no ids (every bag is empty)")
    unseen = position < 0
    oov = unseen.sum() if weights is None else weights[unseen].sum()
    return counts / total, float(oov / total)


def _lifted(threshold, day_to_day, margin: float):
    """``threshold`` raised to ``margin`` x the reference's day-to-day value where there is
    one (NaN: none measured; an informational NaN threshold stays NaN)."""
    threshold = np.asarray(threshold, dtype=np.float64)
    lifted = np.fmax(threshold, margin * np.asarray(day_to_day, dtype=np.float64))
    return np.where(np.isnan(threshold), np.nan, lifted)


def day_to_day(
    days: Sequence[pd.DataFrame], schema: FeatureSchema, *, bins: int = 10, top_k: int = 50
) -> dict[str, float]:
    """How much the reference's days differ among themselves: for each deciding statistic
    (``"feature|statistic"``; the label's ``"label|rate_shift"`` as a magnitude), the
    largest value of one day measured against the other days of the window. Empty with
    fewer than two days; a day whose rest cannot be profiled (no clicks) is left out.
    (``label|rate_shift`` stands for the label column's name.)"""
    if len(days) < 2:
        return {}
    off = DriftThresholds(day_to_day_margin=0.0)
    found: dict[str, float] = {}
    for i, day in enumerate(days):
        rest = pd.concat([d for j, d in enumerate(days) if j != i], ignore_index=True)
        try:
            report = measure(
                DriftProfile.build(rest, schema, bins=bins, top_k=top_k),
                day,
                schema,
                thresholds=off,
            )
        except DriftError:
            continue
        deciding = report.table[report.table.threshold.notna()]
        for row in deciding.itertuples(index=False):
            key = f"{row.feature}|{row.statistic}"
            found[key] = max(found.get(key, 0.0), abs(float(row.value)))
    return found


def calibrated(profile: DriftProfile, days: Sequence[pd.DataFrame], schema) -> DriftProfile:
    """``profile`` (built on ``days`` concatenated) with their day-to-day values."""
    return replace(
        profile, day_to_day=day_to_day(days, schema, bins=profile.bins, top_k=profile.top_k)
    )


def _reasons(
    table: pd.DataFrame,
    share: float,
    prediction_psi: float | None,
    shift: float,
    profile: DriftProfile,
    t: DriftThresholds,
) -> tuple[DriftReason, ...]:
    """Every condition met, severe ones first (see the module docstring for the rule)."""
    found = []
    summary = [
        ("dataset_drift_share", share, t.share_warn, t.share_severe),
        ("abs_label_rate_shift", abs(shift), t.label_shift_warn, t.label_shift_severe),
    ]
    if prediction_psi is not None:
        summary.append(
            ("prediction_psi", prediction_psi, t.prediction_psi_warn, t.prediction_psi_severe)
        )
    margin, base = t.day_to_day_margin, profile.day_to_day
    for name, value, warn, severe in summary:
        if name == "abs_label_rate_shift":  # the label's thresholds rise with its days'
            warn, severe = (
                float(_lifted(x, base.get(f"{profile.label}|rate_shift", math.nan), margin))
                for x in (warn, severe)
            )
        for level, threshold in (("severe", severe), ("warn", warn)):
            if value >= threshold:
                found.append(DriftReason(level, name, float(value), float(threshold)))
                break
    alone = {
        ("dense", "psi"): t.psi_severe,
        ("categorical", "js"): t.js_severe,
        ("categorical", "linf"): t.linf_severe,
    }
    for row in table.itertuples(index=False):
        threshold = alone.get((row.kind, row.statistic))
        if row.statistic == "oov":
            threshold = profile.categorical[row.feature].singleton_share + t.oov_severe
        if threshold is not None:
            threshold = float(_lifted(threshold, row.day_to_day, margin))
        if threshold is not None and row.value >= threshold:
            found.append(
                DriftReason(
                    "warn", row.statistic, float(row.value), float(threshold), feature=row.feature
                )
            )
    return tuple(sorted(found, key=lambda r: -LEVELS.index(r.level)))
