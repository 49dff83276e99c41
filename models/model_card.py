"""The markdown model card written as each registered version's description, and the run
date's summary (the Prefect summary artifact and the MLflow run's description).

A reviewer in the MLflow registry sees, on the version page itself: what the gate decided
and why (and, after a review, what the reviewer decided), which data it learned from, how it
scored against its fp32 parent and the champion of the day, its precision plan unit by unit,
how far the day had drifted, and every gate check, failures first. Every table has a blank
line before it and one number per cell, so MLflow's and Prefect's markdown render it as a
table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from quantrec.models.markdown import escape_markdown, table
from quantrec.models.names import CHAMPION_KEY, GROUND_TRUTH_KEY, Baseline, Tag, Variant
from quantrec.models.plan_table import PlanRow, plan_markdown

if TYPE_CHECKING:
    from quantrec.models.lifecycle import DayOutcome

METRICS = ("ne", "auc", "log_loss", "calibration")
METRIC_COLUMNS = METRICS


# --- reviews: what a human decided after the gate -----------------------------------------


def reviewed_decision(tags: Mapping[str, str]) -> str | None:
    """What the version's decision tag says after a human decision (None: no review):
    the latest of an approval or rejection, an override and a rollback."""
    events = []
    if tags.get(Tag.REVIEW) in ("approved", "rejected"):
        label = "approved" if tags[Tag.REVIEW] == "approved" else "rejected in review"
        events.append((tags.get(Tag.REVIEWED_AT, ""), label))
    if tags.get(Tag.OVERRIDE_AT):
        events.append((tags[Tag.OVERRIDE_AT], "promoted by override"))
    if tags.get(Tag.ROLLED_BACK_AT):
        events.append((tags[Tag.ROLLED_BACK_AT], "rolled back"))
    return max(events)[1] if events else None


def review_lines(tags: Mapping[str, str]) -> list[str]:
    """One markdown bullet per human decision recorded in the version's tags, oldest first."""
    events = []
    if tags.get(Tag.REVIEW) in ("approved", "rejected"):
        events.append(
            (
                tags.get(Tag.REVIEWED_AT, ""),
                f"{tags[Tag.REVIEW]} in review by {tags.get(Tag.REVIEWED_BY, '?')}",
                tags.get(Tag.REVIEW_REASON, ""),
            )
        )
    if tags.get(Tag.OVERRIDE_AT):
        events.append(
            (
                tags[Tag.OVERRIDE_AT],
                f"promoted by {tags.get(Tag.OVERRIDE_BY, '?')}, overriding the gate's "
                f"{tags.get(Tag.OVERRIDE_OF_DECISION, '?')!r}",
                tags.get(Tag.OVERRIDE_REASON, ""),
            )
        )
    if tags.get(Tag.ROLLED_BACK_AT):
        events.append(
            (
                tags[Tag.ROLLED_BACK_AT],
                f"rolled back by {tags.get(Tag.ROLLED_BACK_BY, '?')} (no longer the champion)",
                tags.get(Tag.ROLLED_BACK_REASON, ""),
            )
        )
    return [
        f"- {at}: **{what}**" + (f": {escape_markdown(why)}" if why else "")
        for at, what, why in sorted(events)
    ]


# --- the model card ------------------------------------------------------------------------


# A version's description holds 5000 characters in MLflow's PostgreSQL and MySQL stores
# (SQLite keeps any length); a plan of many units gives way, rows from its end, to fit.
DESCRIPTION_MAX = 5000


def description_limit(*, embedded_sqlite: bool) -> int | None:
    """The card's limit for a store: none for the embedded SQLite one; behind a tracking
    server the backend is unknown, so the limit every MLflow store keeps."""
    return None if embedded_sqlite else DESCRIPTION_MAX


# Per-feature warn reasons of the drift section shown in full; the rest are counted.
DRIFT_WARNS_SHOWN = 5


