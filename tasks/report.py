"""Reporting stages: the run's machine-readable record and its Prefect summary artifact."""

from __future__ import annotations

import logging
import os
from datetime import date

import mlflow
from mlflow.exceptions import MlflowException
from prefect import task
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from quantrec.models.gate import Decision, reject_invalid_data
from quantrec.models.metrics import Metrics
from quantrec.tasks.evaluate import record_decision
from quantrec.tasks.report_render import calibration_bins, run_report_html
from quantrec.tasks.identity import code_version, config_hash
from quantrec.tasks.registry import RUN_KEY_TAG, champion_version
from quantrec.tasks.tracking import RUN_DATE_TAG, connect, experiment_id, start_run

METRIC_COLUMNS = ("ne", "auc", "log_loss", "calibration")


def day_record(
    *,
    run_date: date,
    run_id: str,
    decision: Decision,
    metrics: dict[str, Metrics],
    sizes: dict[str, int],
    registered: dict[str, str],
    champion_before: str | None,
    champion_after: str | None,
    train_samples_per_s: float | None,
    plan_source: str | None = None,
    plan_reason: str | None = None,
    quarantined: str | None = None,
    model_name: str | None = None,
    drift: dict | None = None,
    challenger_version: str | None = None,
    report: str | None = None,
) -> dict:
    """One JSON-able record per run date: what ``--json`` prints and the summary shows."""
    return {
        "date": run_date.isoformat(),
        "model_name": model_name,
        "mlflow_run_id": run_id,
        "decision": decision.outcome,
        "promoted_variant": decision.promoted,
        "reason": decision.reason,
        "metrics": {name: m.to_dict() for name, m in metrics.items()},
        "bytes": dict(sizes),
        "registered_versions": dict(registered),
        "champion_version_before": champion_before,
        "champion_version": champion_after,
        "train_samples_per_s": train_samples_per_s,
        "plan_source": plan_source,
        "plan_reason": plan_reason,
        "quarantined": quarantined,
        "checks": decision.to_dict()["checks"],
        "challenger_variant": getattr(decision, "challenger", None),
        "challenger_version": challenger_version,
        "drift_level": (drift or {}).get("level"),
        "drift": drift,
        "report": report,
    }


def summary_markdown(record: dict) -> str:
    lines = [
        f"# quantrec lifecycle, run date {record['date']}",
        "",
        f"**Decision:** {record['decision']}"
        + (f" ({record['promoted_variant']})" if record["promoted_variant"] else ""),
        "",
        f"> {record['reason']}",
        "",
        "| variant | " + " | ".join(METRIC_COLUMNS) + " | bytes | registered version |",
        "|---|" + "---|" * (len(METRIC_COLUMNS) + 2),
    ]
    for name, values in record["metrics"].items():
        cells = " | ".join(f"{values[c]:.5f}" for c in METRIC_COLUMNS)
        size = record["bytes"].get(name, "")
        version = record["registered_versions"].get(name, "(current champion)")
        lines.append(f"| {name} | {cells} | {size} | {version} |")
    lines += ["", "| variant | check | value | threshold | passed |", "|---|---|---|---|---|"]
    for variant, checks in record["checks"].items():
        for c in checks:
            value = "n/a" if c["value"] is None else f"{c['value']:.6g}"
            noise = c.get("within_noise")
            passed = f"{c['passed']}" + (" (within noise)" if noise else "")
            lines.append(f"| {variant} | {c['name']} | {value} | {c['threshold']} | {passed} |")
    if record.get("drift"):
        drift = record["drift"]
        lines += ["", f"**Drift:** {drift['level']}"] + [f"- {r}" for r in drift["reasons"][:10]]
    if record.get("challenger_version"):
        lines += ["", f"**Challenger for review:** version {record['challenger_version']} "
                      f"({record['challenger_variant']}); `quantrec review list`"]
    if record.get("report"):
        lines += ["", f"Run report: `{record['report']}`"]
    lines += [
        "",
        f"Precision plan: {record['plan_source']} ({record['plan_reason']})",
        "",
        f"Champion version: {record['champion_version_before']} -> {record['champion_version']}",
        "",
        f"MLflow run id: `{record['mlflow_run_id']}`",
    ]
    return "\n".join(lines)


