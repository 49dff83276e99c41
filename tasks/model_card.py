"""The markdown model card written as each registered version's description.

A reviewer in the MLflow registry sees, on the version page itself: which data it learned
from, how it scored against its fp32 parent and the champion of the day, its precision plan,
how far the day had drifted, and what the gate decided and why.
"""

from __future__ import annotations

from collections import Counter
from datetime import date

METRICS = ("ne", "auc", "log_loss", "calibration")


def model_card(
    *,
    model_name: str,
    variant: str,
    run_date: date,
    run_id: str,
    window: tuple[date, ...],
    window_digest: str,
    metrics: dict[str, dict[str, float]],
    parent: str,
    champion_key: str,
    precisions: dict[str, str],
    size_bytes: int,
    parent_bytes: int,
    drift: dict | None,
    verdict: str,
    decision: dict,
) -> str:
    """Markdown (MLflow renders it) for one version; ``metrics`` maps variant -> metric dict
    and may hold the champion under ``champion_key``."""
    lines = [
        f"## {model_name}: `{variant}` of run date {run_date}",
        "",
        f"**Verdict:** {verdict} (day outcome: {decision.get('outcome')}). "
        f"{decision.get('reason', '')}",
        "",
        "### Data",
        f"- training window: {window[0]} .. {window[-1]} ({len(window)} days), "
        f"digest `{window_digest}`" if window else "- training window: none",
        f"- evaluated on the run date {run_date} (rows no variant trained on)",
        f"- MLflow run: `{run_id}`",
        "",
        "### Metrics on the run date",
        "| model | " + " | ".join(METRICS) + " | NE vs fp32 parent |",
        "|---|" + "---|" * (len(METRICS) + 1),
    ]
    parent_ne = metrics.get(parent, {}).get("ne")
    labels = {variant: f"**{variant}** (this version)"}
    labels.setdefault(parent, f"{parent} (parent)")
    labels[champion_key] = "champion before this run"
    for name, label in labels.items():
        values = metrics.get(name)
        if values:
            cells = " | ".join(_number(values.get(m)) for m in METRICS)
            lines.append(f"| {label} | {cells} | {_relative(values.get('ne'), parent_ne)} |")
    lines += [
        "",
        "### Precision plan",
        f"{size_bytes:,} bytes ({size_bytes / parent_bytes:.3f}x fp32). "
        + ", ".join(f"{p}: {n}" for p, n in sorted(Counter(precisions.values()).items())),
        "",
        "<details><summary>per unit</summary>",
        "",
        *(f"- `{unit}`: {precision}" for unit, precision in sorted(precisions.items())),
        "",
        "</details>",
        "",
        "### Drift of the run date",
    ]
    if drift:
        lines.append(f"level **{drift.get('level', 'n/a')}**; dataset drift share "
                     f"{_number(drift.get('dataset_drift_share'))}; prediction PSI "
                     f"{_number(drift.get('prediction_psi'))}")
        lines += [f"- {reason}" for reason in drift.get("reasons", [])]
    else:
        lines.append("not measured")
    lines += ["", "### Gate checks of this variant",
              "| check | value | threshold | passed | within noise |", "|---|---|---|---|---|"]
    for check in decision.get("checks", {}).get(variant, []):
        threshold = check.get("limit", check.get("threshold"))
        lines.append(f"| {check.get('name')} | {_number(check.get('value'))} | "
                     f"{_number(threshold)} | {check.get('passed')} | "
                     f"{check.get('within_noise', '')} |")
    return "\n".join(lines)


def _number(value) -> str:
    if value is None:
        return "n/a"
    try:
        return f"{float(value):.6g}"
    except (TypeError, ValueError):
        return str(value)


def _relative(value: float | None, reference: float | None) -> str:
    if value is None or not reference:
        return "n/a"
    return f"{(value - reference) / reference:+.4%}"
