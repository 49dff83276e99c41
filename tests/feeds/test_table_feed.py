"""Bring-your-own tables: the mapping file, safe label rules, UTC days, bags of ids."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from quantrec.feeds.base import FeedError, SmallDayError
from quantrec.feeds.table import TableFeed, TableFeedConfig, parse_label_rule
from quantrec.feeds.table_example import EXAMPLE_SPEC, example_frame, write_example
from quantrec.models.batch import batch_from_frame

SPEC = """
files = ["log.*"]
[label]
column = "clicked"
[timestamp]
column = "when"
unit = "{unit}"
[features]
dense = ["price"]
categorical = ["user"]
multi_valued = ["tags"]
"""


def test_the_worked_example_gives_ten_days_that_build_batches(tmp_path: Path) -> None:
    feed = TableFeedConfig(spec=str(write_example(tmp_path))).build(date(2024, 1, 8))
    assert feed.available_days() == [date(2024, 1, k) for k in range(1, 11)]
    frame = feed.day(date(2024, 1, 8))
    schema = feed.schema()
    assert list(frame.columns) == schema.partition_columns and len(frame) == 400
    assert 0.05 < frame["label"].mean() < 0.6
    assert frame["ts"].is_monotonic_increasing
    raw = example_frame()
    expected = raw[(raw.ts >= 1704672000) & (raw.ts < 1704758400)].sort_values("ts", kind="stable")
    assert frame["label"].tolist() == (expected["rating"] >= 4).astype(int).tolist()
    assert [list(t) for t in frame["tags"]] == [
        t.split("|") if t else [] for t in expected["tags"].fillna("")
    ]
    batch = batch_from_frame(frame, schema)
    assert batch.sparse.keys[-1] == "tags" and len(batch) == 400
    assert schema.timestamp == "ts" and schema.categorical[-1].multi_valued


@pytest.mark.parametrize(
    ("text", "column", "op", "threshold"),
    [
        ("rating >= 4", "rating", ">=", 4.0),
        ("score<-0.5", "score", "<", -0.5),
        (" clicks == 1 ", "clicks", "==", 1.0),
    ],
)
def test_label_rules_parse(text: str, column: str, op: str, threshold: float) -> None:
    rule = parse_label_rule(text)
    assert (rule.column, rule.op, rule.threshold) == (column, op, threshold)


@pytest.mark.parametrize(
    "text", ["rating >= four", "__import__('os').system('true')", "a >= 1 or 1", "rating => 4"]
)
def test_anything_but_column_op_number_is_refused(text: str) -> None:
    with pytest.raises(FeedError, match="is not '<column> <op> <number>'"):
        parse_label_rule(text)


def test_an_invalid_spec_names_the_file_the_field_and_the_value(tmp_path: Path) -> None:
    spec = tmp_path / "bad.toml"
    spec.write_text(EXAMPLE_SPEC.replace('unit = "s"', 'unit = "minutes"'))
    with pytest.raises(FeedError, match=r"bad\.toml.*timestamp\.unit.*'minutes'"):
        TableFeed(spec=spec)
    spec.write_text(EXAMPLE_SPEC.replace('rule = "rating >= 4"', 'rule = "rating >> 4"'))
    with pytest.raises(FeedError, match=r"bad\.toml.*rating >> 4"):
        TableFeed(spec=spec)
    spec.write_text(EXAMPLE_SPEC)
    with pytest.raises(FeedError, match="match no file.*--path"):
        TableFeed(spec=spec).day(date(2024, 1, 1))


def _log(unit: str) -> pd.DataFrame:
    seconds = np.array([1704067200, 1704067200 + 3600, 1704153600 - 1, 1704153600])  # UTC
    iso = pd.to_datetime(seconds, unit="s", utc=True).strftime("%Y-%m-%dT%H:%M:%S%z")
    when = {"s": seconds, "ms": seconds * 1000, "iso": iso}
    return pd.DataFrame(
        {
            "when": when[unit],
            "clicked": [1, 0, 0, 1],
            "price": [1.0, 2.0, 3.0, 4.0],
            "user": ["a", "b", "a", "c"],
            "tags": ["x|y", "", "z", "x"],
        }
    )


@pytest.mark.parametrize("unit", ["s", "ms", "iso"])
def test_rows_fall_on_their_utc_day_whatever_the_unit(tmp_path: Path, unit: str) -> None:
    (tmp_path / "spec.toml").write_text(SPEC.format(unit=unit))
    _log(unit).to_csv(tmp_path / "log.csv", index=False)
    feed = TableFeed(spec=tmp_path / "spec.toml")
    assert feed.available_days() == [date(2024, 1, 1), date(2024, 1, 2)]
    first = feed.day(date(2024, 1, 1))
    assert first["price"].tolist() == [1.0, 2.0, 3.0]
    assert [list(t) for t in first["tags"]] == [["x", "y"], [], ["z"]]
    assert first["when"].tolist() == [1704067200, 1704070800, 1704153599]  # epoch seconds


def test_parquet_list_columns_are_bags_and_labels_pass_through(tmp_path: Path) -> None:
    (tmp_path / "spec.toml").write_text(SPEC.format(unit="s"))
    log = _log("s").assign(tags=[["x", "y"], [], ["z"], None], clicked=[1, 2, 0, 1])
    pq.write_table(pa.Table.from_pandas(log), tmp_path / "log.parquet")
    feed = TableFeed(spec=tmp_path / "spec.toml", min_rows=1)
    frame = feed.day(date(2024, 1, 1))
    assert frame["label"].tolist() == [1, 2, 0]  # the day checks, not the feed, refuse a 2
    assert [list(t) for t in feed.day(date(2024, 1, 2))["tags"]] == [[]]
    with pytest.raises(SmallDayError, match="holds 1 row"):
        TableFeed(spec=tmp_path / "spec.toml", min_rows=2).day(date(2024, 1, 2))


def test_a_file_without_a_spec_column_is_named(tmp_path: Path) -> None:
    (tmp_path / "spec.toml").write_text(SPEC.format(unit="s"))
    _log("s").drop(columns=["price"]).to_csv(tmp_path / "log.csv", index=False)
    with pytest.raises(FeedError, match=r"log\.csv lacks column\(s\) \['price'\]"):
        TableFeed(spec=tmp_path / "spec.toml").available_days()


def test_unparseable_timestamps_are_quoted(tmp_path: Path) -> None:
    (tmp_path / "spec.toml").write_text(SPEC.format(unit="s"))
    _log("s").assign(when=["1704067200", "soon", "1704067300", ""]).to_csv(
        tmp_path / "log.csv", index=False
    )
    with pytest.raises(FeedError, match=r"'when' holds 2 missing or unparseable.*soon"):
        TableFeed(spec=tmp_path / "spec.toml").available_days()


def test_the_spec_names_its_users_and_items_for_the_slices(tmp_path: Path) -> None:
    from quantrec.models.evaluation import slice_roles

    schema = TableFeedConfig(spec=str(write_example(tmp_path))).build(date(2024, 1, 8)).schema()
    assert (schema.user, schema.item) == ("user_id", "item_id")
    assert slice_roles(schema, None, None) == ("user_id", "item_id")
    assert slice_roles(schema, "country", None) == ("country", "item_id")  # the gate's wins
    spec = tmp_path / "ratings.toml"
    spec.write_text(EXAMPLE_SPEC.replace('user = "user_id"', 'user = "price"'))
    with pytest.raises(
        FeedError, match=r"ratings.toml.*features.user column 'price' is not a categorical feature"
    ):
        TableFeedConfig(spec=str(spec)).build(date(2024, 1, 8)).schema()
