"""Data stages: bring days into the lake, validate the run date, measure drift.

Thin wrappers: the feed, the lake, the checks and the statistics are the pure core in
``feeds/`` and ``data_checks/``; these tasks read and write files and log to MLflow.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import date, timedelta

import mlflow.data
import pandas as pd
from mlflow.entities import DatasetInput, InputTag
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from data_checks.contract import validate_day
from data_checks.drift import measure_drift
from data_checks.schema import FeatureSchema
from feeds.lake import DayLake
from feeds.synthetic import SyntheticFeed
from tasks.config import FeedConfig
from tasks.settings import quantrec_home
from tasks.tracking import connect, log_metrics, stage_timer


@dataclass(frozen=True)
class Partitions:
    """The days a run reads: the training window and the run date, with content digests."""

    run_date: date
    window: tuple[date, ...]
    digests: dict[date, str]
    schema: FeatureSchema

    def window_digest(self) -> str:
        import hashlib

        joined = "|".join(self.digests[d] for d in self.window)
        return hashlib.sha256(joined.encode()).hexdigest()[:16]


def training_window(run_date: date, window_days: int) -> tuple[date, ...]:
    """The ``window_days`` days before ``run_date``, oldest first."""
    return tuple(run_date - timedelta(days=k) for k in range(window_days, 0, -1))


def make_feed(feed: FeedConfig) -> SyntheticFeed:
    return SyntheticFeed(
        seed=feed.seed,
        rows_per_day=feed.rows_per_day,
        scenario=feed.scenario,
        shift_date=feed.shift_date,
    )


def lake() -> DayLake:
    return DayLake(quantrec_home().lake)


@task(name="ingest", cache_policy=NO_CACHE)
def ingest_days(run_date: date, window_days: int, feed: FeedConfig, run_id: str) -> Partitions:
    """Write the window and the run date into the lake (days already there are kept)."""
    home, client = connect()
    day_lake, source = lake(), make_feed(feed)
    window = training_window(run_date, window_days)
    with stage_timer(client, run_id, "ingest"):
        written = [d for d in (*window, run_date) if not day_lake.exists(d)]
        for day in written:
            day_lake.write(day, source.day(day))
        digests = {d: day_lake.digest(d) for d in (*window, run_date)}
    get_run_logger().info("lake at %s: wrote %d new day(s)", home.lake, len(written))
    return Partitions(run_date=run_date, window=window, digests=digests, schema=source.schema())


@task(name="validate", cache_policy=NO_CACHE)
def validate_run_date(partitions: Partitions, run_id: str) -> dict:
    """Validate the run date's partition against the data contract; log the report."""
    _, client = connect()
    day_lake = lake()
    with stage_timer(client, run_id, "validate"):
        frame = day_lake.read(partitions.run_date)
        report = validate_day(
            frame,
            partitions.schema,
            source=str(day_lake.path(partitions.run_date)),
            day=partitions.run_date,
        )
    client.log_dict(run_id, report.to_dict(), "validation/report.json")
    log_metrics(client, run_id, {"validation.passed": float(report.passed)})
    if not report.passed:
        get_run_logger().error(report.summary())
    return {"passed": report.passed, "summary": report.summary(), "report": report.to_dict()}


@task(name="measure-drift", cache_policy=NO_CACHE)
def measure_run_date_drift(partitions: Partitions, run_id: str) -> dict[str, float]:
    """Drift of the run date against the training window; every score is logged."""
    _, client = connect()
    day_lake = lake()
    with stage_timer(client, run_id, "drift"):
        report = measure_drift(
            day_lake.read_days(list(partitions.window)),
            day_lake.read(partitions.run_date),
            partitions.schema,
        )
        metrics = report.to_metrics()
    log_metrics(client, run_id, metrics)
    client.log_text(run_id, report.table.to_csv(index=False), "drift/features.csv")
    return metrics


def log_dataset(client, run_id: str, frame: pd.DataFrame, *, name: str, source: str,
                digest: str, context: str, label: str) -> None:
    """Record a frame as an MLflow dataset input of the run (training or evaluation)."""
    with warnings.catch_warnings():
        # MLflow hints that integer id columns cannot hold missing values (the contract
        # forbids them) and that a local path could be two kinds of source: noise per run.
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(
            frame, source=source, targets=label, name=name, digest=digest
        )._to_mlflow_entity()
    context_tag = InputTag(key="mlflow.data.context", value=context)
    client.log_inputs(run_id, datasets=[DatasetInput(dataset, tags=[context_tag])])
