"""Days of the real feeds (bags of ids, event time) pass the checks, also after the lake."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd

from quantrec.data_checks.drift import DriftProfile, measure
from quantrec.data_checks.partition import validate_partition
from quantrec.data_checks.reference import build_reference_suite, profile_reference
from quantrec.feeds.lake import DayLake
from quantrec.feeds.table import TableFeed
from quantrec.feeds.table_example import write_example

NOW = datetime(2024, 6, 1, tzinfo=UTC)


def test_table_days_with_bags_pass_before_and_after_the_lake(tmp_path: Path) -> None:
    feed = TableFeed(spec=write_example(tmp_path / "example"))
    schema = feed.schema()
    window = [date(2024, 1, k) for k in range(1, 8)]
    profile = profile_reference([feed.day(d) for d in window], schema)
    assert profile.id_kind["tags"] == "bag" and "tags" not in profile.cardinality
    suite = build_reference_suite(profile, schema)
    run_date = date(2024, 1, 8)
    lake = DayLake(tmp_path / "lake")
    lake.write(run_date, feed.day(run_date))
    lake.write(run_date, feed.day(run_date))  # write-once: the same bags are the same day
    for frame in (feed.day(run_date), lake.read(run_date)):
        report = validate_partition(
            frame, schema, source="t", day=run_date, profile=profile, suite=suite, now=NOW
        )
        assert report.passed, report.summary()


def test_a_scalar_where_a_bag_belongs_is_a_dtype_failure(tmp_path: Path) -> None:
    feed = TableFeed(spec=write_example(tmp_path / "example"))
    frame = feed.day(date(2024, 1, 2)).assign(tags="sale")
    report = validate_partition(frame, feed.schema(), source="t", day=date(2024, 1, 2), now=NOW)
    assert "dtypes" in {c.name for c in report.failed()}
    assert "'tags': 'str'" in report.summary() and "list of ids" in report.summary()


def test_drift_counts_each_id_of_a_bag(tmp_path: Path) -> None:
    feed = TableFeed(spec=write_example(tmp_path / "example"))
    reference = pd.concat([feed.day(date(2024, 1, k)) for k in (1, 2, 3)], ignore_index=True)
    profile = DriftProfile.build(reference, feed.schema())
    current = feed.day(date(2024, 1, 4))
    table = measure(profile, current, feed.schema()).table.set_index(["feature", "statistic"])
    assert table.value[("tags", "oov")] == 0.0  # the same six tags every day
    unseen = current.assign(tags=[["brand-new"]] * len(current))
    drifted = measure(profile, unseen, feed.schema()).table.set_index(["feature", "statistic"])
    assert drifted.value[("tags", "oov")] == 1.0 and drifted.value[("tags", "psi")] > 1.0