def pareto_figure(result):
    """Size against NE delta of every plan a search scored; the two finalists labelled
    with their latency. ``result`` is a ``models.search.SearchResult``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    fp32 = result.fp32_bytes or 1
    axes.scatter([c.bytes / fp32 for c in result.evaluated],
                 [100 * c.ne_delta_rel for c in result.evaluated],
                 s=12, alpha=0.5, label="scored plans")
    finalists = {"ranked": result.ranked, "greedy": result.greedy}
    if result.chosen_by not in finalists:  # e.g. "confirmed": repaired on fresh rows
        finalists[result.chosen_by] = result.chosen
    for name, plan in finalists.items():
        chosen = name == result.chosen_by
        latency = f"{plan.latency_ms:.2f} ms / {plan.latency_batch} rows" if plan.latency_ms else ""
        axes.scatter([plan.bytes / fp32], [100 * (plan.ne_delta_rel or 0.0)], s=140,
                     marker="*" if chosen else "o",
                     label=f"{name}: {latency}" + (" (chosen)" if chosen else ""))
    axes.axhline(100 * result.budget.relative_limit(result.ne_fp32), color="red",
                 linestyle="--", linewidth=1, label="NE budget")
    axes.set_xlabel("bytes / fp32 bytes")
    axes.set_ylabel("NE change vs fp32 (%)")
    axes.set_title("Precision search: size against NE")
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure


def stopped_record(run_date: date, run_id: str, stop: str, validation: dict | None,
                   model_name: str) -> dict:
    """Record the decision of a run that stops before training; the champion stays."""
    _, client = connect()
    check = "data_valid" if validation is not None else "data_available"
    decision = reject_invalid_data(stop, check=check)
    record_decision(client, run_id, decision)
    champion = champion_version(client, model_name)
    return day_record(
        run_date=run_date, run_id=run_id, decision=decision, metrics={}, sizes={},
        registered={}, champion_before=champion, champion_after=champion,
        train_samples_per_s=None, quarantined=validation and validation["quarantined"],
        model_name=model_name,
    )


@task(name="summarize", cache_policy=NO_CACHE, retries=3,
      retry_delay_seconds=exponential_backoff(backoff_factor=2), retry_jitter_factor=0.5)
def publish_summary(record: dict) -> dict:
    """Write the Prefect artifacts (summary, table, links) and the record in MLflow; close
    the run."""
    _, client = connect()
    run_id = record["mlflow_run_id"]
    client.log_dict(run_id, record, "lifecycle_record.json")
    links = mlflow_links(client, record)
    create_markdown_artifact(
        markdown=summary_markdown(record) + "".join(
            f"\n\n[{name}]({url})" for name, url in links.items()),
        key=f"lifecycle-{record['date']}",
        description=f"quantrec decision for {record['date']}",
    )
    if record["metrics"]:
        create_table_artifact(
            table=[{"variant": name, **{m: round(v[m], 6) for m in METRIC_COLUMNS},
                    "bytes": record["bytes"].get(name),
                    "version": record["registered_versions"].get(name)}
                   for name, v in record["metrics"].items()],
            key=f"variants-{record['date']}",
            description=f"Variants x metrics on {record['date']}",
        )
    for name, url in links.items():
        create_link_artifact(link=url, link_text=name,
                             key=f"{_slug(name)}-{record['date']}")
    client.set_terminated(run_id, status="FINISHED")
    return record


@task(name="run-report", cache_policy=NO_CACHE, retries=3,
      retry_delay_seconds=exponential_backoff(backoff_factor=2), retry_jitter_factor=0.5)
def publish_run_report(run_date: date, run_id: str, decision: Decision, drift, evaluation) -> str:
    """Log the run's HTML report (drift, calibration, NE by slice, the decision); return
    where it is (an MLflow UI link when its address is known, else the artifact URI)."""
    _, client = connect()
    base = _ui_base(client)
    links = {"MLflow run": _run_url(client, base, run_id)} if base else {}
    html = run_report_html(
        run_date=run_date, decision=decision.to_dict(), drift=drift.table,
        drift_level=drift.level, drift_reasons=drift.reasons,
        metrics={n: m.to_dict() for n, m in evaluation.metrics.items()},
        calibration={n: calibration_bins(evaluation.labels, p)
                     for n, p in evaluation.predictions.items()},
        slices=evaluation.slice_table(), staleness=drift.staleness, links=links,
    )
    client.log_text(run_id, html, "report.html")
    if base:
        return f"{base}/get-artifact?path=report.html&run_uuid={run_id}"
    return f"runs:/{run_id}/report.html"


def _ui_base(client) -> str | None:
    base = os.environ.get("QUANTREC_MLFLOW_UI_URL") or client.tracking_uri
    return base.rstrip("/") if base.startswith(("http://", "https://")) else None


def _run_url(client, base: str, run_id: str) -> str:
    run = client.get_run(run_id)
    return f"{base}/#/experiments/{run.info.experiment_id}/runs/{run_id}"


def mlflow_links(client, record: dict) -> dict[str, str]:
    """Name -> URL of the run, its report and the registered versions, when the MLflow UI's
    address is known: ``$QUANTREC_MLFLOW_UI_URL``, or an http(s) tracking URI."""
    base = _ui_base(client)
    if base is None:
        return {}
    links = {"MLflow run": _run_url(client, base, record["mlflow_run_id"])}
    if record.get("report", "").startswith("http"):
        links["run report"] = record["report"]
    model = record.get("model_name")
    for variant, version in record["registered_versions"].items():
        if model:
            links[f"model version {version} ({variant})"] = (
                f"{base}/#/models/{model}/versions/{version}")
    return links


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")[:40]


@task(name="open-run", cache_policy=NO_CACHE, retries=3,
      retry_delay_seconds=exponential_backoff(backoff_factor=2), retry_jitter_factor=0.5)
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
        filter_string=f"tags.`{RUN_DATE_TAG}` = '{run_date.isoformat()}' "
                      "and attributes.status = 'RUNNING'",
    ):
        client.set_tag(stale.info.run_id, "quantrec.decision", "crashed")
        client.set_terminated(stale.info.run_id, status="KILLED")
    run_id = start_run(
        client, exp_id, run_date,
        tags={"quantrec.flow": "daily_lifecycle", "quantrec.config_hash": config_hash(config_json),
              "quantrec.code_version": code_version()},
    )
    client.log_text(run_id, config_json, "config.json")
    return run_id


@task(name="find-finished-run", cache_policy=NO_CACHE, retries=3,
      retry_delay_seconds=exponential_backoff(backoff_factor=2), retry_jitter_factor=0.5)
def finished_record(experiment: str, run_key: str, run_id: str) -> dict | None:
    """The record of a finished run with this identity, or None. ``run_id`` (this run) is
    tagged with the identity either way."""
    _, client = connect()
    client.set_tag(run_id, RUN_KEY_TAG, run_key)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{RUN_KEY_TAG}` = '{run_key}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
    )
    for run in runs:
        if run.info.run_id != run_id and "quantrec.reused_from" not in run.data.tags:
            try:
                return mlflow.artifacts.load_dict(
                    f"runs:/{run.info.run_id}/lifecycle_record.json")
            except (MlflowException, OSError):
                continue
    return None


@task(name="reuse-finished-run", cache_policy=NO_CACHE, retries=3,
      retry_delay_seconds=exponential_backoff(backoff_factor=2), retry_jitter_factor=0.5)
def publish_reused(record: dict, run_id: str) -> dict:
    """Close this run as a no-op rerun of ``record``'s run; return that record."""
    _, client = connect()
    client.set_tag(run_id, "quantrec.reused_from", record["mlflow_run_id"])
    client.set_tag(run_id, "quantrec.decision", "reused")
    note = (f"# quantrec lifecycle, run date {record['date']}: nothing to do\n\n"
            f"Run `{record['mlflow_run_id']}` already ran this date on the same data, "
            "configuration and code (decision: "
            f"{record['decision']}). Rerun with `--force` to train and register again.")
    create_markdown_artifact(markdown=note, key=f"lifecycle-{record['date']}",
                             description=f"quantrec rerun of {record['date']}: reused")
    client.set_terminated(run_id, status="FINISHED")
    return {**record, "reused_from": record["mlflow_run_id"], "rerun_mlflow_run_id": run_id}


def close_failed_run(run_id: str) -> None:
    """Mark the MLflow run failed; the champion alias was not touched. Best effort: when
    MLflow itself is what failed, the run stays RUNNING and the next run of the date
    closes it as KILLED."""
    try:
        _, client = connect()
        client.set_tag(run_id, "quantrec.decision", "failed")
        client.set_terminated(run_id, status="FAILED")
    except Exception as err:  # noqa: BLE001 - the original error is the one to raise
        logging.getLogger(__name__).warning("could not mark run %s failed: %s", run_id, err)
