"""Reporting stages: open and close the run date's MLflow run, find a finished identical
run, publish the run report and the Prefect summary artifacts."""

from __future__ import annotations

import io
import logging
from datetime import date

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from prefect import get_run_logger
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.client.orchestration import get_client
from prefect.runtime import flow_run
from prefect.states import Completed, State

from quantrec.models.evaluation import Evaluation
from quantrec.models.gate import Decision
from quantrec.models.lifecycle import DayOutcome, DriftOutcome
from quantrec.models.model_card import METRIC_COLUMNS, summary_markdown
from quantrec.models.names import Outcome, Tag
from quantrec.models.numerics import NUMERICS_ARTIFACT
from quantrec.models.report_render import calibration_bins, run_report_html
from quantrec.tasks.config import QuantrecConfig
from quantrec.tasks.settings import code_version, config_hash
from quantrec.tasks.tracking import (
    RECORD_ARTIFACT,
    artifact_url,
    connect,
    experiment_id,
    load_plan_rows,
    mlflow_task,
    mlflow_ui_base,
    run_url,
    set_note,
    start_run,
)

# A flow run's final state is named after the day's outcome (still of type COMPLETED).
STATE_NAMES = {
    Outcome.PROMOTED: "Promoted",
    Outcome.CHALLENGER: "Challenger",
    Outcome.REJECTED: "Rejected",
    Outcome.REUSED: "Reused",
}


@mlflow_task("open-run")
def open_lifecycle_run(run_date: date, experiment: str, config_json: str) -> str:
    """Open the run date's MLflow run (tagged with the run date, config hash and code
    version) and log the config.

    The caller holds the run date's lock, so a run of this date still marked RUNNING was
    killed mid-way: it is closed as KILLED (its persisted stages are resumed from).
    """
    home, client = connect()
    exp_id = experiment_id(client, home, experiment)
    for stale in client.search_runs(
        [exp_id],
        filter_string=f"tags.`{Tag.RUN_DATE}` = '{run_date.isoformat()}' "
        "and attributes.status = 'RUNNING'",
    ):
        client.set_tag(stale.info.run_id, Tag.DECISION, Outcome.CRASHED)
        client.set_terminated(stale.info.run_id, status="KILLED")
    run_id = start_run(
        client,
        exp_id,
        run_date,
        tags={
            Tag.FLOW: "daily_lifecycle",
            Tag.CONFIG_HASH: config_hash(config_json),
            Tag.CODE_VERSION: code_version(),
        },
    )
    client.log_text(run_id, config_json, "config.json")
    return run_id


