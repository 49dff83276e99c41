"""Day validation: does one partition honour the data contract (``FeatureSchema``)?

Structure and dtypes are checked in pandas first (GX reports them poorly); values are
checked by a Great Expectations 1.x suite (``build_suite``) run on an in-memory batch.
Great Expectations is imported on first use, not at import: it costs ~5 s, and readers of
reports need none of it.

Usage::

    report = validate_day(frame, schema, source="lake/day=2024-01-15/part-0.parquet")
    if not report.passed:
        raise SystemExit(report.summary())
"""

from __future__ import annotations

import copy
import math
import threading
from dataclasses import asdict, dataclass, field
from datetime import date
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from quantrec.data_checks.schema import FeatureSchema

if TYPE_CHECKING:
    import great_expectations as gx

SUITE_NAME = "quantrec.day_contract"
# Counts are non-negative; above 1e9 a count is a sentinel, an overflow or a unit change.
DENSE_RANGE: tuple[float, float] = (0.0, 1e9)
_EXAMPLES = 5  # offending values quoted per check
# One GX context serves the process and GX contexts are not thread-safe; Prefect's thread
# pool may validate two days at once.
_GX_LOCK = threading.Lock()
# The label mean lies strictly inside (0, 1) iff both classes occur.
_STRICT_UNIT = {"min_value": 0, "max_value": 1, "strict_min": True, "strict_max": True}

# How to fix a failed check, keyed by check name (the ``meta["check"]`` of an expectation).
FIXES: dict[str, str] = {
    "columns_present": "re-export the day with every schema column (or change the schema "
    "and retrain)",
    "dtypes": "cast at ingestion: label to integer 0/1, dense to float, ids to int64 or str",
    "dense_finite": "replace inf at ingestion and find the upstream division by zero",
    "row_count": "the day is empty; check the upstream export finished, then re-ingest",
    "label_not_null": "drop or repair unlabeled rows (a late click join?) and re-ingest",
    "label_in_set": "map the upstream click flag to 0/1 at ingestion",
    "label_both_classes": "a day of only clicks or only non-clicks means the click join "
    "failed; re-run it",
    "dense_not_null": "fill missing counts at ingestion (0 if absent means none) or fix "
    "the upstream join",
    "dense_in_range": "look for sentinels, overflows or a unit change in the upstream export",
    "categorical_not_null": "map missing ids to an explicit unknown id at ingestion",
    # Checks against a reference window (data_checks.reference) and pandas pre-checks.
    "row_count_reference": "compare with the upstream export's row count: a partial or "
    "doubled export; re-ingest the day once the export is complete",
    "label_rate": "check the click join and bot filtering of this day before training on it",
    "dense_reference_range": "look for a unit change or a new default value upstream; if "
    "the change is real, rebuild the reference window",
    "id_cardinality": "an id flood: look for bots, a hashing bug or a session id written "
    "into an id column",
    "id_new_share": "an id flood relative to the day: nearly every row holds an id never "
    "seen in the window (bots, a hashing bug, a session or request id in an id column)",
    "id_valid": "negative ids are broken join keys; map them to an unknown id upstream",
    "id_kind": "cast ids to the kind the reference used (integer vs string hash to different rows)",
    "timestamp_present": "export the event-time column named in the schema",
    "duplicate_rows": "de-duplicate at ingestion: a replayed or doubled export",
    "rows_from_other_days": "re-partition by event time (UTC): the file holds rows of other days",
    "future_dates": "fix the upstream clock or time zone; drop rows dated in the future",
    "readable": "the file is truncated or not Parquet: quarantine the day and re-ingest it "
    "from its source",
}


@dataclass(frozen=True)
class CheckResult:
    """One check of one day. ``observed`` and ``expected`` are JSON-able."""

    name: str
    passed: bool
    observed: Any
    expected: Any
    column: str | None = None

    def describe(self) -> str:
        where = f" on {self.column}" if self.column else ""
        fix = FIXES.get(self.name, "see the check's expectation")
        return (
            f"{self.name}{where} (observed {_short(self.observed)}; "
            f"expected {_short(self.expected)}): {fix}"
        )


