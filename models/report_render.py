"""Pure rendering of two reports: one run date's HTML page, and the lifecycle chart and page.

Plain data in (dicts, pandas frames), HTML text, PNG bytes or figures out; no prefect, mlflow
or torch, so the tasks that log these files stay thin and this is testable without a server.
Figures use ``matplotlib.figure.Figure`` directly, never pyplot, so no global figure state
leaks between runs and no backend is chosen (``savefig`` renders with Agg). Pages are
self-contained like ``data_checks.render``: inline CSS, base64 PNGs, no scripts, text escaped.
"""

from __future__ import annotations

import base64
import html
import io
import math
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
from matplotlib.dates import ConciseDateFormatter, DayLocator
from matplotlib.figure import Figure
from matplotlib.patches import Patch

METRIC_COLUMNS = ("ne", "auc", "log_loss", "calibration")
LIFECYCLE_COLUMNS = (
    "date",
    "frozen_ne",
    "fp32_ne",
    "champion_ne",
    "drift_level",
    "promoted",
    "outcome",
)
# Known check keys in reading order; any other key a gate records follows them, sorted.
_CHECK_KEYS = (
    "name",
    "slice",
    "scope",
    "value",
    "threshold",
    "direction",
    "passed",
    "within_noise",
    "ci_low",
    "ci_high",
    "detail",
)
_DRIFT_COLORS = {"warn": "#f9a825", "severe": "#c62828"}
# An href with these schemes would run code in the reader's browser; such links become text.
_UNSAFE_SCHEMES = {"javascript", "data", "vbscript"}
_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222;max-width:70rem}
.badge{display:inline-block;padding:.2rem .6rem;border-radius:.3rem;color:#fff;font-weight:600}
.pass{background:#2e7d32}.fail{background:#c62828}.other{background:#546e7a}
table{border-collapse:collapse;font-size:.9rem;margin:.5rem 0}
th,td{border:1px solid #ccc;padding:.3rem .5rem;text-align:left;vertical-align:top}
tr.failed td{background:#fdecea}
.muted{color:#777;font-style:italic}
img{max-width:100%}
"""


class ReportError(ValueError):
    """Input a report cannot be drawn from; the message names what is wrong and the values."""


def png_bytes(figure: Figure, *, dpi: int = 100) -> bytes:
    """The figure rendered as PNG bytes (Agg, no pyplot)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: object) -> str:
    """A cell's text: floats to 6 significant digits, None blank, NaN ``n/a``."""
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return "n/a" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def _table(header: list[str], rows: list[list[object]], failed: list[bool] | None = None) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        css = ' class="failed"' if failed and failed[i] else ""
        body.append(f"<tr{css}>" + "".join(f"<td>{_e(_fmt(c))}</td>" for c in row) + "</tr>")
    return (
        f"<table><thead><tr>{head}</tr></thead><tbody>\n" + "\n".join(body) + "\n</tbody></table>"
    )


def _img(image: Figure | bytes, alt: str) -> str:
    png = image if isinstance(image, bytes) else png_bytes(image)
    encoded = base64.b64encode(png).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{encoded}">'


def _section(title: str, body: str | None) -> str:
    """A titled section; ``None`` body (no data was given) reads "not measured"."""
    return f"<h2>{_e(title)}</h2>\n" + (body or '<p class="muted">not measured</p>')


def _page(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}'
        f"</title>\n<style>{_STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


def calibration_bins(labels: np.ndarray, probs: np.ndarray, *, bins: int = 10) -> pd.DataFrame:
    """Reliability table: rows cut at quantiles of the predicted click probability.

    ``labels`` are 0/1 clicks and ``probs`` predicted probabilities, one per row. Quantile edges
    give bins of near-equal row counts; tied predictions stay in one bin, so fewer than ``bins``
    bins come back when many predictions are equal, and never an empty one. Returns one row per
    bin, in increasing prediction: mean_predicted, observed_rate (clicks / rows), rows.
    """
    labels = np.asarray(labels, dtype=float).ravel()
    probs = np.asarray(probs, dtype=float).ravel()
    if labels.size != probs.size or labels.size == 0:
        raise ReportError(
            f"labels and probs must be non-empty and of one length; got "
            f"{labels.size} labels and {probs.size} probs"
        )
    if bins < 1:
        raise ReportError(f"bins must be at least 1; got {bins}")
    bad = int((~np.isfinite(labels) | ~np.isfinite(probs)).sum())
    if bad:
        raise ReportError(
            f"{bad} of {labels.size} rows have a non-finite label or probability; "
            "drop them before binning"
        )
    codes = pd.qcut(probs, bins, labels=False, duplicates="drop")
    codes = np.nan_to_num(codes, nan=0.0)  # all predictions equal: qcut finds no edges, one bin
    frame = pd.DataFrame({"bin": codes, "p": probs, "y": labels})
    return (
        frame.groupby("bin", sort=True)
        .agg(
            mean_predicted=("p", "mean"),
            observed_rate=("y", "mean"),
            rows=("y", "size"),
        )
        .reset_index(drop=True)
    )


def drift_figure(drift: pd.DataFrame) -> Figure:
    """One horizontal bar per feature: its main statistic (the one nearest to, or furthest
    over, its threshold; the first listed when none has a threshold), red when over threshold,
    with a black tick at the threshold. Statistics keep their own units (PSI, OOV rate, ...)."""
    ratio = np.where(drift.threshold > 0, drift.value / drift.threshold, -np.inf)
    keyed = drift.assign(_ratio=np.nan_to_num(ratio, nan=-np.inf)).reset_index(drop=True)
    main = keyed.loc[keyed.groupby("feature", sort=False)["_ratio"].idxmax()]
    figure = Figure(figsize=(7, max(2.5, 0.28 * len(main) + 1.2)), layout="constrained")
    axes = figure.add_subplot()
    y = np.arange(len(main))
    over = main.over_threshold.eq(True).to_numpy()
    axes.barh(y, main.value, color=np.where(over, "#c62828", "#90a4ae"))
    axes.scatter(main.threshold, y, marker="|", s=200, color="black", zorder=3)
    axes.set_yticks(y, [f"{f} ({s})" for f, s in zip(main.feature, main.statistic)], fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel("statistic value (| marks the threshold)")
    axes.legend(
        handles=[
            Patch(color="#c62828", label="over threshold"),
            Patch(color="#90a4ae", label="within threshold"),
        ],
        fontsize=8,
    )
    return figure


def calibration_figure(calibration: dict[str, pd.DataFrame]) -> Figure:
    """Reliability diagram: per variant, observed click rate against mean prediction per bin;
    a calibrated model lies on the dashed diagonal."""
    figure = Figure(figsize=(5.5, 5), layout="constrained")
    axes = figure.add_subplot()
    top = 0.0
    for variant, bins in calibration.items():
        if bins is None or bins.empty:
            continue
        axes.plot(bins.mean_predicted, bins.observed_rate, marker="o", label=variant)
        top = max(top, float(bins.mean_predicted.max()), float(bins.observed_rate.max()))
    top = min(1.0, 1.05 * top) or 1.0  # CTRs are small: zoom to the data, not to [0, 1]
    axes.plot([0, top], [0, top], linestyle="--", color="grey", linewidth=1, label="calibrated")
    axes.set_xlabel("mean predicted click rate")
    axes.set_ylabel("observed click rate")
    axes.legend(fontsize=8)
    return figure


def slices_figure(slices: pd.DataFrame) -> Figure:
    """Grouped bars: NE per slice, one bar per variant."""
    table = slices.pivot_table(index="slice", columns="variant", values="ne", sort=False)
    figure = Figure(figsize=(max(5, 0.9 * len(table) + 2), 4), layout="constrained")
    axes = figure.add_subplot()
    width = 0.8 / max(1, table.shape[1])
    x = np.arange(len(table))
    for i, variant in enumerate(table.columns):
        axes.bar(x + (i - (table.shape[1] - 1) / 2) * width, table[variant], width, label=variant)
    axes.set_xticks(x, [str(s) for s in table.index], rotation=30, ha="right", fontsize=8)
    axes.set_ylim(bottom=0.95 * float(np.nanmin(table.to_numpy())))  # show the differences
    axes.set_ylabel("normalized entropy (lower is better)")
    axes.legend(fontsize=8)
    return figure


def _decision_body(decision: dict) -> str:
    outcome = str(decision.get("outcome", "unknown"))
    css = {"promoted": "pass", "rejected": "fail", "stopped": "fail"}.get(outcome, "other")
    facts = [("promoted", decision.get("promoted") or "none")]
    facts += [(k, decision[k]) for k in ("challenger", "drift_level") if decision.get(k)]
    parts = [
        f'<p><span class="badge {css}">{_e(outcome)}</span> '
        + "; ".join(f"{_e(k)}: <b>{_e(v)}</b>" for k, v in facts)
        + "</p>",
        f"<blockquote>{_e(decision.get('reason', ''))}</blockquote>",
    ]
    rows = [(v, c) for v, checks in (decision.get("checks") or {}).items() for c in checks]
    if not rows:
        return "\n".join(parts + ['<p class="muted">no checks recorded</p>'])
    present = {k for _, c in rows for k in c}
    keys = [k for k in _CHECK_KEYS if k in present] + sorted(present - set(_CHECK_KEYS))
    cells = [
        [v] + [("pass" if c[k] else "FAIL") if k == "passed" and k in c else c.get(k) for k in keys]
        for v, c in rows
    ]
    parts.append(_table(["variant", *keys], cells, [c.get("passed") is False for _, c in rows]))
    return "\n".join(parts)


def _drift_body(drift: pd.DataFrame | None, level: str | None, reasons: list[str]) -> str | None:
    has_frame = drift is not None and not drift.empty
    if not has_frame and level is None and not reasons:
        return None
    parts = [f"<p>drift level: <b>{_e(level or 'not measured')}</b></p>"]
    if reasons:
        parts.append("<ul>" + "".join(f"<li>{_e(r)}</li>" for r in reasons) + "</ul>")
    if not has_frame:
        return "\n".join(parts + ['<p class="muted">per-feature drift not measured</p>'])
    parts.append(_img(drift_figure(drift), "drift per feature against its threshold"))
    over = drift[drift.over_threshold.eq(True)]
    if not over.empty:
        columns = ["feature", "kind", "statistic", "value", "threshold"]
        parts.append(_table(columns, over[columns].values.tolist()))
    return "\n".join(parts)


def _slices_body(slices: pd.DataFrame | None) -> str | None:
    if slices is None or slices.empty:
        return None
    columns = [c for c in ("slice", "variant", "rows", "ne", "auc") if c in slices.columns]
    return _img(slices_figure(slices), "NE by slice") + _table(
        columns, slices[columns].values.tolist()
    )


def _links_body(links: dict[str, str]) -> str | None:
    if not links:
        return None
    items = [
        f"<li>{_e(name)}: {_e(url)}</li>"
        if urlsplit(str(url)).scheme.lower() in _UNSAFE_SCHEMES
        else f'<li><a href="{_e(url)}">{_e(name)}</a></li>'
        for name, url in links.items()
    ]
    return "<ul>" + "".join(items) + "</ul>"


def run_report_html(
    *,
    run_date: date,
    decision: dict,
    drift: pd.DataFrame | None,
    drift_level: str | None,
    drift_reasons: list[str],
    metrics: dict[str, dict[str, float]],
    calibration: dict[str, pd.DataFrame],
    slices: pd.DataFrame | None,
    staleness: dict[str, float] | None,
    links: dict[str, str],
) -> str:
    """One run date's report as a self-contained HTML page.

    Sections: the decision and every gate check, metrics per variant, drift per feature,
    reliability diagram, NE by slice, quantization staleness, links. A section whose data is
    None or empty reads "not measured". ``decision``: outcome, promoted, reason, optional
    challenger and drift_level, checks {variant: [check dicts]} (any keys; ``passed`` False
    rows shown red). ``drift``: feature, kind, statistic, value, threshold (NaN = none),
    over_threshold. ``metrics``: {variant: {ne, auc, log_loss, calibration, ...}}.
    ``calibration``: {variant: calibration_bins frame}. ``slices``: slice, variant, rows, ne,
    optional auc. ``staleness``: {measure: value}. ``links``: {name: URL}.
    """
    extra = sorted({k for m in metrics.values() for k in m} - set(METRIC_COLUMNS))
    columns = list(METRIC_COLUMNS) + extra
    metric_rows = [[v] + [m.get(c) for c in columns] for v, m in metrics.items()]
    usable = {v: b for v, b in (calibration or {}).items() if b is not None and not b.empty}
    sections = [
        _section("Decision", _decision_body(decision)),
        _section("Metrics", _table(["variant", *columns], metric_rows) if metrics else None),
        _section("Drift", _drift_body(drift, drift_level, drift_reasons)),
        _section(
            "Calibration",
            _img(calibration_figure(usable), "reliability diagram") if usable else None,
        ),
        _section("NE by slice", _slices_body(slices)),
        _section(
            "Quantization staleness",
            _table(["measure", "value"], list(map(list, staleness.items()))) if staleness else None,
        ),
        _section("Links", _links_body(links)),
    ]
    title = f"quantrec run {run_date.isoformat()}"
    return _page(title, f"<h1>{_e(title)}</h1>\n" + "\n".join(sections))


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
) -> tuple[Path, Path]:
    """Write ``lifecycle.png`` and ``lifecycle.html`` into ``out_dir`` (made if missing) and
    return both paths. The page embeds the PNG and holds the summary sentences, the summary
    numbers and one row per run date (over-budget champion days in red)."""
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
        f"<h1>{_e(title)}</h1>\n"
        + "".join(f"<p>{_e(s)}</p>\n" for s in summary["sentences"])
        + _img(png, "NE per run date")
        + "\n"
        + "<h2>Summary</h2>\n"
        + _table(["measure", "value"], numbers)
        + "\n<h2>Per run date</h2>\n<p>counted: inside the summary's window.</p>\n"
        + _table(header, rows, over)
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    png_path, html_path = out_dir / "lifecycle.png", out_dir / "lifecycle.html"
    png_path.write_bytes(png)
    html_path.write_text(_page(title, body), encoding="utf-8")
    return png_path, html_path


def pareto_figure(result):
    """Size against NE delta of every plan a search scored; the two finalists labelled
    with their latency. ``result`` is a ``models.search.SearchResult``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    fp32 = result.fp32_bytes or 1
    axes.scatter(
        [c.bytes / fp32 for c in result.evaluated],
        [100 * c.ne_delta_rel for c in result.evaluated],
        s=12,
        alpha=0.5,
        label="scored plans",
    )
    finalists = {"ranked": result.ranked, "greedy": result.greedy}
    if result.chosen_by not in finalists:  # e.g. "confirmed": repaired on fresh rows
        finalists[result.chosen_by] = result.chosen
    for name, plan in finalists.items():
        chosen = name == result.chosen_by
        latency = f"{plan.latency_ms:.2f} ms / {plan.latency_batch} rows" if plan.latency_ms else ""
        axes.scatter(
            [plan.bytes / fp32],
            [100 * (plan.ne_delta_rel or 0.0)],
            s=140,
            marker="*" if chosen else "o",
            label=f"{name}: {latency}" + (" (chosen)" if chosen else ""),
        )
    axes.axhline(
        100 * result.budget.relative_limit(result.ne_fp32),
        color="red",
        linestyle="--",
        linewidth=1,
        label="NE budget",
    )
    axes.set_xlabel("bytes / fp32 bytes")
    axes.set_ylabel("NE change vs fp32 (%)")
    axes.set_title("Precision search: size against NE")
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure
