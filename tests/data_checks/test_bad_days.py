"""Each bad input named in the data issue ends in a failed report whose one-paragraph
summary names the file, the failed check, the observed value and the fix."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from quantrec.data_checks.contract import FIXES
from quantrec.data_checks.partition import reference_ids, report_from_error, validate_partition
from quantrec.data_checks.reference import (
    ReferenceProfile,
    Tolerances,
    build_reference_suite,
    profile_reference,
)
from quantrec.data_checks.render import report_html
from quantrec.data_checks.schema import FeatureSchema
from quantrec.feeds.lake import DayLake, LakeError
from quantrec.feeds.synthetic import SyntheticFeed

DAY = date(2024, 2, 8)
SOURCE = "lake/day=2024-02-08/part-0.parquet"
NOW = datetime(2024, 2, 9, 6, 0, tzinfo=UTC)  # the morning after DAY
ROWS = 2000


def _with_time(frame: pd.DataFrame, day: date, seed: int) -> pd.DataFrame:
    midnight = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
    seconds = np.sort(np.random.default_rng(seed).integers(0, 86_400, len(frame)))
    return frame.assign(ts=midnight + seconds)


@pytest.fixture(scope="module")
def schema() -> FeatureSchema:
    return SyntheticFeed().schema().model_copy(update={"timestamp": "ts"})


@pytest.fixture(scope="module")
def feed() -> SyntheticFeed:
    return SyntheticFeed(seed=5, rows_per_day=ROWS)


@pytest.fixture(scope="module")
def window(feed: SyntheticFeed) -> list[pd.DataFrame]:
    days = [DAY - timedelta(days=k) for k in (3, 2, 1)]
    return [_with_time(feed.day(d), d, k) for k, d in enumerate(days)]


@pytest.fixture(scope="module")
def profile(window, schema: FeatureSchema) -> ReferenceProfile:
    return profile_reference(window, schema)


@pytest.fixture(scope="module")
def known(window, schema: FeatureSchema) -> dict[str, pd.Index]:
    return reference_ids(window, schema)


@pytest.fixture(scope="module")
def suite(profile: ReferenceProfile, schema: FeatureSchema):
    return build_reference_suite(profile, schema)


@pytest.fixture(scope="module")
def good_day(feed: SyntheticFeed) -> pd.DataFrame:
    return _with_time(feed.day(DAY), DAY, 9)


def _validate(frame, schema, profile, suite, known=None):
    return validate_partition(
        frame,
        schema,
        source=SOURCE,
        day=DAY,
        profile=profile,
        suite=suite,
        now=NOW,
        reference_ids=known,
    )


def _first(column: str, value: object, rows: int = 3, dtype: str | None = None):
    def corrupt(frame: pd.DataFrame) -> pd.DataFrame:
        values = frame[column].astype(dtype or frame[column].dtype).copy()
        values.iloc[:rows] = value
        return frame.assign(**{column: values})

    return corrupt


def _duplicated(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([frame, frame.iloc[:400]], ignore_index=True)


def _flood(frame: pd.DataFrame) -> pd.DataFrame:
    # cat_16 has 10 ids; a day of 100 distinct ids is a x10 flood.
    return frame.assign(cat_16=np.arange(len(frame)) % 100)


def _relative_flood(frame: pd.DataFrame) -> pd.DataFrame:
    # The flood: ids drawn from 1M values, on a day no larger than the window's, so
    # the distinct count stays under 5 x the window's; nearly every row holds a new id.
    ids = np.random.default_rng(3).integers(0, 1_000_000, len(frame))
    return frame.assign(cat_2=ids)


def _shift_time(seconds: int, rows: int) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def corrupt(frame: pd.DataFrame) -> pd.DataFrame:
        ts = frame["ts"].to_numpy().copy()
        ts[:rows] += seconds
        return frame.assign(ts=ts)

    return corrupt


# case: (corruption, failed check, its column, a fragment of the observed value)
BAD_DAYS: dict[str, tuple[Callable, str, str | None, str]] = {
    "missing column": (
        lambda f: f.drop(columns=["dense_3"]),
        "columns_present",
        None,
        "'missing': ['dense_3']",
    ),
    "wrong dtype": (
        lambda f: f.assign(dense_4=f["dense_4"].astype(str)),
        "dtypes",
        None,
        "'dense_4': 'str'",
    ),
    "NaN in a dense column": (
        _first("dense_2", np.nan),
        "dense_not_null",
        "dense_2",
        "'unexpected_count': 3",
    ),
    "inf in a dense column": (_first("dense_2", np.inf), "dense_finite", None, "'dense_2': 3"),
    "empty day": (lambda f: f.iloc[:0], "row_count", None, "observed 0"),
    "single-class labels": (
        lambda f: f.assign(label=np.int8(0)),
        "label_both_classes",
        "label",
        "observed 0.0",
    ),
    "duplicated rows": (_duplicated, "duplicate_rows", None, "'rows': 400"),
    "id flood": (_flood, "id_cardinality", "cat_16", "observed 100"),
    "id flood relative to the day": (
        _relative_flood,
        "id_new_share",
        "cat_2",
        "'new_ids_per_row': 0.9985",
    ),
    "out-of-range values": (
        lambda f: f.assign(dense_5=f["dense_5"] * 1e4 + 1e6),
        "dense_reference_range",
        "dense_5",
        "'unexpected_percent': 100",
    ),
    "rows from other days": (
        _shift_time(-86_400, 50),
        "rows_from_other_days",
        "ts",
        "'2024-02-07': 50",
    ),
    "future dates": (_shift_time(3 * 86_400, 5), "future_dates", "ts", "'rows': 5"),
    "rows dated 2100": (
        lambda f: f.assign(ts=np.where(np.arange(len(f)) < 4, 4102444800, f["ts"])),
        "future_dates",
        "ts",
        "'latest': '2100-01-01T00:00:00+00:00'",
    ),
    "rows dated after the run date": (
        _shift_time(86_400, 7),
        "rows_from_other_days",
        "ts",
        "'2024-02-09': 7",
    ),
    "labels other than 0/1": (_first("label", 2), "label_in_set", "label", "[2, 2, 2]"),
}


def test_a_good_day_passes_the_reference_suite(good_day, schema, profile, suite, known) -> None:
    report = _validate(good_day, schema, profile, suite, known)
    assert report.passed, report.summary()
    names = {c.name for c in report.checks}
    assert {"label_rate", "dense_reference_range", "id_cardinality", "row_count_reference"} <= names
    assert {"duplicate_rows", "rows_from_other_days", "future_dates", "id_kind"} <= names
    assert "id_new_share" in names


@pytest.mark.parametrize("case", list(BAD_DAYS))
def test_each_bad_input_fails_with_a_one_paragraph_summary(
    case: str, good_day, schema, profile, suite, known
) -> None:
    corrupt, check, column, observed = BAD_DAYS[case]
    report = _validate(corrupt(good_day), schema, profile, suite, known)
    assert not report.passed
    assert (check, column) in {(c.name, c.column) for c in report.failed()}, report.summary()
    summary = report.summary()
    assert "\n" not in summary
    assert SOURCE in summary and check in summary and FIXES[check] in summary
    assert observed in summary, summary
    json.dumps(report.to_dict(), allow_nan=False)


def test_a_corrupt_parquet_file_becomes_a_failed_report(tmp_path: Path, good_day) -> None:
    lake = DayLake(tmp_path / "lake")
    path = lake.write(DAY, good_day)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated
    with pytest.raises(LakeError, match="part-0.parquet") as caught:
        lake.read(DAY)
    report = report_from_error(caught.value, source=str(path), day=DAY)
    summary = report.summary()
    assert not report.passed and "readable" in summary and str(path) in summary
    assert "LakeError" in summary and FIXES["readable"] in summary
    lake.quarantine(DAY, report.to_dict())  # the flow quarantines it like any bad day
    assert lake.reason(DAY)["reason"]["checks"][0]["name"] == "readable"


def test_the_relative_flood_passes_the_count_bound(good_day, schema, profile, suite, known):
    """Why the share check exists: the same flood is within the absolute count bound."""
    report = _validate(_relative_flood(good_day), schema, profile, suite, known)
    by_check = {(c.name, c.column): c for c in report.checks}
    assert by_check[("id_cardinality", "cat_2")].passed
    flood = by_check[("id_new_share", "cat_2")]
    assert not flood.passed and flood.observed["new_ids"] > 0.99 * ROWS
    limit = flood.expected["max_new_ids_per_row"]
    share = profile.unique_share["cat_2"]
    assert limit == pytest.approx(share + 0.5 * (1 - share), abs=1e-4) and limit < 0.9


def test_ids_seen_in_the_window_are_no_flood_however_distinct(
    good_day, schema, profile, suite, known
) -> None:
    """A day whose ids are all distinct but all known (a user rating each film once) passes."""
    ids = known["cat_3"][: len(good_day)]
    assert len(ids) > 0.9 * profile.unique_share["cat_3"] * ROWS
    day = good_day.iloc[: len(ids)].assign(cat_3=ids.to_numpy())
    report = _validate(day, schema, profile, suite, known)
    assert ("id_new_share", "cat_3") not in {(c.name, c.column) for c in report.failed()}


def test_a_profile_saved_before_unique_share_loads(tmp_path: Path, profile) -> None:
    data = json.loads(profile.to_json())
    del data["unique_share"]
    (tmp_path / "old.json").write_text(json.dumps(data))
    old = ReferenceProfile.load(tmp_path / "old.json")
    assert old.unique_share == {} and old.cardinality == profile.cardinality


def test_an_id_column_that_changes_kind_fails(good_day, schema, profile, suite) -> None:
    bad = good_day.assign(cat_0=good_day["cat_0"].astype(str))
    report = _validate(bad, schema, profile, suite)
    assert {"id_kind"} <= {c.name for c in report.failed()}
    assert "'cat_0': 'string'" in report.summary()


def test_the_profile_round_trips_through_json(tmp_path: Path, profile) -> None:
    profile.save(tmp_path / "reference.json")
    assert ReferenceProfile.load(tmp_path / "reference.json") == profile
    assert profile.days == 3 and profile.rows_per_day == (ROWS, ROWS)
    assert profile.tolerances == Tolerances()


def test_the_html_report_is_self_contained_and_escaped(good_day, schema, profile, suite) -> None:
    report = _validate(_first("label", 2)(good_day), schema, profile, suite)
    report.source = "lake/<day>.parquet"
    page = report_html(report)
    assert page.startswith("<!DOCTYPE html>") and "FAIL" in page
    assert "label_in_set" in page and "&lt;day&gt;" in page and "<day>" not in page
    assert "<script" not in page and "http" not in page
    assert page.index("label_in_set") < page.index("columns_present")  # failures first


def test_a_non_negative_column_may_reach_zero_outside_a_short_window(schema) -> None:
    # dense_0 was 4..6 in the window (Thursday to Sunday), dense_1 went negative.
    profile = ReferenceProfile(
        days=3,
        rows_per_day=(4, 4),
        label_rate=0.5,
        dense_range={"dense_0": (4.0, 6.0), "dense_1": (-2.0, 2.0)},
        cardinality={},
        id_kind={},
        duplicate_share=0.0,
    )
    expectations = {
        e.column: e
        for e in build_reference_suite(profile, schema).expectations
        if (e.meta or {}).get("check") == "dense_reference_range"
    }
    assert expectations["dense_0"].min_value == 0.0 and expectations["dense_0"].max_value == 9.0
    assert expectations["dense_1"].min_value == -4.0


def test_the_label_rate_tolerance_is_the_users_to_widen(good_day, schema, profile, suite) -> None:
    """A real low-click day: a fifth of the window's click rate fails the default [0.5, 2]
    band, and passes once the user widens it (``[validation] label_rate_factors``)."""
    rng = np.random.default_rng(0)
    clicks = np.flatnonzero(good_day["label"].to_numpy() == 1)
    quiet = good_day.copy()
    quiet.loc[rng.choice(clicks, size=int(len(clicks) * 0.8), replace=False), "label"] = 0
    strict = _validate(quiet, schema, profile, suite)
    assert not next(c for c in strict.checks if c.name == "label_rate").passed
    wide = dataclasses.replace(profile, tolerances=Tolerances(label_rate_factors=(0.1, 10.0)))
    relaxed = _validate(quiet, schema, wide, build_reference_suite(wide, schema))
    assert next(c for c in relaxed.checks if c.name == "label_rate").passed
