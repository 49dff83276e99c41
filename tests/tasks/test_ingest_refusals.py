"""The ingest stage refuses a run date in the future and a lake of another feed before it
writes anything (deployments call the flow without the CLI's own checks)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from quantrec.feeds import SyntheticFeedConfig
from quantrec.feeds.base import FeedError
from quantrec.feeds.lake import LakeError
from quantrec.tasks.data import ingest_days
from quantrec.tasks.settings import quantrec_home

FEED = SyntheticFeedConfig(rows_per_day=200)


def test_a_future_run_date_is_refused_before_any_write() -> None:
    ahead = datetime.now(UTC).date() + timedelta(days=30)
    with pytest.raises(FeedError, match=f"run date {ahead} is in the future"):
        ingest_days.fn(ahead, 2, FEED, run_id="unused")
    assert quantrec_home().day_lake().days() == []


def test_a_lake_of_another_feed_is_refused_and_keeps_its_days() -> None:
    lake = quantrec_home().day_lake()
    lake.bind("table", ["label", "price", "user_id", "ts"])
    with pytest.raises(LakeError, match=r"holds the table feed's days, not the synthetic"):
        ingest_days.fn(date(2026, 1, 5), 2, FEED, run_id="unused")
    assert lake.days() == []
