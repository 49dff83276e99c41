"""Quantization search on demand: the daily lifecycle with a fresh precision search."""

from __future__ import annotations

from datetime import date

from prefect import flow

from quantrec.flows.daily_lifecycle import daily_lifecycle
from quantrec.models.lifecycle import DayOutcome
from quantrec.tasks.config import QuantrecConfig


@flow(name="quantization-search", log_prints=True)
def quantization_search(run_date: date, config: QuantrecConfig | None = None) -> DayOutcome:
    """Search the precision plan again for ``run_date`` (instead of reusing the last
    one), then evaluate, gate and register as every day does."""
    return daily_lifecycle(run_date, config, force_search=True)
