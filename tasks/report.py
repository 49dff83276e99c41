"""Reporting stages: the run's machine-readable record and its Prefect summary artifact."""

from __future__ import annotations

from datetime import date

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from models.gate import Decision
from models.metrics import Metrics
from tasks.tracking import connect, experiment_id, start_run

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
) -> dict:
    """One JSON-able record per run date: what ``--json`` prints and the summary shows."""
    return {
        "date": run_date.isoformat(),
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
        "checks": decision.to_dict()["checks"],
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
            lines.append(f"| {variant} | {c['name']} | {value} | {c['threshold']} | {c['passed']} |")
    lines += [
        "",
        f"Champion version: {record['champion_version_before']} -> {record['champion_version']}",
        "",
        f"MLflow run id: `{record['mlflow_run_id']}`",
    ]
    return "\n".join(lines)


@task(name="summarize", cache_policy=NO_CACHE)
def publish_summary(record: dict) -> dict:
    """Write the markdown artifact in Prefect and the record in MLflow; close the run."""
    _, client = connect()
    run_id = record["mlflow_run_id"]
    client.log_dict(run_id, record, "lifecycle_record.json")
    create_markdown_artifact(
        markdown=summary_markdown(record),
        key=f"lifecycle-{record['date']}",
        description=f"quantrec decision for {record['date']}",
    )
    client.set_terminated(run_id, status="FINISHED")
    return record


@task(name="open-run", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def open_lifecycle_run(run_date: date, experiment: str, config_json: str) -> str:
    """Open the run date's MLflow run (tagged with the run date) and log the config."""
    home, client = connect()
    run_id = start_run(
        client, experiment_id(client, home, experiment), run_date,
        tags={"quantrec.flow": "daily_lifecycle"},
    )
    client.log_text(run_id, config_json, "config.json")
    return run_id


def close_failed_run(run_id: str) -> None:
    """Mark the MLflow run failed; the champion alias was not touched."""
    _, client = connect()
    client.set_tag(run_id, "quantrec.decision", "failed")
    client.set_terminated(run_id, status="FAILED")
