"""Backfill: the daily lifecycle over a range of days, in order."""

from __future__ import annotations

from datetime import date, timedelta

from prefect import flow

from quantrec.flows.daily_lifecycle import daily_lifecycle
from quantrec.tasks.config import QuantrecConfig


@flow(name="backfill", log_prints=True)
def backfill(start: date, end: date, config: QuantrecConfig | None = None) -> list[dict]:
    """Run ``daily_lifecycle`` for every day from ``start`` to ``end`` inclusive, in order.

    Days run in order because each day's gate compares against the champion the previous
    day left.
    """
    if end < start:
        raise ValueError(f"backfill end {end} is before start {start}")
    days = [start + timedelta(days=k) for k in range((end - start).days + 1)]
    return [daily_lifecycle(day, config) for day in days]