@dataclass
class ValidationReport:
    """Every check of one day partition; ``passed`` iff every check passed."""

    source: str
    day: date | None
    passed: bool
    checks: list[CheckResult] = field(default_factory=list)
    rows: int = 0

    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: dates as ISO strings, non-finite floats as strings."""
        out = asdict(self)
        out["day"] = self.day.isoformat() if self.day else None
        return _jsonable(out)

    def summary(self) -> str:
        """One paragraph: the source, and each failed check with its value and its fix."""
        when = f"day {self.day} " if self.day else ""
        head = f"Partition {when}from {self.source} ({self.rows} rows)"
        if self.passed:
            return f"{head} passed all {len(self.checks)} contract checks."
        failed = self.failed()
        body = "; ".join(c.describe() for c in failed)
        return f"{head} failed {len(failed)} of {len(self.checks)} contract checks: {body}."


def build_suite(
    schema: FeatureSchema, *, dense_range: tuple[float, float] = DENSE_RANGE
) -> gx.ExpectationSuite:
    """The expectation suite of the contract; extend it and pass it to ``validate_day``.

    Every expectation carries ``meta={"check": <name>}``; the report uses that name.
    """
    import great_expectations as gx

    with _GX_LOCK:
        _context()  # GX suites accept expectations only while a context is active
    E = gx.expectations  # noqa: N806 - GX's own spelling
    label, (low, high) = schema.label, dense_range
    bounds = {"min_value": low, "max_value": high}
    suite = gx.ExpectationSuite(name=SUITE_NAME)
    add = suite.add_expectation
    # A dropped or renamed column would feed zeros or the wrong table to the model;
    # extra columns (a row id, a timestamp) are harmless, hence no exact match.
    add(
        E.ExpectTableColumnsToMatchSet(
            column_set=schema.columns, exact_match=False, meta=_m("columns_present")
        )
    )
    # An empty day would train on nothing and score as perfect.
    add(E.ExpectTableRowCountToBeBetween(min_value=1, meta=_m("row_count")))
    # Unlabeled rows (a late click join) would be read as non-clicks.
    add(E.ExpectColumnValuesToNotBeNull(column=label, meta=_m("label_not_null")))
    # A label of 2 or -1 (a count, a sentinel) breaks the log loss silently.
    add(E.ExpectColumnValuesToBeInSet(column=label, value_set=[0, 1], meta=_m("label_in_set")))
    # A single-class day means the click join failed; NE and AUC are undefined on it.
    add(E.ExpectColumnMeanToBeBetween(column=label, **_STRICT_UNIT, meta=_m("label_both_classes")))
    for column in schema.dense:
        # NaN counts become NaN activations and NaN gradients.
        add(E.ExpectColumnValuesToNotBeNull(column=column, meta=_m("dense_not_null")))
        # Sentinels, overflows and unit changes hide as huge or negative counts.
        add(E.ExpectColumnValuesToBeBetween(column=column, **bounds, meta=_m("dense_in_range")))
    for column in schema.categorical_names:
        # A null id has no embedding row; hashing it would invent one.
        add(E.ExpectColumnValuesToNotBeNull(column=column, meta=_m("categorical_not_null")))
    return suite


def validate_day(
    frame: pd.DataFrame,
    schema: FeatureSchema,
    *,
    source: str,
    day: date | None = None,
    suite: gx.ExpectationSuite | None = None,
) -> ValidationReport:
    """Check one day partition against the contract; never raises on bad data.

    Args:
        frame: the partition, one row per impression.
        schema: the data contract.
        source: where the frame came from (a file path or URI), quoted in the summary.
        day: the run date of the partition, if known.
        suite: an extended suite from ``build_suite``; the default suite otherwise.
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"validate_day needs a pandas DataFrame from {source}; got {type(frame)}")
    checks = [
        *_structure_checks(frame, schema),
        *_run_suite(frame, schema, suite or _default_suite(schema)),
    ]
    passed = all(c.passed for c in checks)
    return ValidationReport(source=source, day=day, passed=passed, checks=checks, rows=len(frame))


def _structure_checks(frame: pd.DataFrame, schema: FeatureSchema) -> list[CheckResult]:
    """dtypes and inf, which GX reports as a type error or a bare out-of-range count."""
    wrong: dict[str, str] = {}
    expected: dict[str, str] = {}
    kinds = [(schema.label, "integer 0/1", lambda v: _is_label_dtype(v.dtype))]
    kinds += [(c, "numeric", lambda v: _is_numeric(v.dtype)) for c in schema.dense]
    kinds += [
        (c.name, "list of ids", _is_bag_column)
        if c.multi_valued
        else (c.name, "integer or string id", _is_id_dtype)
        for c in schema.categorical
    ]
    for column, kind, ok in kinds:
        if column in frame.columns and not ok(frame[column]):
            wrong[column], expected[column] = str(frame[column].dtype), kind
    infinite = {
        c: int(np.isinf(frame[c].to_numpy()).sum())
        for c in schema.dense
        if c in frame.columns and _is_numeric(frame[c].dtype)
    }
    infinite = {c: n for c, n in infinite.items() if n}
    return [
        CheckResult("dtypes", not wrong, wrong, expected),
        CheckResult("dense_finite", not infinite, {"inf_rows": infinite}, {"inf_rows": {}}),
    ]


