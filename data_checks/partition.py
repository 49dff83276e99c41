"""Validate one day partition against the contract and, if given, its reference window.

``validate_partition`` = ``validate_day`` (pandas structure checks + the GX suite) plus the
pandas checks GX cannot say clearly: the kind of each id column against the reference, an
id flood relative to the day (distinct ids unseen in the window, per row), fully duplicated
rows, rows dated on other days and rows dated in the future. Every
outcome is one ``ValidationReport``; a file that cannot even be read becomes a failed
report too (``report_from_error``), so a flow quarantines every bad day the same way.

Usage::

    try:
        frame = lake.read(run_date)
    except LakeError as err:
        report = report_from_error(err, source=str(lake.path(run_date)), day=run_date)
    else:
        report = validate_partition(frame, schema, source=str(lake.path(run_date)),
                                    day=run_date, profile=profile, suite=suite)
    if not report.passed:
        lake.quarantine(run_date, report.to_dict())
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from quantrec.data_checks.contract import CheckResult, ValidationReport, validate_day
from quantrec.data_checks.reference import ReferenceProfile, Tolerances, duplicate_share, id_kind
from quantrec.data_checks.schema import FeatureSchema

if TYPE_CHECKING:
    import great_expectations as gx

_EXAMPLES = 5


def validate_partition(
    frame: pd.DataFrame,
    schema: FeatureSchema,
    *,
    source: str,
    day: date | None = None,
    profile: ReferenceProfile | None = None,
    suite: gx.ExpectationSuite | None = None,
    now: datetime | None = None,
    reference_ids: Mapping[str, pd.Index] | None = None,
) -> ValidationReport:
    """Every check of one day; never raises on bad data.

    Args:
        frame: the partition.
        schema: the data contract.
        source: the partition's file or URI, quoted in the summary.
        day: the partition's calendar day (UTC); needed for ``rows_from_other_days``.
        profile: the reference window; without it only the contract is checked.
        suite: the suite to run, usually ``build_reference_suite(profile, schema)`` built
            once per run; default: the contract suite (``build_suite``).
        now: the clock for ``future_dates`` (default: the current UTC time).
        reference_ids: the distinct ids of each single-valued column over the reference
            days (``reference_ids``), for ``id_new_share``; None skips that check.
    """
    report = validate_day(frame, schema, source=source, day=day, suite=suite)
    tolerances = profile.tolerances if profile else Tolerances()
    extra = [_duplicates(frame, schema, profile, tolerances)]
    if profile is not None:
        extra.append(_id_kinds(frame, schema, profile))
        if reference_ids is not None:
            extra += _new_id_shares(frame, profile, reference_ids, tolerances)
    if schema.timestamp and schema.timestamp in frame.columns:
        extra += _timestamps(frame[schema.timestamp], day, tolerances, now or datetime.now(UTC))
    report.checks.extend(extra)
    report.passed = all(c.passed for c in report.checks)
    return report


def report_from_error(
    error: Exception, *, source: str, day: date | None = None
) -> ValidationReport:
    """A failed report for a partition that could not be read (``LakeError``, ArrowError)."""
    check = CheckResult(
        "readable", False, {"error": f"{type(error).__name__}: {error}"}, {"readable": True}
    )
    return ValidationReport(source=source, day=day, passed=False, checks=[check], rows=0)


def _duplicates(
    frame: pd.DataFrame,
    schema: FeatureSchema,
    profile: ReferenceProfile | None,
    tolerances: Tolerances,
) -> CheckResult:
    limit = tolerances.max_duplicate_share
    if profile is not None:
        limit = max(limit, 2 * profile.duplicate_share)
    try:
        share = duplicate_share(frame, schema)
    except TypeError as err:  # an unhashable cell where a scalar belongs
        return CheckResult("duplicate_rows", False, {"error": str(err)}, {"max_share": limit})
    observed = {"share": round(share, 6), "rows": int(round(share * len(frame)))}
    return CheckResult("duplicate_rows", share <= limit, observed, {"max_share": limit})


def reference_ids(days: list[pd.DataFrame], schema: FeatureSchema) -> dict[str, pd.Index]:
    """The distinct ids of each single-valued categorical column over ``days``."""
    single = [c.name for c in schema.categorical if not c.multi_valued]
    return {
        c: pd.Index(pd.unique(pd.concat([d[c] for d in days if c in d.columns]).dropna()))
        for c in single
    }


def _new_id_shares(
    frame: pd.DataFrame,
    profile: ReferenceProfile,
    known: Mapping[str, pd.Index],
    tolerances: Tolerances,
) -> list[CheckResult]:
    """Per id column: distinct ids unseen in the reference / the day's ids, at most the
    reference's share of distinct ids plus ``unique_share_headroom`` of the rest."""
    checks = []
    for column, share in profile.unique_share.items():
        if column not in frame.columns or column not in known:
            continue
        present = frame[column].dropna()
        try:
            new = pd.Index(pd.unique(present)).difference(known[column])
        except TypeError as err:  # ids of mixed kinds: id_kind / dtypes name it
            checks.append(CheckResult("id_new_share", False, {"error": str(err)}, {}, column))
            continue
        observed = len(new) / len(present) if len(present) else 0.0
        limit = share + tolerances.unique_share_headroom * (1.0 - share)
        checks.append(
            CheckResult(
                "id_new_share",
                observed <= limit,
                {
                    "new_ids_per_row": round(observed, 4),
                    "new_ids": len(new),
                    "rows": len(present),
                    "examples": new[:_EXAMPLES].tolist(),
                },
                {"max_new_ids_per_row": round(limit, 4), "window_distinct_per_row": share},
                column=column,
            )
        )
    return checks