@mlflow_task("find-finished-run")
def finished_outcome(experiment: str, run_key: str, run_id: str) -> DayOutcome | None:
    """The outcome of a finished run with this identity, or None. ``run_id`` (this run) is
    tagged with the identity either way."""
    _, client = connect()
    client.set_tag(run_id, Tag.RUN_KEY, run_key)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{Tag.RUN_KEY}` = '{run_key}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
    )
    for run in runs:
        if run.info.run_id != run_id and Tag.REUSED_FROM not in run.data.tags:
            try:
                return DayOutcome.from_record(
                    mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/{RECORD_ARTIFACT}")
                )
            except (MlflowException, OSError):
                continue
    return None


@mlflow_task("reuse-finished-run")
def publish_reused(outcome: DayOutcome, run_id: str) -> DayOutcome:
    """Close this run as a no-op rerun of ``outcome``'s run; return that outcome."""
    _, client = connect()
    client.set_tag(run_id, Tag.REUSED_FROM, outcome.mlflow_run_id)
    client.set_tag(run_id, Tag.DECISION, Outcome.REUSED)
    day = outcome.date.isoformat()
    note = (
        f"# quantrec lifecycle, run date {day}: nothing to do\n\n"
        f"Run `{outcome.mlflow_run_id}` already ran this date on the same data, "
        f"configuration and code (decision: {outcome.decision}). Rerun with `--force` "
        "to train and register again."
    )
    create_markdown_artifact(
        markdown=note, key=f"lifecycle-{day}", description=f"quantrec rerun of {day}: reused"
    )
    set_note(client, run_id, note)
    get_run_logger().info(
        "run date %s already ran on the same data, config and code (run %s, decision %s): "
        "nothing to do",
        day,
        outcome.mlflow_run_id,
        outcome.decision,
    )
    _tag_flow_run([f"decision:{Outcome.REUSED}"])
    client.set_terminated(run_id, status="FINISHED")
    return outcome.replace(reused_from=outcome.mlflow_run_id, rerun_mlflow_run_id=run_id)


@mlflow_task("run-report")
def publish_run_report(
    outcome: DayOutcome,
    decision: Decision,
    drift: DriftOutcome,
    evaluation: Evaluation,
    config: QuantrecConfig,
) -> DayOutcome:
    """Log the run's HTML report (drift, calibration, NE by slice, the decision); the
    outcome with where it is (an MLflow UI link when its address is known, else the
    artifact URI)."""
    _, client = connect()
    run_id = outcome.mlflow_run_id
    base = mlflow_ui_base(client)
    links = {"MLflow run": run_url(client, base, run_id)} if base else None
    html = run_report_html(
        run_date=outcome.date,
        decision=decision.to_dict(),
        drift=drift.table,
        drift_level=drift.level,
        drift_reasons=drift.reasons,
        metrics={n: m.to_dict() for n, m in evaluation.metrics.items()},
        calibration={
            n: calibration_bins(evaluation.labels, p) for n, p in evaluation.predictions.items()
        },
        slices=evaluation.slice_table(),
        staleness=drift.staleness,
        links=links,
        drift_thresholds=config.drift.model_dump(),
        numerics=_logged_numerics(run_id),
    )
    client.log_text(run_id, html, "report.html")
    where = artifact_url(client, base, run_id, "report.html") if base else None
    return outcome.replace(report=where or f"runs:/{run_id}/report.html")


def _logged_numerics(run_id: str) -> pd.DataFrame | None:
    """The run's ``search/numerics.csv`` (the register stage logs it), or None."""
    try:
        text = mlflow.artifacts.load_text(f"runs:/{run_id}/{NUMERICS_ARTIFACT}")
    except (MlflowException, OSError):
        return None
    return pd.read_csv(io.StringIO(text))


@mlflow_task("summarize")
def publish_summary(outcome: DayOutcome) -> DayOutcome:
    """Record the day where reviewers look, then close the run: the record and the run's
    description (the summary) in MLflow; the summary, the variants table, the plan table
    and links in Prefect; the decision, drift level and any stop reason in the flow run's
    log, and the decision and drift level as its tags."""
    _, client = connect()
    run_id, day = outcome.mlflow_run_id, outcome.date.isoformat()
    client.log_dict(run_id, outcome.to_record(), RECORD_ARTIFACT)
    winner = outcome.promoted_variant or outcome.challenger_variant
    plan = load_plan_rows(run_id, winner)
    summary = summary_markdown(outcome, plan=plan)
    short = summary if len(summary) <= 8000 else summary_markdown(outcome, plan=plan, checks=False)
    set_note(client, run_id, short)
    links = mlflow_links(client, outcome)
    create_markdown_artifact(
        markdown=summary + "".join(f"\n\n[{name}]({url})" for name, url in links.items()),
        key=f"lifecycle-{day}",
        description=f"quantrec decision for {day}: {outcome.decision}",
    )
    if outcome.metrics:
        create_table_artifact(
            table=[
                {
                    "variant": name,
                    **{m: round(v[m], 6) for m in METRIC_COLUMNS},
                    "bytes": outcome.bytes.get(name),
                    "version": outcome.registered_versions.get(name),
                }
                for name, v in outcome.metrics.items()
            ],
            key=f"variants-{day}",
            description=f"Variants x metrics on {day}",
        )
    if plan:
        create_table_artifact(
            table=[row.to_dict() for row in plan],
            key=f"plan-{day}",
            description=f"Precision plan of {winner} on {day}, unit by unit",
        )
    for name, url in links.items():
        create_link_artifact(link=url, link_text=name, key=f"{_slug(name)}-{day}")
    _announce(outcome)
    client.set_terminated(run_id, status="FINISHED")
    return outcome


def _announce(outcome: DayOutcome) -> None:
    """The decision, the drift level and the stop reason in the flow run's log and tags."""
    logger = get_run_logger()
    day = outcome.date.isoformat()
    # INFO: the Logs tab shows it; the terminal (warnings only) has the CLI's own lines.
    if outcome.stopped:
        logger.info("run date %s stopped before training: %s", day, outcome.reason)
        if outcome.quarantined:
            logger.warning("run date %s quarantined at %s", day, outcome.quarantined)
    level = outcome.drift_level
    logger.info("drift level of %s: %s", day, level or "not measured (stopped before drift)")
    logger.info(
        "decision for %s: %s%s; champion %s -> %s; %s",
        day,
        outcome.decision,
        f" ({outcome.promoted_variant or outcome.challenger_variant})"
        if outcome.promoted_variant or outcome.challenger_variant
        else "",
        outcome.champion_version_before or "none",
        outcome.champion_version or "none",
        outcome.reason,
    )
    tags = [f"decision:{outcome.decision}"]
    tags += [f"drift:{level}"] if level else ["stopped"]
    _tag_flow_run(tags)


def _tag_flow_run(tags: list[str]) -> None:
    """Add ``tags`` to the flow run this task runs in (the Prefect UI filters by them)."""
    run_id = flow_run.get_id()
    if not run_id:
        return
    with get_client(sync_client=True) as client:
        current = client.read_flow_run(run_id).tags
        client.update_flow_run(run_id, tags=sorted(set(current) | set(tags)))


def outcome_state(outcome: DayOutcome) -> State:
    """The flow run's final state: COMPLETED, named after the outcome ("Promoted",
    "Challenger", "Rejected", "Reused") with the reason as its message."""
    name = STATE_NAMES[Outcome.REUSED] if outcome.reused_from else None
    name = name or STATE_NAMES.get(outcome.decision, "Completed")
    message = " ".join(outcome.reason.split())
    return Completed(name=name, message=message[:1000], data=outcome)


def mlflow_links(client, outcome: DayOutcome) -> dict[str, str]:
    """Name -> URL of the run, its report and the registered versions, when the MLflow UI's
    address is known (``tracking.mlflow_ui_base``)."""
    base = mlflow_ui_base(client)
    if base is None:
        return {}
    links = {"MLflow run": run_url(client, base, outcome.mlflow_run_id)}
    if (outcome.report or "").startswith("http"):
        links["run report"] = outcome.report
    for variant, version in outcome.registered_versions.items():
        links[f"model version {version} ({variant})"] = (
            f"{base}/#/models/{outcome.model_name}/versions/{version}"
        )
    return links


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")[:40]


def close_failed_run(run_id: str, *, stopped: bool = False) -> None:
    """Mark the MLflow run failed, or ``KILLED`` when the process was ``stopped`` (SIGTERM,
    Ctrl-C); the champion alias was not touched. Best effort: when MLflow itself is what
    failed, the run stays RUNNING and the next run of the date closes it as KILLED."""
    try:
        _, client = connect()
        client.set_tag(run_id, Tag.DECISION, Outcome.CRASHED if stopped else Outcome.FAILED)
        client.set_terminated(run_id, status="KILLED" if stopped else "FAILED")
    except Exception as err:  # noqa: BLE001 - the original error is the one to raise
        logging.getLogger(__name__).warning("could not mark run %s failed: %s", run_id, err)
