"""The lifecycle report: does the managed champion stay accurate while the data moves?

For each run date in a range it puts side by side, on that day's rows:
1. the first day's model frozen in int8 (what serving would be without the daily care),
2. the model retrained daily in fp32 (the accuracy available that day),
3. the managed champion: the model quantrec serves after that day's decision (the promoted
   variant, or the champion it kept).
The numbers come from the runs' records in MLflow; the frozen model is scored anew on each
day's partition from the lake.
"""

from __future__ import annotations

import io
import math
import tempfile
from datetime import date
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact

from quantrec.models.batch import batch_from_frame
from quantrec.models.lifecycle import DayOutcome, served_ne
from quantrec.models.lifecycle_report import lifecycle_summary, write_lifecycle_report
from quantrec.models.names import GROUND_TRUTH_KEY, Baseline, Tag, Variant
from quantrec.models.plan_record import plan_frame, plan_sentences
from quantrec.models.report_render import ReportError
from quantrec.models.scorer import score
from quantrec.tasks.config import QuantrecConfig
from quantrec.tasks.settings import quantrec_home
from quantrec.tasks.tracking import (
    RECORD_ARTIFACT,
    artifact_url,
    connect,
    experiment_id,
    load_version,
    mlflow_task,
    mlflow_ui_base,
    raw_artifact_url,
    set_note,
)

FROZEN_VARIANT = Variant.INT8


def day_outcomes(start: date, end: date, experiment: str) -> dict[date, DayOutcome]:
    """The outcome of the latest finished (not reused) run of each date in [start, end]."""
    _, client = connect()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ReportError(f"no MLflow experiment {experiment!r} at {client.tracking_uri}")
    runs = client.search_runs(
        [found.experiment_id],
        # Tags compare only by equality or LIKE: filter the dates here.
        filter_string=f"tags.`{Tag.RUN_DATE}` != '' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time ASC"],
        max_results=5000,
    )
    outcomes: dict[date, DayOutcome] = {}
    for run in runs:
        day = run.data.tags.get(Tag.RUN_DATE, "")
        if Tag.REUSED_FROM in run.data.tags or not start.isoformat() <= day <= end.isoformat():
            continue
        try:
            record = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/{RECORD_ARTIFACT}")
        except (MlflowException, OSError):
            continue
        outcome = DayOutcome.from_record(record)
        outcomes[outcome.date] = outcome  # later runs win
    if not outcomes:
        raise ReportError(
            f"no finished lifecycle run between {start} and {end} in experiment "
            f"{experiment!r}; run `quantrec backfill --start {start} --end {end}`"
        )
    return dict(sorted(outcomes.items()))


def lifecycle_frame(
    outcomes: dict[date, DayOutcome],
    model_name: str,
    batch_size: int,
    *,
    frozen_known: dict[date, float] | None = None,
) -> pd.DataFrame:
    """One row per run date: frozen_ne, fp32_ne, champion_ne, the baselines' and the
    truth's NE, the training mode, drift_level, promoted, outcome. ``frozen_known``: the
    frozen model's NE of days already scored (a day's partition never changes)."""
    known = frozen_known or {}
    frozen = None if set(outcomes) <= set(known) else _frozen_model(outcomes, model_name)
    approved = _approved_versions(model_name)
    day_lake = quantrec_home().day_lake()
    rows = []
    for day, outcome in outcomes.items():
        frozen_ne = known.get(day, math.nan)
        if day not in known and frozen is not None and day_lake.exists(day):
            batch = batch_from_frame(day_lake.read(day), frozen.schema)
            frozen_ne = score(frozen.model, batch, batch_size=batch_size).ne
        rows.append(
            {
                "date": day,
                "frozen_ne": frozen_ne,
                "fp32_ne": outcome.metrics.get(Variant.FP32, {}).get("ne", math.nan),
                "champion_ne": served_ne(outcome, approved),
                "logistic_ne": outcome.metrics.get(Baseline.LOGISTIC, {}).get("ne", math.nan),
                "constant_ne": outcome.metrics.get(Baseline.CONSTANT, {}).get("ne", math.nan),
                "truth_ne": outcome.metrics.get(GROUND_TRUTH_KEY, {}).get("ne", math.nan),
                "training_mode": outcome.training_mode,
                "drift_level": outcome.drift_level,
                "promoted": (
                    outcome.champion_version != outcome.champion_version_before
                    or outcome.challenger_version in approved
                ),
                "outcome": outcome.decision,
            }
        )
    return pd.DataFrame(rows)


