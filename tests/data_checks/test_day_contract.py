"""Each contract check fails on the bad input it guards against and passes on a good day."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from quantrec.data_checks.contract import CheckResult, ValidationReport, build_suite, validate_day
from quantrec.data_checks.schema import FeatureSchema

SOURCE = "lake/day=2024-02-01/part-0.parquet"


Corruption = Callable[[pd.DataFrame], pd.DataFrame]


def _set(column: str, value: object, dtype: str | None = None) -> Corruption:
    """A corruption: the first rows of ``column`` get ``value`` (after a cast to ``dtype``)."""

    def corrupt(frame: pd.DataFrame) -> pd.DataFrame:
        values = frame[column].astype(dtype or frame[column].dtype).copy()
        values.iloc[:3] = value
        return frame.assign(**{column: values})

    return corrupt


# (corruption, the check that must fail, the column it must name)
BAD_DAYS = {
    "missing column": (lambda f: f.drop(columns=["dense_3"]), "columns_present", None),
    "NaN count": (_set("dense_2", np.nan), "dense_not_null", "dense_2"),
    "inf count": (_set("dense_2", np.inf), "dense_finite", None),
    "huge count": (_set("dense_5", 1e12), "dense_in_range", "dense_5"),
    "negative count": (_set("dense_5", -1.0), "dense_in_range", "dense_5"),
    "label 2": (_set("label", 2), "label_in_set", "label"),
    "null label": (_set("label", pd.NA, "Int8"), "label_not_null", "label"),
    "single class": (lambda f: f.assign(label=np.int8(0)), "label_both_classes", "label"),
    "empty": (lambda f: f.iloc[:0], "row_count", None),
    "null id": (_set("cat_4", pd.NA, "Int64"), "categorical_not_null", "cat_4"),
    "text label": (lambda f: f.assign(label=f.label.astype(str)), "dtypes", None),
}


def test_a_good_synthetic_day_passes(schema: FeatureSchema, good_day: pd.DataFrame) -> None:
    report = validate_day(good_day, schema, source=SOURCE)
    assert report.passed, report.summary()
    assert report.failed() == []
    assert report.rows == len(good_day)
    names = {c.name for c in report.checks}
    assert {"columns_present", "row_count", "label_in_set", "label_not_null"} <= names
    assert {"label_both_classes", "dense_not_null", "dense_in_range", "dense_finite"} <= names
    assert SOURCE in report.summary() and "passed" in report.summary()


@pytest.mark.parametrize("case", list(BAD_DAYS))
def test_each_check_fails_on_the_input_it_guards(
    case: str, schema: FeatureSchema, good_day: pd.DataFrame
) -> None:
    corrupt, check, column = BAD_DAYS[case]
    report = validate_day(corrupt(good_day), schema, source=SOURCE)
    assert not report.passed
    failed = {(c.name, c.column) for c in report.failed()}
    assert (check, column) in failed, failed
    summary = report.summary()
    assert SOURCE in summary and check in summary
    json.dumps(report.to_dict(), allow_nan=False)  # strict JSON, even with NaN/inf seen


def test_the_summary_names_the_value_and_the_fix(
    schema: FeatureSchema, good_day: pd.DataFrame
) -> None:
    bad = _set("label", 2)(good_day).drop(columns=["cat_7"])
    summary = validate_day(bad, schema, source=SOURCE).summary()
    assert "label_in_set on label" in summary and "[2, 2, 2]" in summary
    assert "'missing': ['cat_7']" in summary
    assert "map the upstream click flag to 0/1" in summary
    assert "failed 2 of" in summary


def test_missing_columns_do_not_turn_into_gx_errors(
    schema: FeatureSchema, good_day: pd.DataFrame
) -> None:
    report = validate_day(good_day.drop(columns=["label"]), schema, source=SOURCE)
    assert [c.name for c in report.failed()] == ["columns_present"]


def test_to_dict_is_json(schema: FeatureSchema, good_day: pd.DataFrame) -> None:
    from datetime import date

    report = validate_day(good_day, schema, source=SOURCE, day=date(2024, 2, 1))
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["day"] == "2024-02-01" and data["source"] == SOURCE and data["passed"] is True
    assert len(data["checks"]) == len(report.checks)


def test_an_extended_suite_reports_its_own_check(
    schema: FeatureSchema, good_day: pd.DataFrame
) -> None:
    import great_expectations as gx

    suite = build_suite(schema)
    # A later issue bounds values by a reference window; any GX expectation plugs in.
    suite.add_expectation(
        gx.expectations.ExpectColumnMaxToBeBetween(
            column="dense_0", max_value=1.0, meta={"check": "dense_0_reference_max"}
        )
    )
    report = validate_day(good_day, schema, source=SOURCE, suite=suite)
    assert [c.name for c in report.failed()] == ["dense_0_reference_max"]
    assert "dense_0_reference_max on dense_0" in report.summary()


def test_report_helpers_without_gx() -> None:
    checks = [CheckResult("row_count", False, 0, {"min_value": 1})]
    report = ValidationReport(source="x.parquet", day=None, passed=False, checks=checks)
    assert report.failed() == checks
    assert "row_count (observed 0" in report.summary() and "x.parquet" in report.summary()
