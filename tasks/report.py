"""Reporting stages: open and close the run date's MLflow run, find a finished identical
run, publish the run report and the Prefect summary artifacts."""

from __future__ import annotations

import logging
import os
from datetime import date

import mlflow
from mlflow.exceptions import MlflowException
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)

from quantrec.models.evaluation import Evaluation
from quantrec.models.gate import Decision
from quantrec.models.lifecycle import DayOutcome, DriftOutcome
from quantrec.models.model_card import METRIC_COLUMNS, summary_markdown
from quantrec.models.names import Outcome, Tag
from quantrec.models.report_render import calibration_bins, run_report_html
from quantrec.tasks.settings import code_version, config_hash
from quantrec.tasks.tracking import (
    RECORD_ARTIFACT,
    connect,
    experiment_id,
    mlflow_task,
    start_run,
)


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
    client.set_terminated(run_id, status="FINISHED")
    return outcome.replace(reused_from=outcome.mlflow_run_id, rerun_mlflow_run_id=run_id)


@mlflow_task("run-report")
def publish_run_report(
    outcome: DayOutcome, decision: Decision, drift: DriftOutcome, evaluation: Evaluation
) -> DayOutcome:
    """Log the run's HTML report (drift, calibration, NE by slice, the decision); the
    outcome with where it is (an MLflow UI link when its address is known, else the
    artifact URI)."""
    _, client = connect()
    run_id = outcome.mlflow_run_id
    base = _ui_base(client)
    links = {"MLflow run": _run_url(client, base, run_id)} if base else {}
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
    )
    client.log_text(run_id, html, "report.html")
    where = (
        f"{base}/get-artifact?path=report.html&run_uuid={run_id}"
        if base
        else f"runs:/{run_id}/report.html"
    )
    return outcome.replace(report=where)


@mlflow_task("summarize")
def publish_summary(outcome: DayOutcome) -> DayOutcome:
    """Write the Prefect artifacts (summary, table, links) and the record in MLflow; close
    the run."""
    _, client = connect()
    run_id, day = outcome.mlflow_run_id, outcome.date.isoformat()
    client.log_dict(run_id, outcome.to_record(), RECORD_ARTIFACT)
    links = mlflow_links(client, outcome)
    create_markdown_artifact(
        markdown=summary_markdown(outcome)
        + "".join(f"\n\n[{name}]({url})" for name, url in links.items()),
        key=f"lifecycle-{day}",
        description=f"quantrec decision for {day}",
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
    for name, url in links.items():
        create_link_artifact(link=url, link_text=name, key=f"{_slug(name)}-{day}")
    client.set_terminated(run_id, status="FINISHED")
    return outcome


def _ui_base(client) -> str | None:
    base = os.environ.get("QUANTREC_MLFLOW_UI_URL") or client.tracking_uri
    return base.rstrip("/") if base.startswith(("http://", "https://")) else None


def _run_url(client, base: str, run_id: str) -> str:
    run = client.get_run(run_id)
    return f"{base}/#/experiments/{run.info.experiment_id}/runs/{run_id}"


def mlflow_links(client, outcome: DayOutcome) -> dict[str, str]:
    """Name -> URL of the run, its report and the registered versions, when the MLflow UI's
    address is known: ``$QUANTREC_MLFLOW_UI_URL``, or an http(s) tracking URI."""
    base = _ui_base(client)
    if base is None:
        return {}
    links = {"MLflow run": _run_url(client, base, outcome.mlflow_run_id)}
    if (outcome.report or "").startswith("http"):
        links["run report"] = outcome.report
    for variant, version in outcome.registered_versions.items():
        links[f"model version {version} ({variant})"] = (
            f"{base}/#/models/{outcome.model_name}/versions/{version}"
        )
    return links


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")[:40]


def close_failed_run(run_id: str) -> None:
    """Mark the MLflow run failed; the champion alias was not touched. Best effort: when
    MLflow itself is what failed, the run stays RUNNING and the next run of the date
    closes it as KILLED."""
    try:
        _, client = connect()
        client.set_tag(run_id, Tag.DECISION, Outcome.FAILED)
        client.set_terminated(run_id, status="FAILED")
    except Exception as err:  # noqa: BLE001 - the original error is the one to raise
        logging.getLogger(__name__).warning("could not mark run %s failed: %s", run_id, err)
