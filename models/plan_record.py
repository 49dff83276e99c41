"""The precision plan's record of predicted against realised NE change.

Every run date D predicts, before scoring D, how far the searched variant's NE will be from
its fp32 parent's: the search's accepted interval, or the reuse check's, on the held-out
rows (``PlanChoice.predicted``). Scoring D then realises it: the searched variant's NE on D
against the fp32 parent's. Both are relative changes (0.0005 = +0.05 %, worse) and both go
into the day's ``DayOutcome``; ``predicted_vs_realised`` tabulates them over the days, so a
plan whose intervals do not cover what the next day sees shows as such.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from quantrec.models.names import Variant
from quantrec.models.search_accept import DeltaInterval

# The run's metric names of the record (MLflow, logged by the plan and evaluate stages).
PREDICTED_METRICS = {
    "delta": "search.predicted_delta",
    "low": "search.predicted_delta_low",
    "high": "search.predicted_delta_high",
}
REALISED_METRIC = "search.realised_delta"

COLUMNS = (
    "date",
    "plan",
    "predicted %",
    "interval %",
    "realised %",
    "realised within bound",
    "searched bytes / fp32",
    "served",
)


def realised_delta(ne: Mapping[str, float]) -> float | None:
    """The searched variant's relative NE change vs the fp32 parent, from variant -> NE on
    D; None when either was not scored."""
    fp32, searched = ne.get(Variant.FP32), ne.get(Variant.SEARCHED)
    if fp32 is None or searched is None or not fp32:
        return None
    return (searched - fp32) / fp32


def plan_record(predicted: DeltaInterval | None, metrics: Mapping[str, Any]) -> dict:
    """The ``DayOutcome`` fields of the record: ``metrics`` maps variant -> its scores on D
    (``models.metrics.Metrics``, or a dict with "ne")."""

    def ne(value: Any) -> float:
        return value["ne"] if isinstance(value, Mapping) else value.ne

    return {
        "predicted_delta": None if predicted is None else predicted.delta,
        "predicted_delta_low": None if predicted is None else predicted.low,
        "predicted_delta_high": None if predicted is None else predicted.high,
        "realised_delta": realised_delta({n: ne(m) for n, m in metrics.items()}),
    }


def predicted_vs_realised(outcomes: Iterable, *, bound: float) -> pd.DataFrame:
    """One row per run date that scored a searched variant, oldest first: the plan's source,
    its predicted change and interval, its realised change, whether |realised| is within
    ``bound`` (the faithfulness bound), its bytes against fp32, and the served variant.

    ``outcomes`` are ``models.lifecycle.DayOutcome``; days that stopped before training, or
    recorded before the record existed (no realised change, no metrics), are left out.
    """
    rows = []
    for outcome in sorted(outcomes, key=lambda o: o.date):
        realised = outcome.realised_delta
        if realised is None:
            realised = realised_delta({n: m["ne"] for n, m in outcome.metrics.items()})
        if realised is None:
            continue
        low, high = outcome.predicted_delta_low, outcome.predicted_delta_high
        fp32_bytes = outcome.bytes.get(Variant.FP32)
        searched_bytes = outcome.bytes.get(Variant.SEARCHED)
        rows.append(
            {
                "date": outcome.date.isoformat(),
                "plan": outcome.plan_source or "",
                "predicted %": _percent(outcome.predicted_delta),
                "interval %": ""
                if low is None or high is None
                else f"[{100 * low:+.3f}, {100 * high:+.3f}]",
                "realised %": _percent(realised),
                "realised within bound": "yes" if abs(realised) <= bound else "no",
                "searched bytes / fp32": ""
                if not fp32_bytes or searched_bytes is None
                else f"{searched_bytes / fp32_bytes:.3f}",
                "served": outcome.promoted_variant or "champion kept",
            }
        )
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:+.3f}"
