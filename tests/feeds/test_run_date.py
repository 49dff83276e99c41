"""A run date must have begun: a date ahead of today (UTC) is refused by name."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from quantrec.feeds.base import FeedError, check_run_date


def test_today_and_earlier_days_may_run() -> None:
    today = datetime.now(UTC).date()
    assert check_run_date(today) == today
    assert check_run_date(date(1997, 10, 1)) == date(1997, 10, 1)


def test_a_day_after_today_is_refused_with_both_dates() -> None:
    with pytest.raises(
        FeedError, match=r"run date 2027-06-02 is in the future \(today is 2027-06-01"
    ):
        check_run_date(date(2027, 6, 2), today=date(2027, 6, 1))
    tomorrow = datetime.now(UTC).date() + timedelta(days=1)
    with pytest.raises(FeedError, match=str(tomorrow)):
        check_run_date(tomorrow)
