"""Backfill: the daily lifecycle over a range of days, in order."""

from __future__ import annotations

import sys
import time
from datetime import date, timedelta

from prefect import flow, get_run_logger

from quantrec.flows.daily_lifecycle import daily_lifecycle
from quantrec.models.lifecycle import DayOutcome
from quantrec.models.names import Outcome
from quantrec.tasks.config import QuantrecConfig


@flow(name="backfill", flow_run_name="backfill-{start}-{end}", log_prints=True)
def backfill(start: date, end: date, config: QuantrecConfig | None = None) -> list[DayOutcome]:
    """Run ``daily_lifecycle`` for every day from ``start`` to ``end`` inclusive, in order.

    Days run in order because each day's gate compares against the champion the previous
    day left. A day whose run fails does not stop the backfill: its outcome says
    ``failed`` with the error, its champion stays, and the next day goes on.
    """
    if end < start:
        raise ValueError(f"backfill end {end} is before start {start}")
    config = config or QuantrecConfig()
    outcomes = []
    days = [start + timedelta(days=k) for k in range((end - start).days + 1)]
    for k, day in enumerate(days, start=1):
        started = time.monotonic()
        state = daily_lifecycle(day, config, return_state=True)
        if state.is_completed():
            outcomes.append(state.result())
        else:
            error = _error_of(state)
            get_run_logger().error("run date %s failed: %s", day, error)
            outcomes.append(
                DayOutcome(
                    date=day,
                    model_name=config.registry.model_name,
                    mlflow_run_id="",
                    decision=Outcome.FAILED,
                    reason=error,
                )
            )
        print_progress(outcomes[-1], k, len(days), time.monotonic() - started)
    return outcomes


def progress_line(outcome: DayOutcome, k: int, n: int, seconds: float) -> str:
    """One line as a day finishes: its place, date, decision, fp32 NE and the champion."""
    ne = (outcome.metrics.get("fp32") or {}).get("ne")
    champion = f"v{outcome.champion_version}" if outcome.champion_version else "none"
    return (
        f"[{k}/{n}] {outcome.date}  {outcome.decision:<10}  NE fp32 "
        f"{'-' if ne is None else f'{ne:.4f}'}  champion {champion}  ({seconds:.0f} s)"
    )


def print_progress(outcome: DayOutcome, k: int, n: int, seconds: float) -> None:
    """``progress_line`` on stderr, so records printed on stdout (``--json``) stay clean."""
    print(progress_line(outcome, k, n, seconds), file=sys.stderr, flush=True)


def _error_of(state) -> str:
    try:
        state.result()
    except Exception as err:  # noqa: BLE001 - the failure is what is reported
        return f"{type(err).__name__}: {err}"
    return state.message or "the run did not complete"