def _approved_versions(model_name: str) -> set[str]:
    _, client = connect()
    try:
        found = client.search_model_versions(
            f"name='{model_name}' and tags.`{Tag.REVIEW}` = 'approved'"
        )
    except MlflowException:
        return set()
    return {str(v.version) for v in found}


def _frozen_model(outcomes: dict[date, DayOutcome], model_name: str):
    for outcome in outcomes.values():
        version = outcome.registered_versions.get(FROZEN_VARIANT)
        if version:
            return load_version(model_name, version)
    return None


def write_report(
    start: date, end: date, out: Path, config: QuantrecConfig, *, shift_date: date | None = None
) -> tuple[Path, Path, dict]:
    """Write ``lifecycle.png``, ``lifecycle.html`` and ``lifecycle.csv`` into ``out``;
    return the first two and the summary numbers."""
    outcomes = day_outcomes(start, end, config.registry.experiment)
    days = lifecycle_frame(outcomes, config.registry.model_name, config.evaluation.batch_size)
    budget = config.gate.quantization_ne_budget_rel
    png, html = write_lifecycle_report(
        days,
        Path(out),
        budget_rel=budget,
        shift_date=shift_date,
        plan=plan_frame(outcomes.values()),
        faithfulness_bound=_bound(config),
    )
    days.to_csv(Path(out) / "lifecycle.csv", index=False)
    return png, html, lifecycle_summary(days, budget_rel=budget, shift_date=shift_date)


# The lifecycle report every run publishes covers the latest run dates, up to this many: a
# year of runs would score the frozen model on a year of days after every run.
PUBLISHED_DAYS = 60
REPORT_RUN_NAME = "lifecycle-report"
REPORT_KEY = "lifecycle-report"
# The report run's tag: which version its frozen-model NEs were scored with.
FROZEN_TAG = "quantrec.frozen_version"


@mlflow_task("lifecycle-report")
def publish_lifecycle_report(config: QuantrecConfig) -> str | None:
    """Rebuild the lifecycle report over the latest ``PUBLISHED_DAYS`` run dates and publish
    it where reviewers look: the artifacts ``lifecycle/`` of the experiment's one
    ``lifecycle-report`` MLflow run (its description the summary sentences), and the Prefect
    markdown artifact ``lifecycle-report`` (updated in place: one key, a new version per run).
    Returns the report's MLflow artifact URI.

    The report is derived from the runs' records: when it cannot be built the day's
    decision stands, so the failure is logged, not raised.
    """
    logger = get_run_logger()
    try:
        outcomes = day_outcomes(date.min, date.max, config.registry.experiment)
    except ReportError as err:
        logger.warning("lifecycle report not published: %s", err)
        return None
    days = dict(list(outcomes.items())[-PUBLISHED_DAYS:])
    try:
        return _publish(days, config)
    except Exception as err:  # noqa: BLE001 - the day's decision must not depend on it
        logger.warning("lifecycle report not published: %s: %s", type(err).__name__, err)
        return None


