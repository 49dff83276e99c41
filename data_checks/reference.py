"""Expectations learned from a reference window: what a normal day of this feed looks like.

``profile_reference`` summarises the reference days (usually the training window) into a
``ReferenceProfile`` (JSON-able, logged beside each model); ``build_reference_suite`` turns
it into the contract suite plus bounds with a margin. ``Tolerances`` holds every margin in
one place.

Usage::

    profile = profile_reference([lake.read(d) for d in window], schema)
    suite = build_reference_suite(profile, schema)
    report = validate_partition(frame, schema, source=path, day=run_date,
                                profile=profile, suite=suite)
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from quantrec.data_checks.contract import build_suite
from quantrec.data_checks.schema import FeatureSchema, SchemaError

if TYPE_CHECKING:
    import great_expectations as gx


@dataclass(frozen=True)
class Tolerances:
    """How far a day may stray from its reference window before a check fails.

    Args:
        margin: share of the reference range (at least of its max) added above its max and,
            for a column that goes negative, below its min; a non-negative column's floor
            is 0.
        range_mostly: share of a dense column's rows that must lie inside that range (a
            few new extremes are normal in heavy-tailed counts; a unit change moves most).
        label_rate_factors: the click rate must lie in [low * reference, high * reference].
        row_factors: the row count must lie in [low * smallest, high * largest] reference day.
        cardinality_factor: distinct ids of a day at most this times the reference's largest.
        unique_share_headroom: the day's distinct ids unseen in the reference, per row, may
            exceed the reference's largest share of distinct ids per row by at most this
            part of what is left up to 1 (0.5: a share of 0.2 allows 0.6, 0.9 allows 0.95);
            ``data_checks.partition``'s ``id_new_share``. The count bound alone misses a
            flood on a day no larger than the window: 5k rows whose ids come from 1M values
            hold ~5k distinct ids, within 5 x a window day's 1.1k, yet 1.0 new per row
            against 0.22. Distinct ids alone are no flood: on MovieLens a day's items are
            mostly distinct (a user rates each film once) and 23 of 198 days exceed the
            bound; counting only ids new to the window none does (the closest at 0.91 of it).
        max_duplicate_share: share of fully duplicated rows allowed (or twice the reference's,
            if larger).
        other_day_share: share of rows whose timestamp lies on another day allowed.
    """

    margin: float = 0.5
    range_mostly: float = 0.99
    label_rate_factors: tuple[float, float] = (0.5, 2.0)
    row_factors: tuple[float, float] = (0.2, 5.0)
    cardinality_factor: float = 5.0
    unique_share_headroom: float = 0.5
    max_duplicate_share: float = 0.05
    other_day_share: float = 0.0


@dataclass(frozen=True)
class ReferenceProfile:
    """Statistics of the reference days; every per-column map is keyed by column name.

    Attributes:
        days: reference days summarised.
        rows_per_day: (smallest, largest) rows of a reference day.
        label_rate: share of positive labels over the window.
        dense_range: (min, max) of each dense column over the window (finite values).
        cardinality: largest count of distinct ids of a single-valued column in one day.
        id_kind: "integer", "string" or "bag" per categorical column.
        duplicate_share: largest share of fully duplicated rows in one reference day.
        unique_share: largest share of distinct ids among one day's non-null ids, per
            single-valued column (profiles saved before it existed load with none).
    """

    days: int
    rows_per_day: tuple[int, int]
    label_rate: float
    dense_range: dict[str, tuple[float, float]]
    cardinality: dict[str, int]
    id_kind: dict[str, str]
    duplicate_share: float
    tolerances: Tolerances = field(default_factory=Tolerances)
    unique_share: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ReferenceProfile:
        data = json.loads(text)
        data["tolerances"] = Tolerances(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in data["tolerances"].items()}
        )
        data["rows_per_day"] = tuple(data["rows_per_day"])
        data["dense_range"] = {k: tuple(v) for k, v in data["dense_range"].items()}
        return cls(**data)

    def save(self, path: Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: Path) -> ReferenceProfile:
        try:
            return cls.from_json(Path(path).read_text())
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise SchemaError(
                f"cannot read reference profile {path}: {err}; rebuild it with "
                "profile_reference on the reference days"
            ) from err


def profile_reference(
    days: pd.DataFrame | Sequence[pd.DataFrame],
    schema: FeatureSchema,
    *,
    tolerances: Tolerances | None = None,
) -> ReferenceProfile:
    """Summarise reference days (a list of day frames, or one frame holding one day).

    The reference should itself be valid (validate each day first): its NaN and inf are
    ignored here, but a bad day would widen every bound.
    """
    frames = [days] if isinstance(days, pd.DataFrame) else list(days)
    if not frames or sum(len(f) for f in frames) == 0:
        raise SchemaError("profile_reference needs at least one non-empty reference day")
    missing = sorted({c for f in frames for c in schema.columns if c not in f.columns})
    if missing:
        raise SchemaError(f"reference days lack schema column(s) {missing}")
    whole = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    labels = pd.to_numeric(whole[schema.label], errors="coerce")
    single = [c.name for c in schema.categorical if not c.multi_valued]
    return ReferenceProfile(
        days=len(frames),
        rows_per_day=(min(map(len, frames)), max(map(len, frames))),
        label_rate=float(labels.mean()),
        dense_range={c: _finite_range(whole[c]) for c in schema.dense},
        cardinality={c: max(int(f[c].nunique()) for f in frames) for c in single},
        id_kind={c.name: id_kind(whole[c.name], c.multi_valued) for c in schema.categorical},
        duplicate_share=max(duplicate_share(f, schema) for f in frames),
        tolerances=tolerances or Tolerances(),
        unique_share={c: max(unique_share(f[c]) for f in frames) for c in single},
    )


def build_reference_suite(profile: ReferenceProfile, schema: FeatureSchema) -> gx.ExpectationSuite:
    """The contract suite (``build_suite``) plus the reference window's bounds."""
    import great_expectations as gx

    E = gx.expectations  # noqa: N806 - GX's own spelling
    tol = profile.tolerances
    suite = build_suite(schema)
    suite.name = "quantrec.day_contract_with_reference"
    add = suite.add_expectation
    low_rows, high_rows = profile.rows_per_day
    rows = {
        "min_value": math.floor(low_rows * tol.row_factors[0]),
        "max_value": math.ceil(high_rows * tol.row_factors[1]),
    }
    # A half-exported day (or a doubled one) trains on a skewed sample of the traffic.
    add(E.ExpectTableRowCountToBeBetween(**rows, meta=_m("row_count_reference")))
    rate = profile.label_rate
    low_rate, high_rate = (rate * f for f in tol.label_rate_factors)
    # A broken click join or a bot wave moves the click rate far from the window's.
    rate_bounds = {"min_value": low_rate, "max_value": min(high_rate, 1.0)}
    add(E.ExpectColumnMeanToBeBetween(column=schema.label, **rate_bounds, meta=_m("label_rate")))
    for column, (low, high) in profile.dense_range.items():
        pad = tol.margin * max(high - low, abs(high), 1.0)
        # A non-negative column may reach 0 (a Monday after a window of Thursday to
        # Sunday, an item's first day): only a negative value is out of its range.
        floor = 0.0 if low >= 0 else low - pad
        # A unit change or a new default value moves most of a column out of its range.
        add(
            E.ExpectColumnValuesToBeBetween(
                column=column,
                min_value=floor,
                max_value=high + pad,
                mostly=tol.range_mostly,
                meta=_m("dense_reference_range"),
            )
        )
    for column, distinct in profile.cardinality.items():
        # An id flood (a bot, a hashing bug, a session id in an id column) swamps a table.
        add(
            E.ExpectColumnUniqueValueCountToBeBetween(
                column=column,
                max_value=math.ceil(distinct * tol.cardinality_factor),
                meta=_m("id_cardinality"),
            )
        )
    for column, kind in profile.id_kind.items():
        if kind == "integer":
            # A negative or sentinel id where the window had none is a broken join key.
            add(E.ExpectColumnValuesToBeBetween(column=column, min_value=0, meta=_m("id_valid")))
    if schema.timestamp:
        # Without event time, rows of other days and future dates go unseen.
        add(E.ExpectColumnToExist(column=schema.timestamp, meta=_m("timestamp_present")))
    return suite


