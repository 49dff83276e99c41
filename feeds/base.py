"""What every feed offers, and what every feed's config section shares.

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

Each feed module defines its config section (``SyntheticFeedConfig`` ...), a
``BaseFeedConfig`` holding only the options that feed takes; ``build(run_date)`` is the one
way to make the feed. ``quantrec.feeds.FeedConfig`` is their union, chosen by ``kind``.

Usage::

    run_date = date(1997, 10, 1)
    frame = MovieLensFeedConfig(min_rows=50).build(run_date).day(run_date)
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, Protocol, runtime_checkable

import pandas as pd
from pydantic import BaseModel, ConfigDict

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


class BaseFeedConfig(BaseModel):
    """The ``[feed]`` section of one feed: its ``kind`` and the options it takes, no other.

    Frozen, and an unknown option is refused, so a misspelt or misplaced option is an
    error naming the field instead of a setting silently dropped.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """The options of this feed, in declaration order (``kind`` is not one)."""
        return tuple(name for name in cls.model_fields if name != "kind")

    def options(self) -> dict[str, Any]:
        """The option values, as the feed's constructor takes them."""
        return self.model_dump(exclude={"kind"})

    def build(self, run_date: date) -> Feed:
        """The feed these options describe, for a run of ``run_date``."""
        raise NotImplementedError


def check_day(run_date: Any, *, feed: str) -> date:
    """``run_date`` if it is a date (not a datetime), else ``FeedError`` naming the feed."""
    if not isinstance(run_date, date) or isinstance(run_date, datetime):
        raise FeedError(f"{feed} feed: a day must be a datetime.date; got {run_date!r}")
    return run_date


def check_run_date(run_date: date, *, today: date | None = None) -> date:
    """``run_date`` unless it lies after ``today`` (default: today's UTC date), in which
    case ``FeedError``: a day that has not happened has no clicks to learn from, and a run
    of it would register models dated ahead of every real day."""
    today = today or datetime.now(UTC).date()
    if run_date > today:
        raise FeedError(
            f"run date {run_date} is in the future (today is {today}, UTC): a day can be "
            "run once it has begun; check the --date (year?), or the clock of the machine"
        )
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
