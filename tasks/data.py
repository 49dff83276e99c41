"""Data stages: bring days into the lake and validate the run date.

Thin: the feed, the lake, the checks and the statistics are the pure core (``feeds/``,
``data_checks/``, ``models.lifecycle``); these tasks call it and log to MLflow.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from quantrec.data_checks.partition import (
    contract_digest,
    validate_lake_day,
    validate_partition,
    validate_window_days,
)
from quantrec.data_checks.reference import Tolerances
from quantrec.data_checks.render import report_html
from quantrec.feeds.base import check_run_date
from quantrec.feeds.lake import LakeError
from quantrec.models.lifecycle import Partitions, Validation, admit_days
from quantrec.models.names import Tag
from quantrec.tasks.config import QuantrecConfig
from quantrec.tasks.settings import quantrec_home
from quantrec.tasks.tracking import connect, log_metrics, stage_timer


def _is_io_error(task, task_run, state) -> bool:
    try:
        state.result()
    except OSError:
        return True
    except Exception:  # noqa: BLE001 - anything but I/O is not worth a retry here
        return False
    return False


@task(
    name="ingest",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[1, 5],
    retry_condition_fn=_is_io_error,
)
def ingest_days(run_date: date, window_days: int, feed, run_id: str) -> Partitions:
    """Write the window and the run date into the lake (days already there are kept).
    ``feed`` is the config's ``[feed]`` section; a run date in the future, or a lake that
    holds another feed's days, is refused before anything is written."""
    home, client = connect()
    check_run_date(run_date)
    source, day_lake = feed.build(run_date), home.day_lake()
    day_lake.bind(feed.kind, source.schema().partition_columns)
    with stage_timer(client, run_id, "ingest"):
        partitions = admit_days(day_lake, source, run_date, window_days)
    for day, why in partitions.skipped.items():
        get_run_logger().warning("day %s: %s", day, why)
    client.log_dict(
        run_id, {d.isoformat(): w for d, w in partitions.skipped.items()}, "ingest/skipped.json"
    )
    get_run_logger().info("lake at %s: %d usable day(s)", home.lake, len(partitions.digests))
    return partitions


@task(name="validate", cache_policy=NO_CACHE)
def validate_run_date(partitions: Partitions, config: QuantrecConfig, run_id: str) -> Validation:
    """Validate every day of the training window against the contract (days that passed
    before and are unchanged are not read again), then the run date against the contract
    and the window's profile.

    The first failing day is moved to quarantine with its report and named in the summary;
    raw data is never deleted.
    """
    home, client = connect()
    day_lake, day = home.day_lake(), partitions.run_date
    with stage_timer(client, run_id, "validate"):
        failure = validate_window_days(day_lake, partitions.window, partitions.schema)
        if failure is None:
            report, profile = validate_lake_day(
                day_lake,
                day,
                partitions.window,
                partitions.schema,
                tolerances=Tolerances(**config.validation.model_dump()),
            )
            failed_day = None if report.passed else day
        else:
            (failed_day, report), profile = failure, None
    if profile is not None:
        client.log_text(run_id, profile.to_json(), "validation/reference_profile.json")
    client.log_dict(run_id, report.to_dict(), "validation/report.json")
    client.log_text(run_id, report_html(report), "validation/report.html")
    log_metrics(client, run_id, {"validation.passed": float(report.passed)})
    summary = report.summary()
    if failed_day is not None and failed_day != day:
        summary = (
            f"training window day {failed_day} failed validation, so run date {day} was not "
            f"run: {summary}"
        )
    quarantined = None
    if report.passed:
        day_lake.mark_validated(day, contract_digest(partitions.schema))
    else:
        get_run_logger().error(summary)
        if day_lake.exists(failed_day):
            quarantined = str(day_lake.quarantine(failed_day, report.to_dict()))
            client.set_tag(run_id, Tag.QUARANTINED, quarantined)
    return Validation(
        passed=report.passed,
        summary=summary,
        report=report.to_dict(),
        quarantined=quarantined,
        failed_day=failed_day,
    )


def readmit_day(day: date, feed) -> tuple[Path | None, str]:
    """Re-read quarantined ``day`` from its source (``feed``, the config's ``[feed]``) and,
    when the fresh read passes the contract, write it as the day's partition (the
    quarantined copy is kept under ``_quarantine/replaced/``). (the new partition or None
    when refused, what happened in one sentence). The run identity changes with the data:
    its digest is part of it."""
    day_lake = quantrec_home().day_lake()
    if not day_lake.is_quarantined(day):
        raise LakeError(
            f"cannot readmit day {day}: {day_lake.quarantine_path(day).parent} holds no "
            "quarantined partition"
        )
    source = feed.build(day)
    day_lake.bind(feed.kind, source.schema().partition_columns)
    frame = source.day(day)
    schema = source.schema()
    report = validate_partition(frame, schema, source=f"{feed.kind} source", day=day)
    if not report.passed:
        return None, (f"day {day} stays quarantined: the source still fails. {report.summary()}")
    path = day_lake.replace_quarantined(day, frame)
    day_lake.mark_validated(day, contract_digest(schema))
    return path, f"re-admitted {day} from its source ({len(frame)} rows): {path}"