def model_card(
    outcome: DayOutcome,
    variant: str,
    *,
    plan: Sequence[PlanRow] = (),
    review: Mapping[str, str] | None = None,
    max_chars: int | None = None,
) -> str:
    """Markdown (MLflow renders it) for the version of ``variant`` registered by the run
    date of ``outcome``; ``plan`` its rows (``models.plan_table``), ``review`` the
    version's tags when a human has decided on it since. At most ``max_chars`` (None: any
    length): the plan table loses its last rows first (the card says how many; the run's
    ``plans/<variant>.json`` holds them all)."""
    rows = list(plan)
    keep = len(rows)
    card = _card(outcome, variant, rows, review, hidden=0)
    if max_chars is None:
        return card
    while len(card) > max_chars and keep > 0:
        keep -= max(1, keep // 8)
        card = _card(outcome, variant, rows[:keep], review, hidden=len(rows) - keep)
    return card if len(card) <= max_chars else card[: max_chars - 1] + "\u2026"


def _card(
    outcome: DayOutcome,
    variant: str,
    plan: list[PlanRow],
    review: Mapping[str, str] | None,
    *,
    hidden: int,
) -> str:
    run_date, window = outcome.date, outcome.window
    verdict = outcome.verdict(variant)
    after = reviewed_decision(review or {})
    lines = [
        f"## {outcome.model_name}: `{variant}` of run date {run_date}",
        "",
        f"**Decision:** {after} (the gate said: {verdict})"
        if after
        else f"**Verdict:** {verdict} (day outcome: {outcome.decision})",
        "",
        f"> {escape_markdown(outcome.reason)}",
        "",
        "Promote, approve or roll back with quantrec (`quantrec review approve VERSION`, "
        '`quantrec promote VERSION --reason "..."`, `quantrec rollback`), not with the '
        "registry's Promote model button: quantrec moves the aliases together and records "
        "the decision here.",
        "",
    ]
    if after:
        lines += ["### Review", "", *review_lines(review or {}), ""]
    lines += [
        "### Metrics on the run date",
        "",
        *_metrics_table(outcome, variant),
        "",
        "### Precision plan",
        "",
        _plan_headline(outcome, variant),
        "",
        *plan_markdown(plan),
        *(
            ["", f"({hidden} more units: the run's `plans/{variant}.json` holds the whole plan)"]
            if hidden
            else []
        ),
        "",
        "### Drift of the run date",
        "",
        *_drift_lines(outcome.drift),
        "",
        "### Data",
        "",
        f"- training window: {window[0]} .. {window[-1]} ({len(window)} days), "
        f"digest `{outcome.window_digest}`"
        if window
        else "- training window: none",
        f"- evaluated on the run date {run_date} (rows no variant trained on)",
        f"- MLflow run: `{outcome.mlflow_run_id}`",
        "",
        "### Gate checks of this variant (failures first)",
        "",
        *checks_table(outcome.checks.get(variant, [])),
    ]
    return "\n".join(lines)


def _metrics_table(outcome: DayOutcome, variant: str) -> list[str]:
    metrics, parent = outcome.metrics, str(Variant.FP32)
    parent_ne = metrics.get(parent, {}).get("ne")
    labels = {variant: f"**{variant}** (this version)"}
    labels.setdefault(parent, f"{parent} (parent)")
    labels[CHAMPION_KEY] = "champion before this run"
    labels.update(
        {
            str(Baseline.CONSTANT): "baseline: base rate",
            str(Baseline.LOGISTIC): "baseline: logistic regression",
            GROUND_TRUTH_KEY: "ground truth (best reachable)",
        }
    )
    rows = [
        [label, *(_number(values.get(m)) for m in METRICS), _relative(values.get("ne"), parent_ne)]
        for name, label in labels.items()
        if (values := metrics.get(name))
    ]
    return table(["model", *METRICS, "NE vs fp32 parent"], rows, right=len(METRICS) + 1)


def _plan_headline(outcome: DayOutcome, variant: str) -> str:
    size = outcome.bytes.get(variant)
    parent = outcome.bytes.get(str(Variant.FP32)) or size
    if not size:
        return "size not measured"
    return f"{size:,} bytes ({size / parent:.3f}x fp32)"


def _drift_lines(drift: dict | None) -> list[str]:
    if not drift:
        return ["not measured: the day stopped before drift was measured"]
    lines = [
        f"level **{drift.get('level', 'n/a')}**; dataset drift share "
        f"{_number(drift.get('dataset_drift_share'))}; prediction PSI "
        f"{_number(drift.get('prediction_psi'))}",
    ]
    reasons = drift.get("reasons", [])
    if reasons:
        # Every severe reason; the per-feature warns only up to a few (a shifted day has one
        # per feature, dozens that would push the plan out of the card).
        severe = [r for r in reasons if not r.startswith("warn")]
        warn = [r for r in reasons if r.startswith("warn")]
        shown = severe + warn[:DRIFT_WARNS_SHOWN]
        lines += [
            "",
            "Why (each reason names the level it gives and the threshold it crossed: one "
            "feature over its severe value gives warn, a whole-day statistic over its warn "
            "or severe value gives that level):",
            "",
            *(f"- {escape_markdown(reason)}" for reason in shown),
        ]
        if len(warn) > DRIFT_WARNS_SHOWN:
            lines += [
                "",
                f"({len(warn) - DRIFT_WARNS_SHOWN} more warn reasons: the run's "
                "`drift/features.csv` holds every feature's scores)",
            ]
    return lines


def threshold_text(check: Mapping) -> str:
    """A check's bound with its direction: ``<= 0.005`` (max) or ``>= 0.8`` (min)."""
    threshold = check.get("threshold")
    if threshold is None:
        return "n/a"
    return ("<= " if check.get("direction", "max") == "max" else ">= ") + _number(threshold)


def check_result(check: Mapping) -> str:
    """FAIL | pass | pass (within noise) | not gated."""
    if not check.get("gated", True):
        return "not gated"
    if not check.get("passed"):
        return "**FAIL**"
    return "pass (within noise)" if check.get("within_noise") else "pass"


def _rank(check: Mapping) -> int:
    if not check.get("gated", True):
        return 2
    return 1 if check.get("passed") else 0


def checks_table(checks: Sequence[Mapping], *, variants: Sequence[str] = ()) -> list[str]:
    """Markdown table of gate checks: the result first, failed checks first (then passes,
    then checks not gated; recorded order within each), thresholds with their direction.
    ``variants``, when given, names each check's variant in a column."""
    if not checks:
        return ["no checks recorded"]
    named = bool(variants)
    ordered = sorted(zip(variants or [""] * len(checks), checks), key=lambda row: _rank(row[1]))
    rows = [
        [
            check_result(check),
            *([variant] if named else []),
            str(check.get("name")),
            str(check.get("slice", "overall")),
            _number(check.get("value")),
            threshold_text(check),
        ]
        for variant, check in ordered
    ]
    header = ["result", *(["variant"] if named else []), "check", "slice", "value", "threshold"]
    return table(header, rows, right=2)


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


# --- the run date's summary ----------------------------------------------------------------


def summary_markdown(
    outcome: DayOutcome,
    *,
    plan: Sequence[PlanRow] = (),
    review: Mapping[str, str] | None = None,
    reviewed_version: str | None = None,
    champion: str | None = None,
    checks: bool = True,
) -> str:
    """The run date's summary: the decision first, then the serving model, the variants,
    the plan of the day's winner (``plan``), drift and the gate's checks. After a review,
    ``review`` is the tags of ``reviewed_version`` and ``champion`` the champion now."""
    after = reviewed_decision(review or {})
    winner = outcome.promoted_variant or outcome.challenger_variant
    lines = [
        f"# quantrec lifecycle, run date {outcome.date.isoformat()}",
        "",
        f"**Decision:** {outcome.decision}" + (f" ({winner})" if winner else ""),
        "",
        f"> {escape_markdown(outcome.reason)}",
        "",
    ]
    if after:
        lines += [
            f"**After review:** version {reviewed_version or '?'} {after}",
            "",
            *review_lines(review or {}),
            "",
        ]
    now = champion if champion is not None else outcome.champion_version
    lines += [
        f"**Champion:** version {now or 'none'} (before this run: "
        f"{outcome.champion_version_before or 'none'})",
        "",
    ]
    if outcome.challenger_version and not after:
        lines += [
            f"**Challenger for review:** version {outcome.challenger_version} "
            f"({outcome.challenger_variant}): `quantrec review approve "
            f"{outcome.challenger_version}` or `quantrec review reject "
            f'{outcome.challenger_version} --reason "..."`',
            "",
        ]
    if outcome.metrics:
        rows = [
            [
                name,
                *(_number(values.get(c)) for c in METRIC_COLUMNS),
                "" if outcome.bytes.get(name) is None else f"{outcome.bytes[name]:,}",
                outcome.registered_versions.get(
                    name, "(current champion)" if name == CHAMPION_KEY else "-"
                ),
            ]
            for name, values in outcome.metrics.items()
        ]
        header = ["variant", *METRIC_COLUMNS, "bytes", "version"]
        lines += ["## Variants on the run date", *table(header, rows, right=len(header) - 1)]
    if winner and plan:
        lines += [
            f"## Precision plan of `{winner}`",
            "",
            f"{outcome.plan_source} ({outcome.plan_reason})",
            "",
            *plan_markdown(list(plan)),
            "",
        ]
    lines += ["## Drift", "", *_drift_lines(outcome.drift), ""]
    if checks and outcome.checks:
        pairs = [(v, c) for v, cs in outcome.checks.items() for c in cs]
        lines += [
            "## Gate checks (failures first)",
            "",
            *checks_table([c for _, c in pairs], variants=[v for v, _ in pairs]),
            "",
        ]
    if outcome.report:
        lines += [f"Run report: {outcome.report}", ""]
    lines.append(f"MLflow run id: `{outcome.mlflow_run_id}`")
    return "\n".join(lines)
