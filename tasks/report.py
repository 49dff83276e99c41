"""Reporting stages: the run's machine-readable record and its Prefect summary artifact."""

from __future__ import annotations

from datetime import date

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from models.gate import Decision, reject_invalid_data
from models.metrics import Metrics
from tasks.evaluate import record_decision
from tasks.registry import champion_version
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
    plan_source: str | None = None,
    plan_reason: str | None = None,
    quarantined: str | None = None,
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
        "plan_source": plan_source,
        "plan_reason": plan_reason,
        "quarantined": quarantined,
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
    )


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
