"""What every feed offers, and the factory the orchestration builds feeds with.

A feed turns some source of impressions into day partitions that honour one
``FeatureSchema``:

- ``schema()``: the data contract of every day of the feed;
- ``day(d)``: the partition of calendar day ``d`` (UTC) as a DataFrame in
  ``schema().partition_columns`` order;
- ``available_days()``: the days the source holds, oldest first, or ``None`` when any day
  can be produced (the synthetic feed).

``day`` raises ``SmallDayError`` when the source holds fewer rows for ``d`` than the feed's
``min_rows`` (zero included): the caller skips the day and says so; any other unusable
input raises ``FeedError`` naming the file, the value and the fix.

Usage::

    feed = make_feed("movielens", min_rows=50)
    frame = feed.day(date(1997, 10, 1))
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Protocol, runtime_checkable

import pandas as pd

from quantrec.data_checks.schema import FeatureSchema


class FeedError(ValueError):
    """A feed was configured with values it cannot honour, or its source is unusable."""


class SmallDayError(FeedError):
    """The source holds fewer rows for a day than the feed's ``min_rows``: skip the day.

    Attributes:
        day: the requested day.
        rows: rows the source holds for it (0 when it holds none).
        min_rows: the feed's threshold.
    """

    def __init__(self, message: str, *, day: date, rows: int, min_rows: int) -> None:
        super().__init__(message)
        self.day, self.rows, self.min_rows = day, rows, min_rows


@runtime_checkable
class Feed(Protocol):
    """The interface of every feed (see the module docstring)."""

    def schema(self) -> FeatureSchema: ...

    def day(self, run_date: date) -> pd.DataFrame: ...

    def available_days(self) -> list[date] | None: ...


# Keyword options each feed accepts, for the CLI and the config to validate against.
FEED_OPTIONS: dict[str, tuple[str, ...]] = {
    "synthetic": ("seed", "rows_per_day", "scenario", "shift_date", "period_days", "click_rate"),
    "movielens": ("path", "min_rows"),
    "criteo": ("path", "date", "start_date", "rows_per_day", "chunk_bytes", "min_rows"),
    "table": ("spec", "path", "min_rows"),
}


def make_feed(name: str, **options: Any) -> Feed:
    """The feed called ``name``, built from keyword options; ``None`` values are dropped.

    Raises:
        FeedError: an unknown feed name, or an option the feed does not take.
    """
    if name not in FEED_OPTIONS:
        raise FeedError(f"unknown feed {name!r}; choose one of {sorted(FEED_OPTIONS)}")
    given = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(given) - set(FEED_OPTIONS[name]))
    if unknown:
        raise FeedError(
            f"feed {name!r} does not take option(s) {unknown}; it takes "
            f"{list(FEED_OPTIONS[name])}"
        )
    if name == "synthetic":
        from quantrec.feeds.synthetic import SyntheticFeed

        return SyntheticFeed(**given)
    if name == "movielens":
        from quantrec.feeds.movielens import MovieLensFeed

        return MovieLensFeed(**given)
    if name == "criteo":
        from quantrec.feeds.criteo import CriteoFeed

        return CriteoFeed(**given)
    from quantrec.feeds.table import TableFeed

    return TableFeed(**given)


def check_day(run_date: Any, *, feed: str) -> date:
    """``run_date`` if it is a date (not a datetime), else ``FeedError`` naming the feed."""
    if not isinstance(run_date, date) or isinstance(run_date, datetime):
        raise FeedError(f"{feed} feed: a day must be a datetime.date; got {run_date!r}")
    return run_date


def require_rows(frame: pd.DataFrame, run_date: date, *, min_rows: int, source: str) -> None:
    """``SmallDayError`` if ``frame`` has fewer than ``min_rows`` rows (the skip rule)."""
    if len(frame) < min_rows:
        raise SmallDayError(
            f"day {run_date} of {source} holds {len(frame)} row(s), fewer than min_rows="
            f"{min_rows}: skip the day (its rows still count in later days' history) or "
            "lower min_rows",
            day=run_date,
            rows=len(frame),
            min_rows=min_rows,
        )
