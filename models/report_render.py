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
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

METRIC_COLUMNS = ("ne", "auc", "log_loss", "calibration")
# An href with these schemes would run code in the reader's browser; such links become text.
_UNSAFE_SCHEMES = {"javascript", "data", "vbscript"}
_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222;max-width:76rem}
.badge{display:inline-block;padding:.2rem .6rem;border-radius:.3rem;color:#fff;font-weight:600}
.pass{background:#2e7d32}.fail{background:#c62828}.other{background:#546e7a}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0;max-width:100%}
th,td{border:1px solid #ccc;padding:.25rem .45rem;text-align:left;vertical-align:top;
overflow-wrap:break-word}
td:last-child{max-width:24rem}
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


def escape(value: object) -> str:
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


def html_table(
    header: list[str], rows: list[list[object]], failed: list[bool] | None = None
) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        css = ' class="failed"' if failed and failed[i] else ""
        body.append(f"<tr{css}>" + "".join(f"<td>{escape(_fmt(c))}</td>" for c in row) + "</tr>")
    return (
        f"<table><thead><tr>{head}</tr></thead><tbody>\n" + "\n".join(body) + "\n</tbody></table>"
    )


def img_tag(image: Figure | bytes, alt: str) -> str:
    png = image if isinstance(image, bytes) else png_bytes(image)
    encoded = base64.b64encode(png).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{encoded}">'


def _section(title: str, body: str | None) -> str:
    """A titled section; ``None`` body (no data was given) reads "not measured"."""
    return f"<h2>{escape(title)}</h2>\n" + (body or '<p class="muted">not measured</p>')


def html_page(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}'
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
        f'<p><span class="badge {css}">{escape(outcome)}</span> '
        + "; ".join(f"{escape(k)}: <b>{escape(v)}</b>" for k, v in facts)
        + "</p>",
        f"<blockquote>{escape(decision.get('reason', ''))}</blockquote>",
    ]
    rows = [(v, c) for v, checks in (decision.get("checks") or {}).items() for c in checks]
    if not rows:
        return "\n".join(parts + ['<p class="muted">no checks recorded</p>'])
    rows.sort(key=lambda row: _check_rank(row[1]))  # failures first, not gated last
    header = ["result", "variant", "check", "slice", "value", "threshold", "interval", "detail"]
    cells = [
        [
            _check_result(c),
            v,
            c.get("name"),
            c.get("slice", "overall"),
            c.get("value"),
            _threshold(c),
            "" if c.get("ci_low") is None else f"[{_fmt(c['ci_low'])}, {_fmt(c.get('ci_high'))}]",
            c.get("detail", ""),
        ]
        for v, c in rows
    ]
    failed = [c.get("passed") is False and c.get("gated", True) for _, c in rows]
    parts.append(html_table(header, cells, failed))
    return "\n".join(parts)


def _check_rank(check: dict) -> int:
    if not check.get("gated", True):
        return 2
    return 1 if check.get("passed", True) else 0


def _check_result(check: dict) -> str:
    if not check.get("gated", True):
        return "not gated"
    if not check.get("passed", True):
        return "FAIL"
    return "pass (noise)" if check.get("within_noise") else "pass"


def _threshold(check: dict) -> str:
    """The bound with its direction: ``<= 0.005`` (a maximum) or ``>= 0.8`` (a minimum)."""
    if check.get("threshold") is None:
        return ""
    return ("<= " if check.get("direction", "max") == "max" else ">= ") + _fmt(check["threshold"])


# The severe value of each per-feature statistic, by (kind, statistic): the drift table
# carries the warn value (from which a feature counts as drifted); one feature over its
# severe value makes the day warn by itself (``data_checks.drift``).
_SEVERE = {
    ("dense", "psi"): "psi_severe",
    ("categorical", "js"): "js_severe",
    ("categorical", "linf"): "linf_severe",
    ("categorical", "oov"): "oov_severe",
    ("label", "rate_shift"): "label_shift_severe",
    ("prediction", "psi"): "prediction_psi_severe",
}


def _severe_at(row, thresholds: dict) -> float | None:
    field = _SEVERE.get((row.kind, row.statistic))
    if field is None or field not in thresholds or not math.isfinite(row.threshold):
        return None
    if field == "oov_severe":  # the OOV bound sits on top of the reference's own tail share
        return min(1.0, row.threshold - thresholds["oov_warn"] + thresholds["oov_severe"])
    return float(thresholds[field])


def _drift_body(
    drift: pd.DataFrame | None, level: str | None, reasons: list[str], thresholds: dict
) -> str | None:
    has_frame = drift is not None and not drift.empty
    if not has_frame and level is None and not reasons:
        return None
    parts = [f"<p>drift level: <b>{escape(level or 'not measured')}</b></p>"]
    if reasons:
        parts.append(
            "<p>Why: each reason names the level it gives and the threshold it crossed. A "
            "feature over its <b>warn</b> value counts as drifted (the dataset drift share); "
            "one feature over its <b>severe</b> value gives warn by itself; a whole-day "
            "statistic gives the level whose threshold it crossed.</p>"
        )
        parts.append("<ul>" + "".join(f"<li>{escape(r)}</li>" for r in reasons) + "</ul>")
    if not has_frame:
        return "\n".join(parts + ['<p class="muted">per-feature drift not measured</p>'])
    parts.append(img_tag(drift_figure(drift), "drift per feature against its warn threshold"))
    over = drift[drift.over_threshold.eq(True)]
    if not over.empty:
        parts.append("<p>Features over their warn threshold:</p>")
        rows = [
            [r.feature, r.kind, r.statistic, r.value, r.threshold, _severe_at(r, thresholds)]
            for r in over.itertuples(index=False)
        ]
        header = ["feature", "kind", "statistic", "value", "warn at", "severe at"]
        parts.append(html_table(header, rows))
    return "\n".join(parts)


def _slices_body(slices: pd.DataFrame | None) -> str | None:
    if slices is None or slices.empty:
        return None
    columns = [c for c in ("slice", "variant", "rows", "ne", "auc") if c in slices.columns]
    return img_tag(slices_figure(slices), "NE by slice") + html_table(
        columns, slices[columns].values.tolist()
    )


def _links_body(links: dict[str, str] | None) -> str:
    if not links:
        return (
            '<p class="muted">the MLflow UI address is not known: set QUANTREC_MLFLOW_UI_URL '
            "or start it with <code>make ui</code>, and later runs link here</p>"
        )
    items = [
        f"<li>{escape(name)}: {escape(url)}</li>"
        if urlsplit(str(url)).scheme.lower() in _UNSAFE_SCHEMES
        else f'<li><a href="{escape(url)}">{escape(name)}</a></li>'
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
    links: dict[str, str] | None,
    drift_thresholds: dict | None = None,
    numerics: pd.DataFrame | None = None,
) -> str:
    """One run date's report as a self-contained HTML page.

    Sections: the decision and every gate check, metrics per variant, drift per feature,
    reliability diagram, NE by slice, quantization staleness, links. Checks read result
    first, failures first, each bound with its direction. A section whose data is None or
    empty reads "not measured". ``decision``: outcome, promoted, reason, optional
    challenger and drift_level, checks {variant: [check dicts]} (any keys; ``passed`` False
    rows shown red). ``drift``: feature, kind, statistic, value, threshold (NaN = none),
    over_threshold. ``metrics``: {variant: {ne, auc, log_loss, calibration, ...}}.
    ``calibration``: {variant: calibration_bins frame}. ``slices``: slice, variant, rows, ne,
    optional auc. ``staleness``: {measure: value}. ``links``: {name: URL}, or None when the
    MLflow UI's address is not known. ``drift_thresholds``: the ``[drift]`` settings
    (``DriftThresholds``), for each feature's severe value beside its warn value.
    ``numerics``: the searched variant against its fp32 parent, unit by unit
    (``models.numerics.NumericsReport``'s CSV, read back), or None.
    """
    extra = sorted({k for m in metrics.values() for k in m} - set(METRIC_COLUMNS))
    columns = list(METRIC_COLUMNS) + extra
    metric_rows = [[v] + [m.get(c) for c in columns] for v, m in metrics.items()]
    usable = {v: b for v, b in (calibration or {}).items() if b is not None and not b.empty}
    sections = [
        _section("Decision", _decision_body(decision)),
        _section("Metrics", html_table(["variant", *columns], metric_rows) if metrics else None),
        _section("Drift", _drift_body(drift, drift_level, drift_reasons, drift_thresholds or {})),
        _section(
            "Calibration",
            img_tag(calibration_figure(usable), "reliability diagram") if usable else None,
        ),
        _section("NE by slice", _slices_body(slices)),
        _section(
            "Quantization staleness",
            html_table(["measure", "value"], list(map(list, staleness.items())))
            if staleness
            else None,
        ),
        _section(
            "Numerics: searched vs fp32, unit by unit",
            html_table(list(numerics.columns), numerics.values.tolist())
            if numerics is not None and len(numerics)
            else None,
        ),
        _section("Links", _links_body(links)),
    ]
    title = f"quantrec run {run_date.isoformat()}"
    return html_page(title, f"<h1>{escape(title)}</h1>\n" + "\n".join(sections))


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