def id_kind(values: pd.Series, multi_valued: bool) -> str:
    """ "integer", "string", "bag" or the dtype's name: ids hash by kind, so a change of kind
    sends every id to a different embedding row."""
    if multi_valued:
        return "bag"
    if pd.api.types.is_integer_dtype(values.dtype):
        return "integer"
    if pd.api.types.is_string_dtype(values.dtype):
        return "string"
    return str(values.dtype)


def unique_share(values: pd.Series) -> float:
    """Distinct ids / non-null ids of one day (GX's proportion of unique values); 0 if
    none."""
    present = values.dropna()
    return float(present.nunique() / len(present)) if len(present) else 0.0


def duplicate_share(frame: pd.DataFrame, schema: FeatureSchema) -> float:
    """Share of rows equal to an earlier row on every column but the bags.

    Rows are compared by a 64-bit hash of each row (collisions ~1e-19 per pair); bag
    columns are left out because lists do not hash, and the timestamp (if any) is kept.
    """
    if len(frame) == 0:
        return 0.0
    columns = [
        c
        for c in schema.partition_columns
        if c in frame.columns and c not in schema.multi_valued_names
    ]
    hashed = pd.util.hash_pandas_object(frame[columns], index=False)
    return float(hashed.duplicated().mean())


def _finite_range(values: pd.Series) -> tuple[float, float]:
    array = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    array = array[np.isfinite(array)]
    return (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)


def _m(check: str) -> dict[str, str]:
    return {"check": check}