def _id_kinds(frame: pd.DataFrame, schema: FeatureSchema, profile: ReferenceProfile) -> CheckResult:
    changed = {
        c.name: id_kind(frame[c.name], c.multi_valued)
        for c in schema.categorical
        if c.name in frame.columns and c.name in profile.id_kind
    }
    changed = {k: v for k, v in changed.items() if v != profile.id_kind[k]}
    expected = {k: profile.id_kind[k] for k in changed}
    return CheckResult("id_kind", not changed, changed, expected)


def _timestamps(
    values: pd.Series, day: date | None, tolerances: Tolerances, now: datetime
) -> list[CheckResult]:
    when = _utc(values)
    if when is None:
        return [
            CheckResult(
                "dtypes",
                False,
                {values.name: str(values.dtype)},
                {values.name: "epoch seconds or datetime"},
            )
        ]
    checks = []
    future = when > pd.Timestamp(now)
    checks.append(
        CheckResult(
            "future_dates",
            not future.any(),
            {
                "rows": int(future.sum()),
                "latest": _iso(when.max()),
                "examples": [_iso(t) for t in when[future].head(_EXAMPLES)],
            },
            {"latest_at_most": _iso(pd.Timestamp(now))},
            column=str(values.name),
        )
    )
    if day is not None:
        dates = when.dt.date
        other = (dates != day) & when.notna()
        share = float(other.mean()) if len(when) else 0.0
        counts = dates[other].value_counts().head(_EXAMPLES)
        checks.append(
            CheckResult(
                "rows_from_other_days",
                share <= tolerances.other_day_share,
                {
                    "rows": int(other.sum()),
                    "share": round(share, 6),
                    "days": {d.isoformat(): int(n) for d, n in counts.items()},
                },
                {"day": day.isoformat(), "max_share": tolerances.other_day_share},
                column=str(values.name),
            )
        )
    return checks


def _utc(values: pd.Series) -> pd.Series | None:
    """UTC datetimes from epoch seconds or datetimes (naive ones read as UTC); None if
    the column is neither."""
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        when = pd.to_datetime(values)
        return when.dt.tz_localize("UTC") if when.dt.tz is None else when.dt.tz_convert("UTC")
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values):
        seconds = values.to_numpy(dtype=np.float64, na_value=np.nan)
        return pd.to_datetime(seconds, unit="s", utc=True, errors="coerce").to_series(
            index=values.index, name=values.name
        )
    return None


def _iso(value: pd.Timestamp) -> str | None:
    return None if pd.isna(value) else value.isoformat()


def validate_lake_day(
    day_lake,
    day: date,
    window: tuple[date, ...],
    schema: FeatureSchema,
    *,
    tolerances: Tolerances | None = None,
) -> tuple[ValidationReport, ReferenceProfile | None]:
    """Validate ``day`` of ``day_lake`` (a ``feeds.lake.DayLake``) against the contract and the
    bounds learned from the ``window`` days within ``tolerances``; (report, the window's
    reference profile or None when the window is empty). A partition that cannot be read is
    a failed report."""
    from quantrec.data_checks.reference import build_reference_suite, profile_reference
    from quantrec.feeds.lake import LakeError

    source = str(day_lake.path(day))
    profile = suite = known = None
    if window:
        days = [day_lake.read(d) for d in window]
        profile = profile_reference(days, schema, tolerances=tolerances)
        suite = build_reference_suite(profile, schema)
        known = reference_ids(days, schema)
    try:
        frame = day_lake.read(day)
    except LakeError as err:
        return report_from_error(err, source=source, day=day), profile
    report = validate_partition(
        frame, schema, source=source, day=day, profile=profile, suite=suite, reference_ids=known
    )
    return report, profile


def contract_digest(schema: FeatureSchema) -> str:
    """A day's contract checks depend on the schema only: its digest keys the record of a
    day that passed them (``DayLake.mark_validated``)."""
    return hashlib.sha256(schema.to_json().encode()).hexdigest()[:16]


def validate_window_days(
    day_lake, days: tuple[date, ...], schema: FeatureSchema
) -> tuple[date, ValidationReport] | None:
    """The contract checks of every day a run trains on, oldest first: the first failing
    day with its report, or None when all pass. A day that passed before, unchanged since
    (``DayLake.is_validated``), is not read again; a day that passes now is recorded."""
    from quantrec.feeds.lake import LakeError

    contract = contract_digest(schema)
    for day in days:
        if day_lake.is_validated(day, contract):
            continue
        source = str(day_lake.path(day))
        try:
            frame = day_lake.read(day)
        except LakeError as err:
            return day, report_from_error(err, source=source, day=day)
        report = validate_partition(frame, schema, source=source, day=day)
        if not report.passed:
            return day, report
        day_lake.mark_validated(day, contract)
    return None
