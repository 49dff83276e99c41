"""The Prefect deployments of quantrec: what ``deploy/serve.py`` serves and prefect.yaml mirrors."""

from __future__ import annotations

from prefect.deployments.runner import RunnerDeployment

from flows.backfill import backfill
from flows.daily_lifecycle import daily_lifecycle

DAILY_CRON = "0 6 * * *"
DAILY_TIMEZONE = "UTC"


def lifecycle_deployments(*, cron: str = DAILY_CRON, timezone: str = DAILY_TIMEZONE) -> list[RunnerDeployment]:
    """``daily-lifecycle`` on a daily cron (the last complete day) and ``backfill`` on demand."""
    from prefect.client.schemas.schedules import CronSchedule

    return [
        daily_lifecycle.to_deployment(
            name="daily-lifecycle",
            schedule=CronSchedule(cron=cron, timezone=timezone),
            description="Every day: validate, drift, retrain fp32, quantize, gate, register.",
            tags=["quantrec"],
        ),
        backfill.to_deployment(
            name="backfill",
            description="The daily lifecycle over a range of days, in order.",
            tags=["quantrec"],
        ),
    ]