def _publish(days: dict[date, DayOutcome], config: QuantrecConfig) -> str:
    home, client = connect()
    run_id = _report_run(client, home, config.registry.experiment)
    frozen = _frozen_version(days)
    frame = lifecycle_frame(
        days,
        config.registry.model_name,
        config.evaluation.batch_size,
        frozen_known=_scored_days(client, run_id, frozen),
    )
    budget, shift = config.gate.quantization_ne_budget_rel, getattr(config.feed, "shift_date", None)
    summary = lifecycle_summary(frame, budget_rel=budget, shift_date=shift)
    plan = plan_frame(days.values())
    client.set_tag(run_id, FROZEN_TAG, frozen or "")
    with tempfile.TemporaryDirectory(prefix="quantrec-lifecycle-") as tmp:
        write_lifecycle_report(
            frame,
            Path(tmp),
            budget_rel=budget,
            shift_date=shift,
            plan=plan,
            faithfulness_bound=_bound(config),
        )
        frame.to_csv(Path(tmp) / "lifecycle.csv", index=False)
        client.log_artifacts(run_id, tmp, "lifecycle")
    base = mlflow_ui_base(client)
    lines = [
        f"# quantrec lifecycle, {min(days)} .. {max(days)}",
        "",
        *summary["sentences"],
        "",
        *(plan_sentences(plan, bound=_bound(config)) if len(plan) else []),
        "",
    ]
    if base:
        lines += [
            f"![NE per run date]({raw_artifact_url(base, run_id, 'lifecycle/lifecycle.png')})",
            "",
            f"[the full report in MLflow]"
            f"({artifact_url(client, base, run_id, 'lifecycle/lifecycle.html')})",
            "",
        ]
    lines += _days_table(frame, days)
    set_note(client, run_id, "\n".join(lines))
    create_markdown_artifact(
        markdown="\n".join(lines),
        key=REPORT_KEY,
        description="NE per run date: frozen int8, daily fp32, managed champion",
    )
    return f"runs:/{run_id}/lifecycle/lifecycle.html"


def _bound(config: QuantrecConfig) -> float:
    """The faithfulness bound the plan is held to (default: the gate's budget)."""
    bound = config.search.faithfulness
    return config.gate.quantization_ne_budget_rel if bound is None else bound


def _frozen_version(days: dict[date, DayOutcome]) -> str | None:
    """The version the report scores as the frozen model (``_frozen_model``'s choice)."""
    return next(
        (
            o.registered_versions[FROZEN_VARIANT]
            for o in days.values()
            if FROZEN_VARIANT in o.registered_versions
        ),
        None,
    )


def _scored_days(client, run_id: str, frozen: str | None) -> dict[date, float]:
    """The frozen model's NE per day from the last published report, when it scored the
    same frozen version: each run then scores its own day only, not the whole range."""
    run = client.get_run(run_id)
    if frozen is None or run.data.tags.get(FROZEN_TAG) != frozen:
        return {}
    try:
        text = mlflow.artifacts.load_text(f"runs:/{run_id}/lifecycle/lifecycle.csv")
    except (MlflowException, OSError):
        return {}
    previous = pd.read_csv(io.StringIO(text), usecols=["date", "frozen_ne"]).dropna()
    return {
        date.fromisoformat(str(d)): float(ne) for d, ne in zip(previous.date, previous.frozen_ne)
    }


def _report_run(client, home, experiment: str) -> str:
    """The experiment's one run holding the lifecycle report, created on first use."""
    exp_id = experiment_id(client, home, experiment)
    found = client.search_runs(
        [exp_id], filter_string=f"tags.`{Tag.FLOW}` = '{REPORT_RUN_NAME}'", max_results=1
    )
    if found:
        return found[0].info.run_id
    run = client.create_run(exp_id, run_name=REPORT_RUN_NAME, tags={Tag.FLOW: REPORT_RUN_NAME})
    client.set_terminated(run.info.run_id, status="FINISHED")
    return run.info.run_id


def _days_table(frame: pd.DataFrame, days: dict[date, DayOutcome]) -> list[str]:
    """Markdown, one row per run date: the decision, the champion after the day, NEs."""
    lines = [
        "| date | decision | drift | champion | champion NE | fp32 NE | frozen int8 NE |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for row, outcome in zip(frame.itertuples(index=False), days.values()):
        champion = outcome.champion_version or "none"
        if outcome.promoted_variant:
            champion += f" ({outcome.promoted_variant}, new)"
        lines.append(
            f"| {row.date} | {outcome.decision} | {row.drift_level or 'n/a'} | {champion} | "
            f"{_ne(row.champion_ne)} | {_ne(row.fp32_ne)} | {_ne(row.frozen_ne)} |"
        )
    return lines


def _ne(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.5f}"