def _is_label_dtype(dtype: Any) -> bool:
    return pd.api.types.is_integer_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)


def _is_numeric(dtype: Any) -> bool:
    return pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)


def _is_id_dtype(values: pd.Series) -> bool:
    dtype = values.dtype
    return pd.api.types.is_integer_dtype(dtype) or pd.api.types.is_string_dtype(dtype)


def _is_bag_column(values: pd.Series) -> bool:
    """A list per cell: an arrow list column, or object cells holding lists / arrays."""
    if isinstance(values.dtype, pd.ArrowDtype):
        return "list" in str(values.dtype.pyarrow_dtype)
    if values.dtype != object:
        return False
    present = values.dropna()
    return present.empty or isinstance(present.iloc[0], (list, tuple, np.ndarray))


def _run_suite(
    frame: pd.DataFrame, schema: FeatureSchema, suite: gx.ExpectationSuite
) -> list[CheckResult]:
    import great_expectations as gx

    present = set(frame.columns)
    # Column checks on absent columns would only repeat columns_present as GX errors.
    runnable = [
        copy.copy(e) for e in suite.expectations if getattr(e, "column", None) in present | {None}
    ]
    batch_frame = frame.astype(
        {c: "float64" for c in schema.dense if c in present and _is_numeric(frame[c].dtype)}
    )  # GX 1.24 vectorises range checks only on float64/int64; float32 loops in Python.
    with _GX_LOCK:
        batch = _batch_definition().get_batch(batch_parameters={"dataframe": batch_frame})
        result = batch.validate(
            gx.ExpectationSuite(name=suite.name, expectations=runnable),
            result_format={"result_format": "BASIC", "partial_unexpected_count": _EXAMPLES},
        )
    return [_to_check(r) for r in result.results]


@lru_cache(maxsize=1)
def _context() -> Any:
    """One ephemeral (in-memory) GX context per process; it becomes GX's active project."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        progress_bars=ProgressBarsConfig(globally=False),  # no bars in task logs
        analytics_enabled=False,
    )
    return gx.get_context(mode="ephemeral", project_config=config)


@lru_cache(maxsize=1)
def _batch_definition() -> Any:
    """The in-memory dataframe asset every day is validated through."""
    asset = _context().data_sources.add_pandas("quantrec").add_dataframe_asset("day")
    return asset.add_batch_definition_whole_dataframe("whole_day")


@lru_cache(maxsize=8)
def _default_suite(schema: FeatureSchema) -> gx.ExpectationSuite:
    return build_suite(schema)


def _to_check(result: Any) -> CheckResult:
    config = result.expectation_config
    kwargs = {k: v for k, v in config.kwargs.items() if k not in ("batch_id", "column")}
    name = (config.meta or {}).get("check", config.type)
    observed = _observed(result)
    return CheckResult(
        name=name,
        passed=bool(result.success),
        observed=_jsonable(observed),
        expected=_jsonable(kwargs or {"unexpected_count": 0}),
        column=config.kwargs.get("column"),
    )


def _observed(result: Any) -> Any:
    info = result.exception_info or {}
    if info.get("raised_exception"):
        return {"error": str(info.get("exception_message"))}
    body = result.result or {}
    if "unexpected_count" in body:
        return {
            "unexpected_count": body["unexpected_count"],
            "unexpected_percent": body.get("unexpected_percent"),
            "examples": body.get("partial_unexpected_list", [])[:_EXAMPLES],
        }
    observed = body.get("observed_value")
    missing = (body.get("details") or {}).get("mismatched", {}).get("missing")
    return {"missing": missing} if missing else observed


def _m(check: str) -> dict[str, str]:
    return {"check": check}


def _short(value: Any, limit: int = 160) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _jsonable(value: Any) -> Any:
    """Plain JSON types: numpy scalars unwrapped, NaN/inf as strings, tuples as lists."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, date):
        return value.isoformat()
    return str(value)
