"""The precision plan's record of predicted against realised NE change.

Every run date D predicts, before scoring D, how far the searched variant's NE will be from
its fp32 parent's: the search's accepted interval, or the reuse check's, on the held-out
rows (``PlanChoice.predicted``). Scoring D then realises it: the searched variant's NE on D
against the fp32 parent's. Both are relative changes (0.0005 = +0.05 %, worse) and both go
into the day's ``DayOutcome``; ``predicted_vs_realised`` tabulates them over the days, so a
plan whose intervals do not cover what the next day sees shows as such.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.dates import ConciseDateFormatter, DayLocator
from matplotlib.figure import Figure

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


def plan_frame(outcomes: Iterable) -> pd.DataFrame:
    """The record in numbers, one row per run date that scored a searched variant, oldest
    first: predicted, low, high, realised (relative changes; NaN where not recorded),
    searched_ratio (its bytes / fp32's), and what served after the day: served_variant
    ("fp32", "int8", ...; the kept champion's when nothing was promoted) and served_ratio
    (its bytes / its own fp32 parent's; NaN before any champion)."""
    rows, served = [], (None, math.nan)
    for outcome in sorted(outcomes, key=lambda o: o.date):
        fp32_bytes = outcome.bytes.get(Variant.FP32)
        if outcome.promoted_variant and fp32_bytes:
            variant = outcome.promoted_variant
            served = (variant, outcome.bytes.get(variant, math.nan) / fp32_bytes)
        realised = outcome.realised_delta
        if realised is None and outcome.metrics:
            realised = realised_delta({n: m["ne"] for n, m in outcome.metrics.items()})
        if realised is None:
            continue
        searched = outcome.bytes.get(Variant.SEARCHED)
        rows.append(
            {
                "date": outcome.date,
                "plan": outcome.plan_source or "",
                "predicted": _number(outcome.predicted_delta),
                "low": _number(outcome.predicted_delta_low),
                "high": _number(outcome.predicted_delta_high),
                "realised": float(realised),
                "searched_ratio": searched / fp32_bytes if searched and fp32_bytes else math.nan,
                "served_variant": served[0] or "",
                "served_ratio": served[1],
            }
        )
    return pd.DataFrame(rows, columns=PLAN_FRAME_COLUMNS)


PLAN_FRAME_COLUMNS = (
    "date",
    "plan",
    "predicted",
    "low",
    "high",
    "realised",
    "searched_ratio",
    "served_variant",
    "served_ratio",
)


def _number(value: float | None) -> float:
    return math.nan if value is None else float(value)


def plan_figure(frame: pd.DataFrame, *, bound: float) -> Figure:
    """Predicted change with its interval against the realised change on each run date,
    the faithfulness bound dotted both ways; below, the bytes of what served, against fp32."""
    figure = Figure(figsize=(9, 5), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    x = np.array(frame.date.tolist(), dtype="datetime64[D]")
    below = 100 * (frame.predicted - frame.low).to_numpy()
    above = 100 * (frame.high - frame.predicted).to_numpy()
    top.errorbar(
        x, 100 * frame.predicted, yerr=[below, above], fmt="o", capsize=3, label="predicted"
    )
    top.plot(x, 100 * frame.realised, marker="x", linestyle="", color="black", label="realised")
    for sign in (1, -1):
        top.axhline(100 * sign * bound, linestyle=":", color="grey")
    top.set_ylabel("searched vs fp32, NE change %")
    top.legend(fontsize=8, title=f"faithfulness bound ±{100 * bound:.3g} %", title_fontsize=8)
    bottom.plot(x, frame.served_ratio, marker="s", label="served model")
    bottom.plot(x, frame.searched_ratio, marker=".", linestyle="--", label="searched plan")
    bottom.axhline(0.15, linestyle=":", color="grey", label="0.15x")
    bottom.set_ylabel("bytes / fp32")
    bottom.set_ylim(0, max(1.05, float(np.nanmax([frame.served_ratio.max(), 1.0]))))
    bottom.legend(fontsize=8)
    # Whole days around the points: a single date would autoscale to years of day ticks.
    bottom.set_xlim(x.min() - np.timedelta64(1, "D"), x.max() + np.timedelta64(1, "D"))
    locator = DayLocator(interval=max(1, len(frame) // 10))
    bottom.xaxis.set_major_locator(locator)
    bottom.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    return figure


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


def plan_table(frame: pd.DataFrame, *, bound: float) -> tuple[list[str], list[list[str]]]:
    """``plan_frame`` as text rows: (header, rows), changes in percent."""
    header = [
        "date",
        "plan",
        "predicted %",
        "interval %",
        "realised %",
        "realised within bound",
        "searched bytes / fp32",
        "served",
        "served bytes / fp32",
    ]
    rows = []
    for r in frame.itertuples(index=False):
        interval = (
            ""
            if math.isnan(r.low) or math.isnan(r.high)
            else f"[{100 * r.low:+.3f}, {100 * r.high:+.3f}]"
        )
        rows.append(
            [
                r.date.isoformat(),
                r.plan,
                "" if math.isnan(r.predicted) else f"{100 * r.predicted:+.3f}",
                interval,
                f"{100 * r.realised:+.3f}",
                "yes" if abs(r.realised) <= bound else "no",
                "" if math.isnan(r.searched_ratio) else f"{r.searched_ratio:.3f}",
                r.served_variant or "none yet",
                "" if math.isnan(r.served_ratio) else f"{r.served_ratio:.3f}",
            ]
        )
    return header, rows


def plan_sentences(frame: pd.DataFrame, *, bound: float) -> list[str]:
    """What the record says in two sentences: how often the realised change stayed within
    the bound, and how small what served was."""
    days = len(frame)
    within = int((frame.realised.abs() <= bound).sum())
    served = frame.served_ratio.dropna()
    small = int((served <= 0.15).sum())
    said = [
        f"The searched plan's realised NE change against its fp32 parent was within the "
        f"faithfulness bound (±{100 * bound:.3g} %) on {within} of {days} run dates."
    ]
    if len(served):
        said.append(
            f"What served was at most 0.15x fp32 bytes on {small} of {len(served)} run dates; "
            f"mean {served.mean():.3f}x."
        )
    return said
