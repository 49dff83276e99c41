"""Bad table input is refused with the file, the column and the value, never taken in
silently: text in a number column, a spec entry that matches nothing, a path outside the
spec's folder, rows dated in the future. The raw files are left as they were."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest

from quantrec.feeds.base import FeedError
from quantrec.feeds.table import TableFeed
from quantrec.feeds.table_example import EXAMPLE_SPEC, write_example

YEAR_2100 = 4102444800  # 2100-01-01T00:00:00Z


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def example(tmp_path: Path) -> Path:
    return write_example(tmp_path / "data", days=4, rows_per_day=50)


def _corrupt(spec: Path, **cells: object) -> Path:
    """Set ``column=value`` in data rows 3 and 7 of the example's CSV; return the CSV."""
    csv = spec.parent / "ratings.csv"
    frame = pd.read_csv(csv)
    for column, value in cells.items():
        frame[column] = frame[column].astype(object)
        frame.loc[[3, 7], column] = value
    frame.to_csv(csv, index=False)
    return csv


@pytest.mark.parametrize("fill", [None, 0.0])
def test_text_in_a_dense_column_is_reported_as_text(example: Path, fill) -> None:
    if fill is not None:
        example.write_text(
            EXAMPLE_SPEC.replace('separator = "|"', 'separator = "|"\ndense_fill = 0')
        )
    csv = _corrupt(example, price="12,50")
    before = _digest(csv)
    with pytest.raises(FeedError) as err:
        TableFeed(spec=example).available_days()
    message = str(err.value)
    assert str(csv) in message and "dense column 'price'" in message, message
    assert "holds text in 2 row(s)" in message and "'12,50'" in message
    assert "data row 3" in message
    assert _digest(csv) == before  # nothing rewritten


def test_an_empty_dense_cell_is_still_missing_and_filled_only_on_request(example: Path) -> None:
    _corrupt(example, price="")
    day = TableFeed(spec=example).available_days()[0]
    assert TableFeed(spec=example).day(day)["price"].isna().sum() == 2  # the day checks name it
    example.write_text(EXAMPLE_SPEC.replace('separator = "|"', 'separator = "|"\ndense_fill = 0'))
    assert TableFeed(spec=example).day(day)["price"].isna().sum() == 0


def test_a_files_entry_that_matches_nothing_is_named(example: Path) -> None:
    example.write_text(EXAMPLE_SPEC.replace('["ratings.csv"]', '["ratings.csv", "more-*.csv"]'))
    with pytest.raises(FeedError, match=r"files entry 'more-\*\.csv' .* is missing"):
        TableFeed(spec=example).available_days()


@pytest.mark.parametrize("entry", ["../outside.csv", "{outside}"])
def test_a_file_outside_the_spec_folder_is_refused(example: Path, entry: str) -> None:
    outside = example.parent.parent / "outside.csv"
    (example.parent / "ratings.csv").rename(outside)
    entry = entry.format(outside=outside)
    example.write_text(EXAMPLE_SPEC.replace('["ratings.csv"]', f'["{entry}"]'))
    with pytest.raises(FeedError, match=r"allow_absolute_paths = true") as err:
        TableFeed(spec=example).available_days()
    assert repr(entry) in str(err.value)
    example.write_text("allow_absolute_paths = true\n" + example.read_text())
    assert len(TableFeed(spec=example).available_days()) == 4  # explicitly allowed


def test_a_symlink_out_of_the_folder_is_refused(example: Path) -> None:
    outside = example.parent.parent / "elsewhere.csv"
    (example.parent / "ratings.csv").rename(outside)
    (example.parent / "ratings.csv").symlink_to(outside)
    with pytest.raises(FeedError, match=r"reaches outside the spec's folder"):
        TableFeed(spec=example).available_days()


def test_the_contents_of_a_file_that_is_not_the_table_are_never_echoed(example: Path) -> None:
    secret = example.parent.parent / "secret.txt"
    secret.write_text("admin:x:0:0:hunter2\nsecond line\n")
    example.write_text(
        "allow_absolute_paths = true\n" + EXAMPLE_SPEC.replace('["ratings.csv"]', f'["{secret}"]')
    )
    with pytest.raises(FeedError) as err:
        TableFeed(spec=example).available_days()
    assert str(secret) in str(err.value) and "hunter2" not in str(err.value)
    assert "admin" not in str(err.value)


def test_rows_dated_in_the_future_are_refused(example: Path) -> None:
    csv = _corrupt(example, ts=YEAR_2100 + 60)
    before = _digest(csv)
    with pytest.raises(FeedError) as err:
        TableFeed(spec=example).available_days()
    message = str(err.value)
    assert str(csv) in message and "2 row(s) dated after now" in message
    assert "column 'ts'" in message and "2100-01-01T00:01:00+00:00" in message
    assert _digest(csv) == before
