"""The markdown model card written as each registered version's description.

A reviewer in the MLflow registry sees, on the version page itself: which data it learned
from, how it scored against its fp32 parent and the champion of the day, its precision plan,
how far the day had drifted, and what the gate decided and why.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from quantrec.models.names import CHAMPION_KEY, GROUND_TRUTH_KEY, Baseline, Variant

if TYPE_CHECKING:
    from quantrec.models.lifecycle import DayOutcome

METRICS = ("ne", "auc", "log_loss", "calibration")
METRIC_COLUMNS = METRICS


def model_card(outcome: DayOutcome, variant: str) -> str:
    """Markdown (MLflow renders it) for the version of ``variant`` registered by the run
    date of ``outcome``."""
    run_date, metrics = outcome.date, outcome.metrics
    window, parent, champion_key = outcome.window, str(Variant.FP32), CHAMPION_KEY
    verdict, decision = (
        outcome.verdict(variant),
        {"outcome": outcome.decision, "reason": outcome.reason, "checks": outcome.checks},
    )
    size_bytes = outcome.bytes[variant]
    parent_bytes = outcome.bytes.get(parent, size_bytes)
    precisions, drift = outcome.precisions.get(variant, {}), outcome.drift
    lines = [
        f"## {outcome.model_name}: `{variant}` of run date {run_date}",
        "",
        f"**Verdict:** {verdict} (day outcome: {decision.get('outcome')}). "
        f"{decision.get('reason', '')}",
        "",
        "### Data",
        f"- training window: {window[0]} .. {window[-1]} ({len(window)} days), "
        f"digest `{outcome.window_digest}`"
        if window
        else "- training window: none",
        f"- evaluated on the run date {run_date} (rows no variant trained on)",
        f"- MLflow run: `{outcome.mlflow_run_id}`",
        "",
        "### Metrics on the run date",
        "| model | " + " | ".join(METRICS) + " | NE vs fp32 parent |",
        "|---|" + "---|" * (len(METRICS) + 1),
    ]
    parent_ne = metrics.get(parent, {}).get("ne")
    labels = {variant: f"**{variant}** (this version)"}
    labels.setdefault(parent, f"{parent} (parent)")
    labels[champion_key] = "champion before this run"
    labels.update(
        {
            str(Baseline.CONSTANT): "baseline: base rate",
            str(Baseline.LOGISTIC): "baseline: logistic regression",
            GROUND_TRUTH_KEY: "ground truth (best reachable)",
        }
    )
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
        lines.append(
            f"level **{drift.get('level', 'n/a')}**; dataset drift share "
            f"{_number(drift.get('dataset_drift_share'))}; prediction PSI "
            f"{_number(drift.get('prediction_psi'))}"
        )
        lines += [f"- {reason}" for reason in drift.get("reasons", [])]
    else:
        lines.append("not measured")
    lines += [
        "",
        "### Gate checks of this variant",
        "| check | value | threshold | passed | within noise |",
        "|---|---|---|---|---|",
    ]
    for check in decision.get("checks", {}).get(variant, []):
        threshold = check.get("threshold")
        lines.append(
            f"| {check.get('name')} | {_number(check.get('value'))} | "
            f"{_number(threshold)} | {check.get('passed')} | "
            f"{check.get('within_noise', '')} |"
        )
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


def summary_markdown(outcome: DayOutcome) -> str:
    """The Prefect summary artifact of a run date."""
    lines = [
        f"# quantrec lifecycle, run date {outcome.date.isoformat()}",
        "",
        f"**Decision:** {outcome.decision}"
        + (f" ({outcome.promoted_variant})" if outcome.promoted_variant else ""),
        "",
        f"> {outcome.reason}",
        "",
        "| variant | " + " | ".join(METRIC_COLUMNS) + " | bytes | registered version |",
        "|---|" + "---|" * (len(METRIC_COLUMNS) + 2),
    ]
    for name, values in outcome.metrics.items():
        cells = " | ".join(f"{values[c]:.5f}" for c in METRIC_COLUMNS)
        size = outcome.bytes.get(name, "")
        version = outcome.registered_versions.get(
            name, "(current champion)" if name == CHAMPION_KEY else "-"
        )
        lines.append(f"| {name} | {cells} | {size} | {version} |")
    lines += ["", "| variant | check | value | threshold | passed |", "|---|---|---|---|---|"]
    for variant, checks in outcome.checks.items():
        for c in checks:
            value = "n/a" if c["value"] is None else f"{c['value']:.6g}"
            noise = c.get("within_noise")
            passed = f"{c['passed']}" + (" (within noise)" if noise else "")
            lines.append(f"| {variant} | {c['name']} | {value} | {c['threshold']} | {passed} |")
    if outcome.drift:
        drift = outcome.drift
        lines += ["", f"**Drift:** {drift['level']}"] + [f"- {r}" for r in drift["reasons"][:10]]
    if outcome.challenger_version:
        lines += [
            "",
            f"**Challenger for review:** version {outcome.challenger_version} "
            f"({outcome.challenger_variant}); `quantrec review list`",
        ]
    if outcome.report:
        lines += ["", f"Run report: `{outcome.report}`"]
    lines += [
        "",
        f"Precision plan: {outcome.plan_source} ({outcome.plan_reason})",
        "",
        f"Champion version: {outcome.champion_version_before} -> {outcome.champion_version}",
        "",
        f"MLflow run id: `{outcome.mlflow_run_id}`",
    ]
    return "\n".join(lines)
