"""Data stages: bring days into the lake and validate the run date.

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

from quantrec.data_checks.partition import report_from_error, validate_partition
from quantrec.data_checks.reference import build_reference_suite, profile_reference
from quantrec.data_checks.render import report_html
from quantrec.data_checks.schema import FeatureSchema
from quantrec.feeds.base import FEED_OPTIONS, FeedError, SmallDayError
from quantrec.feeds.base import make_feed as base_make_feed
from quantrec.feeds.lake import DayLake, LakeError
from quantrec.tasks.config import FeedConfig
from quantrec.tasks.settings import quantrec_home
from quantrec.tasks.tracking import connect, log_metrics, stage_timer


@dataclass(frozen=True)
class Partitions:
    """The days a run reads: the training window and the run date, with content digests.

    ``window`` holds only the days that are in the lake: days a feed skipped (too few rows)
    or that sit in quarantine are left out. ``problem`` says why the run date itself is
    not usable (quarantined, too small, not in the feed), or is None.
    """

    run_date: date
    window: tuple[date, ...]
    digests: dict[date, str]
    schema: FeatureSchema
    skipped: dict[date, str]
    problem: str | None = None

    def window_digest(self) -> str:
        import hashlib

        joined = "|".join(self.digests[d] for d in self.window)
        return hashlib.sha256(joined.encode()).hexdigest()[:16]


def training_window(run_date: date, window_days: int) -> tuple[date, ...]:
    """The ``window_days`` days before ``run_date``, oldest first."""
    return tuple(run_date - timedelta(days=k) for k in range(window_days, 0, -1))


def make_feed(feed: FeedConfig, run_date: date):
    """The configured feed; options another feed would take are not passed."""
    options = feed.model_dump(exclude={"name"})
    if feed.name == "criteo" and options.get("start_date") is None:
        options.pop("start_date")
        options["date"] = run_date  # one Criteo file is one day: the run date
    accepted = set(FEED_OPTIONS[feed.name])
    return base_make_feed(feed.name, **{k: v for k, v in options.items() if k in accepted})


def lake() -> DayLake:
    return DayLake(quantrec_home().lake)


def _admit(day_lake: DayLake, source, day: date) -> str | None:
    """Bring ``day`` into the lake if it is not there; why it is unusable, or None."""
    if day_lake.exists(day):
        return None
    if day_lake.is_quarantined(day):
        return (f"day {day} is quarantined ({day_lake.quarantine_path(day).parent}); "
                f"after fixing the source, re-admit it with `quantrec readmit --date {day}`")
    try:
        day_lake.write(day, source.day(day))
    except SmallDayError as err:
        return f"skipped: {err}"
    except FeedError as err:
        return f"not available from the feed: {err}"
    return None


@task(name="ingest", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5],
      retry_condition_fn=lambda task, run, state: _is_io_error(state))
def ingest_days(run_date: date, window_days: int, feed: FeedConfig, run_id: str) -> Partitions:
    """Write the window and the run date into the lake (days already there are kept)."""
    home, client = connect()
    day_lake, source = lake(), make_feed(feed, run_date)
    window = training_window(run_date, window_days)
    with stage_timer(client, run_id, "ingest"):
        problems = {day: _admit(day_lake, source, day) for day in (*window, run_date)}
        skipped = {day: why for day, why in problems.items() if why is not None}
        usable = [d for d in (*window, run_date) if d not in skipped]
        digests = {d: day_lake.digest(d) for d in usable}
    for day, why in skipped.items():
        get_run_logger().warning("day %s: %s", day, why)
    client.log_dict(run_id, {d.isoformat(): w for d, w in skipped.items()}, "ingest/skipped.json")
    get_run_logger().info("lake at %s: %d usable day(s)", home.lake, len(usable))
    return Partitions(
        run_date=run_date,
        window=tuple(d for d in window if d not in skipped),
        digests=digests,
        schema=source.schema(),
        skipped=skipped,
        problem=skipped.get(run_date),
    )


def why_stop(partitions: Partitions, validation: dict | None, window_days: int) -> str | None:
    """Why the run must stop before training, or None to go on."""
    if partitions.problem:
        return partitions.problem
    if validation is not None and not validation["passed"]:
        return validation["summary"]
    if not partitions.window:
        return f"no usable day in the {window_days}-day training window"
    return None


def _is_io_error(state) -> bool:
    try:
        state.result()
    except OSError:
        return True
    except Exception:
        return False
    return False


@task(name="validate", cache_policy=NO_CACHE)
def validate_run_date(partitions: Partitions, run_id: str) -> dict:
    """Validate the run date against the contract and the training window's profile.

    A failing day is moved to quarantine with its report; raw data is never deleted.
    """
    _, client = connect()
    day_lake, day, schema = lake(), partitions.run_date, partitions.schema
    source = str(day_lake.path(day))
    with stage_timer(client, run_id, "validate"):
        profile = suite = None
        if partitions.window:
            profile = profile_reference([day_lake.read(d) for d in partitions.window], schema)
            suite = build_reference_suite(profile, schema)
            client.log_text(run_id, profile.to_json(), "validation/reference_profile.json")
        try:
            frame = day_lake.read(day)
        except LakeError as err:
            report = report_from_error(err, source=source, day=day)
        else:
            report = validate_partition(
                frame, schema, source=source, day=day, profile=profile, suite=suite
            )
    client.log_dict(run_id, report.to_dict(), "validation/report.json")
    client.log_text(run_id, report_html(report), "validation/report.html")
    log_metrics(client, run_id, {"validation.passed": float(report.passed)})
    quarantined = None
    if not report.passed:
        get_run_logger().error(report.summary())
        if day_lake.exists(day):
            quarantined = str(day_lake.quarantine(day, report.to_dict()))
            client.set_tag(run_id, "quantrec.quarantined", quarantined)
    return {"passed": report.passed, "summary": report.summary(), "report": report.to_dict(),
            "quarantined": quarantined}


def log_dataset(client, run_id: str, frame: pd.DataFrame, *, name: str, source: str,
                digest: str, context: str, label: str) -> None:
    """Record a frame as an MLflow dataset input of the run (training or evaluation)."""
    entity = dataset_entity(frame, name=name, source=source, digest=digest, label=label)
    log_dataset_entity(client, run_id, entity, context=context)


def dataset_entity(frame: pd.DataFrame, *, name: str, source: str, digest: str, label: str):
    """The MLflow description of a frame (name, digest, source, schema, profile)."""
    with warnings.catch_warnings():
        # MLflow hints that integer id columns cannot hold missing values (the contract
        # forbids them) and that a local path could be two kinds of source: noise per run.
        warnings.simplefilter("ignore", UserWarning)
        return mlflow.data.from_pandas(
            frame, source=source, targets=label, name=name, digest=digest
        )._to_mlflow_entity()


def log_dataset_entity(client, run_id: str, entity, *, context: str) -> None:
    context_tag = InputTag(key="mlflow.data.context", value=context)
    client.log_inputs(run_id, datasets=[DatasetInput(entity, tags=[context_tag])])
