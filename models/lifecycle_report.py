"""The lifecycle report: NE per run date of the frozen int8 model, the daily fp32 retrain
and the managed champion, beside the baselines, as a chart, a page and two key numbers.

Plain data in (a pandas frame of run dates), PNG bytes, figures and HTML text out; no
prefect, mlflow or torch. Pages and figures follow ``models.report_render``.
"""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.dates import ConciseDateFormatter, DayLocator
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from quantrec.models.plan_record import plan_figure, plan_sentences, plan_table
from quantrec.models.report_render import (
    ReportError,
    escape,
    html_page,
    html_table,
    img_tag,
    png_bytes,
)

LIFECYCLE_COLUMNS = (
    "date",
    "frozen_ne",
    "fp32_ne",
    "champion_ne",
    "drift_level",
    "promoted",
    "outcome",
)
_DRIFT_COLORS = {"warn": "#f9a825", "severe": "#c62828"}


def _check_days(days: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``days`` sorted by date (as ``datetime.date``), NE columns as float, plus
    ``{champion,frozen}_gap_rel = (ne - fp32_ne) / fp32_ne`` (NaN where either NE is missing)."""
    missing = [c for c in LIFECYCLE_COLUMNS if c not in days.columns]
    if missing:
        raise ReportError(
            f"days frame lacks required columns {missing}; it has {list(days.columns)}"
        )
    if days.empty:
        raise ReportError("days frame has no rows; run the pipeline for at least one day")
    frame = days.copy()
    frame["date"] = pd.to_datetime(frame["date"]).dt.date
    for column in ("frozen_ne", "fp32_ne", "champion_ne"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    fp32 = frame.fp32_ne.where(frame.fp32_ne > 0)  # NE is positive; 0 would divide by zero
    for curve in ("champion", "frozen"):
        frame[f"{curve}_gap_rel"] = (frame[f"{curve}_ne"] - fp32) / fp32
    return frame.sort_values("date").reset_index(drop=True)


def _gap_stats(curve: str, window: pd.DataFrame, budget_rel: float) -> dict:
    gap = window[f"{curve}_gap_rel"].dropna()
    within = gap <= budget_rel
    return {
        f"{curve}_max_gap_rel": float(gap.max()) if len(gap) else None,
        f"{curve}_worst_date": window.date[gap.idxmax()].isoformat() if len(gap) else None,
        f"{curve}_days_compared": len(gap),
        f"{curve}_days_within_budget": int(within.sum()),
        f"{curve}_days_skipped": len(window) - len(gap),
        # No comparable day proves nothing, so it does not count as within budget.
        f"{curve}_within_budget": bool(len(gap) and within.all()),
    }


def _sentences(s: dict) -> list[str]:
    scope = (
        f"the {s['days_after_shift']} run dates after the shift on {s['shift_date']} "
        "(strictly later dates)"
        if s["shift_date"]
        else f"all {s['days_after_shift']} run dates (no shift date given)"
    )
    lines = []
    for curve, label in (("champion", "managed champion"), ("frozen", "frozen int8 model")):
        if not s[f"{curve}_days_compared"]:
            lines.append(f"Over {scope}, the {label} could not be compared on any day.")
            continue
        verdict = "stayed" if s[f"{curve}_within_budget"] else "did NOT stay"
        lines.append(
            f"Over {scope}, the {label}'s NE stayed within {100 * s['budget_rel']:.2f}% of the "
            f"daily fp32 model's on {s[f'{curve}_days_within_budget']} of "
            f"{s[f'{curve}_days_compared']} days; its largest gap was "
            f"{100 * s[f'{curve}_max_gap_rel']:+.2f}% on {s[f'{curve}_worst_date']}; "
            f"{s[f'{curve}_days_skipped']} day(s) skipped for a missing NE. It {verdict} "
            "within budget on every day."
        )
    return lines


def lifecycle_summary(days: pd.DataFrame, *, budget_rel: float, shift_date: date | None) -> dict:
    """The lifecycle's two key numbers, for the managed champion and the frozen int8 model.

    The window is the run dates strictly after ``shift_date`` (the shift day itself is the
    last day of the old regime), or every run date when ``shift_date`` is None. On each window
    day the gap is ``(ne - fp32_ne) / fp32_ne`` (a fraction; positive: worse than the daily
    fp32 retrain) and is within budget when ``<= budget_rel``. Days with a NaN NE on either
    side are skipped and counted in ``*_days_skipped``. ``*_within_budget`` is True only if at
    least one day was compared and every compared day was within budget.
    Keys: budget_rel, shift_date (ISO or None), days_after_shift (window size, skipped days
    included), promotions, drift_warn_days, drift_severe_days, and per curve in ("champion",
    "frozen"): {curve}_max_gap_rel, {curve}_worst_date, {curve}_days_compared,
    {curve}_days_within_budget, {curve}_days_skipped, {curve}_within_budget; and
    ``sentences``: those numbers in words.
    """
    if not (math.isfinite(budget_rel) and budget_rel >= 0):
        raise ReportError(
            f"budget_rel must be a finite fraction >= 0 (0.01 = 1%); got {budget_rel}"
        )
    frame = _check_days(days)
    window = frame if shift_date is None else frame[frame.date > shift_date]
    summary = {
        "budget_rel": budget_rel,
        "shift_date": shift_date.isoformat() if shift_date else None,
        "days_after_shift": len(window),
        "promotions": int(window.promoted.eq(True).sum()),
        "drift_warn_days": int(window.drift_level.eq("warn").sum()),
        "drift_severe_days": int(window.drift_level.eq("severe").sum()),
    }
    for curve in ("champion", "frozen"):
        summary.update(_gap_stats(curve, window, budget_rel))
    summary.update(baseline_stats(frame))
    summary["sentences"] = _sentences(summary) + _baseline_sentences(summary)
    return summary


def baseline_stats(frame: pd.DataFrame) -> dict:
    """Over every run date with both NEs: on how many days the daily fp32 model beat the
    logistic baseline, and the share of the logistic-to-truth gap it closed on the last
    such day, ``(ne_logistic - ne_fp32) / (ne_logistic - ne_truth)`` (None without truth)."""
    if "logistic_ne" not in frame:
        return {"baseline_days_compared": 0}
    both = frame[["date", "fp32_ne", "logistic_ne", "truth_ne"]].copy()
    both = both[pd.to_numeric(both.logistic_ne, errors="coerce").notna() & both.fp32_ne.notna()]
    stats = {
        "baseline_days_compared": len(both),
        "fp32_beats_logistic_days": int((both.fp32_ne < both.logistic_ne).sum()),
    }
    last = both.iloc[-1] if len(both) else None
    gap = None
    if last is not None and pd.notna(last.truth_ne) and last.logistic_ne > last.truth_ne:
        gap = float((last.logistic_ne - last.fp32_ne) / (last.logistic_ne - last.truth_ne))
    stats.update(
        gap_closed_last_day=gap,
        last_compared_date=last.date.isoformat() if last is not None else None,
    )
    return stats


def _baseline_sentences(s: dict) -> list[str]:
    if not s.get("baseline_days_compared"):
        return []
    lines = [
        f"The daily fp32 model beat the logistic baseline on "
        f"{s['fp32_beats_logistic_days']} of {s['baseline_days_compared']} run dates."
    ]
    if s.get("gap_closed_last_day") is not None:
        lines.append(
            f"On {s['last_compared_date']} it closed "
            f"{100 * s['gap_closed_last_day']:.0f}% of the gap between the logistic "
            "baseline and the ground truth."
        )
    return lines


def lifecycle_figure(
    days: pd.DataFrame, *, budget_rel: float, shift_date: date | None = None, title: str = ""
) -> Figure:
    """NE per run date of the frozen int8, daily fp32 and managed champion models, beside
    the logistic baseline and the ground truth where measured; warn and severe drift days
    shaded, promotions starred on the champion curve, fp32 NE plus the
    budget dotted, the shift date dashed."""
    frame = _check_days(days)
    x = np.array(frame.date.tolist(), dtype="datetime64[D]")
    figure = Figure(figsize=(9, 4.5), layout="constrained")
    axes = figure.add_subplot()
    half_day, spans = np.timedelta64(12, "h"), []
    for level, colour in _DRIFT_COLORS.items():
        hit = frame.drift_level.eq(level).to_numpy()
        for day in x[hit]:
            axes.axvspan(day - half_day, day + half_day, color=colour, alpha=0.2, linewidth=0)
        spans += [Patch(color=colour, alpha=0.4, label=f"drift: {level}")] if hit.any() else []
    axes.plot(x, frame.frozen_ne, marker=".", label="frozen int8 (first day's model)")
    axes.plot(x, frame.fp32_ne, marker=".", label="daily fp32 retrain")
    (line,) = axes.plot(x, frame.champion_ne, marker=".", label="managed champion")
    axes.plot(
        x,
        frame.fp32_ne * (1 + budget_rel),
        linestyle=":",
        color="grey",
        label=f"fp32 NE + {100 * budget_rel:.2g}% budget",
    )
    # The yardsticks measured the same day: a model worth serving stays below the first,
    # and the second is the best any model can reach (synthetic feed only).
    for column, label, style in (
        ("logistic_ne", "logistic regression baseline", "-."),
        ("truth_ne", "ground truth", "--"),
    ):
        if column in frame and frame[column].notna().any():
            axes.plot(x, frame[column], linestyle=style, color="black", linewidth=1, label=label)
    promoted = frame.promoted.eq(True).to_numpy()
    axes.scatter(
        x[promoted],
        frame.champion_ne[promoted],
        marker="*",
        s=160,
        zorder=3,
        color=line.get_color(),
        edgecolors="black",
        label="promotion",
    )
    if shift_date is not None:
        axes.axvline(
            np.datetime64(shift_date, "D"),
            color="black",
            linestyle="--",
            linewidth=1,
            label="shift",
        )
    # Whole days around the points: a single date would autoscale to years of day ticks.
    axes.set_xlim(x.min() - np.timedelta64(1, "D"), x.max() + np.timedelta64(1, "D"))
    locator = DayLocator(interval=max(1, len(frame) // 10))  # whole days, never hours
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    axes.set_ylabel("normalized entropy (lower is better)")
    axes.set_title(title, fontsize=10)
    axes.legend(handles=axes.get_legend_handles_labels()[0] + spans, fontsize=8)
    return figure


def write_lifecycle_report(
    days: pd.DataFrame,
    out_dir: Path,
    *,
    budget_rel: float,
    shift_date: date | None = None,
    title: str = "quantrec lifecycle: frozen int8, daily fp32 and managed champion",
    plan: pd.DataFrame | None = None,
    faithfulness_bound: float | None = None,
) -> tuple[Path, Path]:
    """Write ``lifecycle.png`` and ``lifecycle.html`` into ``out_dir`` (made if missing) and
    return both paths. The page embeds the PNG and holds the summary sentences, the summary
    numbers and one row per run date (over-budget champion days in red). With ``plan``
    (``models.plan_record.plan_frame``) and its ``faithfulness_bound``, a section on the
    precision plan: predicted against realised change, and the bytes of what served
    (``plan.png`` beside the page)."""
    summary = lifecycle_summary(days, budget_rel=budget_rel, shift_date=shift_date)
    frame = _check_days(days)
    png = png_bytes(
        lifecycle_figure(frame, budget_rel=budget_rel, shift_date=shift_date, title=title)
    )
    counted = [shift_date is None or d > shift_date for d in frame.date]
    header = [
        "date",
        "counted",
        "frozen_ne",
        "fp32_ne",
        "champion_ne",
        "champion gap %",
        "frozen gap %",
        "drift_level",
        "promoted",
        "outcome",
    ]
    rows = [
        [
            r.date.isoformat(),
            c,
            r.frozen_ne,
            r.fp32_ne,
            r.champion_ne,
            100 * r.champion_gap_rel,
            100 * r.frozen_gap_rel,
            r.drift_level,
            r.promoted,
            r.outcome,
        ]
        for c, r in zip(counted, frame.itertuples(index=False))
    ]
    over = [c and g > budget_rel for c, g in zip(counted, frame.champion_gap_rel)]
    numbers = [[k, v] for k, v in summary.items() if k != "sentences"]
    body = (
        f"<h1>{escape(title)}</h1>\n"
        + "".join(f"<p>{escape(s)}</p>\n" for s in summary["sentences"])
        + img_tag(png, "NE per run date")
        + "\n"
        + "<h2>Summary</h2>\n"
        + html_table(["measure", "value"], numbers)
        + "\n<h2>Per run date</h2>\n<p>counted: inside the summary's window.</p>\n"
        + html_table(header, rows, over)
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    if plan is not None and len(plan) and faithfulness_bound is not None:
        plan_png = png_bytes(plan_figure(plan, bound=faithfulness_bound))
        (out_dir / "plan.png").write_bytes(plan_png)
        body += plan_section(plan, bound=faithfulness_bound, image=plan_png)
    png_path, html_path = out_dir / "lifecycle.png", out_dir / "lifecycle.html"
    png_path.write_bytes(png)
    html_path.write_text(html_page(title, body), encoding="utf-8")
    return png_path, html_path


def plan_section(plan: pd.DataFrame, *, bound: float, image: bytes) -> str:
    """The page's section on the precision plan (``write_lifecycle_report``)."""
    header, rows = plan_table(plan, bound=bound)
    missed = [r[5] == "no" for r in rows]
    return (
        "\n<h2>Precision plan: predicted against realised</h2>\n"
        + "".join(f"<p>{escape(s)}</p>\n" for s in plan_sentences(plan, bound=bound))
        + img_tag(image, "predicted and realised NE change, served bytes")
        + "\n"
        + html_table(header, rows, missed)
    )
