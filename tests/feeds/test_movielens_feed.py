"""MovieLens replay: the mapping, the small-day rule and features from the past only."""

from __future__ import annotations

from datetime import UTC, date, datetime
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from quantrec.feeds.base import FeedError, SmallDayError
from quantrec.feeds.movielens import GROUPLENS_GENRES, MovieLensFeed, MovieLensFeedConfig
from quantrec.models.batch import batch_from_frame

START = date(1997, 9, 20)


def _epoch(day: date, hour: int) -> int:
    return int(datetime(day.year, day.month, day.day, hour, tzinfo=UTC).timestamp())


def write_grouplens(folder: Path, *, days: int = 6, per_day: int = 30, seed: int = 0) -> Path:
    """A tiny ml-100k folder in the GroupLens format: u.data, u.user and u.item."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for k in range(days):
        day = date.fromordinal(START.toordinal() + k)
        for _ in range(per_day if k != 3 else 2):  # day 3 is a small day
            ts = _epoch(day, int(rng.integers(0, 24)))
            rows.append(f"{rng.integers(1, 21)}\t{rng.integers(1, 11)}\t{rng.integers(1, 6)}\t{ts}")
    (folder / "u.data").write_text("\n".join(rows) + "\n")
    users = [f"{u}|{15 + 3 * u}|{'MF'[u % 2]}|student|{10000 + 137 * u}" for u in range(1, 21)]
    (folder / "u.user").write_text("\n".join(users) + "\n")
    items = []
    for i in range(1, 11):
        flags = "|".join("1" if g in (i % 19, (3 * i) % 19) else "0" for g in range(19))
        released = "" if i == 10 else f"01-Jan-19{80 + i}"
        items.append(f"{i}|Film {i} (19{80 + i})|{released}||http://x|{flags}")
    (folder / "u.item").write_text("\n".join(items) + "\n", encoding="latin-1")
    return folder


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_grouplens(tmp_path / "ml-100k")


def test_a_day_honours_the_schema_and_builds_a_batch(folder: Path) -> None:
    feed = MovieLensFeedConfig(path=str(folder), min_rows=5).build(START)
    frame = feed.day(START)
    schema = feed.schema()
    assert list(frame.columns) == schema.partition_columns
    assert set(frame["label"].unique()) <= {0, 1} and len(frame) == 30
    assert frame["genres"].map(lambda g: set(g) <= set(GROUPLENS_GENRES)).all()
    days = pd.to_datetime(frame["timestamp"], unit="s", utc=True).dt.date
    assert (days == START).all()
    # The first day has no past: every history feature is zero.
    assert (frame[["user_ratings_before", "item_ratings_before"]] == 0).all().all()
    batch = batch_from_frame(frame, schema)
    assert batch.dense.shape == (30, len(schema.dense))
    assert feed.available_days() == [date(1997, 9, 20 + k) for k in range(6)]


def test_a_small_day_raises_a_typed_error_the_flow_can_skip(folder: Path) -> None:
    feed = MovieLensFeed(path=folder, min_rows=5)
    with pytest.raises(SmallDayError, match="holds 2 row.*min_rows=5") as caught:
        feed.day(date(1997, 9, 23))
    assert (caught.value.rows, caught.value.min_rows) == (2, 5)
    with pytest.raises(SmallDayError, match="holds 0 row"):
        feed.day(date(1999, 1, 1))
    assert len(MovieLensFeed(path=folder, min_rows=1).day(date(1997, 9, 23))) == 2


def test_history_counts_only_earlier_days(folder: Path) -> None:
    frame = pd.concat(
        [
            MovieLensFeed(path=folder, min_rows=1).day(d)
            for d in [date(1997, 9, 20 + k) for k in range(6)]
        ],
        ignore_index=True,
    )
    day = pd.to_datetime(frame["timestamp"], unit="s", utc=True).dt.date
    for _, row in frame.sample(20, random_state=0).iterrows():
        row_day = pd.Timestamp(row["timestamp"], unit="s", tz="UTC").date()
        earlier = frame[(frame["user_id"] == row["user_id"]) & (day < row_day)]
        assert row["user_ratings_before"] == len(earlier)
        expected_rate = earlier["label"].mean() if len(earlier) else 0.0
        assert row["user_positive_rate_before"] == pytest.approx(expected_rate, abs=1e-6)


def test_no_leakage_features_ignore_the_day_itself_and_later_days(tmp_path: Path) -> None:
    original = write_grouplens(tmp_path / "a")
    altered = write_grouplens(tmp_path / "b")
    run_date = date(1997, 9, 22)
    data = pd.read_csv(altered / "u.data", sep="\t", header=None, names=["u", "i", "r", "t"])
    later = pd.to_datetime(data["t"], unit="s", utc=True).dt.date >= run_date
    data.loc[later, "r"] = 6 - data.loc[later, "r"]  # flip every rating of D and after
    extra = data[later].assign(u=1, i=1)  # and add ratings of user 1 on item 1
    pd.concat([data, extra]).to_csv(altered / "u.data", sep="\t", header=False, index=False)
    before = MovieLensFeed(path=original, min_rows=1).day(run_date)
    after = MovieLensFeed(path=altered, min_rows=1).day(run_date)
    history = [
        "user_ratings_before",
        "user_positive_rate_before",
        "item_ratings_before",
        "item_positive_rate_before",
    ]
    # Rows of the original day keep their features whatever day D and later say.
    merged = before.merge(after, on=["timestamp", "user_id", "item_id"], suffixes=("", "_alt"))
    assert len(merged) >= len(before)
    for column in history:
        np.testing.assert_array_equal(merged[column], merged[f"{column}_alt"])
    assert (merged["label"] != merged["label_alt"]).any()  # the day itself did change


def test_unknown_release_year_gives_zero_days_since_release(folder: Path) -> None:
    frame = MovieLensFeed(path=folder, min_rows=1).day(START)
    assert (frame.loc[frame["item_id"] == 10, "days_since_release"] == 0).all()
    assert (frame.loc[frame["item_id"] == 10, "release_bucket"] == "unknown").all()


def test_a_missing_file_names_the_path_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(FeedError, match=r"u\.data.*GroupLens ml-100k"):
        MovieLensFeed(path=tmp_path).day(START)


@pytest.mark.skipif(
    not any(d.metadata["Name"] == "recbole" for d in metadata.distributions()),
    reason="needs `pip install --no-deps recbole==1.2.1`",
)
def test_the_wheel_copy_replays_the_documented_calendar() -> None:
    feed = MovieLensFeed()
    days = feed.available_days()
    assert (days[0], days[-1], len(days)) == (date(1997, 9, 20), date(1998, 4, 22), 215)
    frame = feed.day(date(1997, 10, 1))
    assert len(frame) == 975 and 0.4 < frame["label"].mean() < 0.7
    with pytest.raises(SmallDayError):
        feed.day(date(1997, 11, 4))
