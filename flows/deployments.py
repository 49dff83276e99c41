"""The Prefect deployments of quantrec: what ``quantrec schedule`` serves and
``deploy/prefect.yaml`` mirrors for a work pool."""

from __future__ import annotations

from prefect.deployments.runner import RunnerDeployment

from quantrec.flows.backfill import backfill
from quantrec.flows.daily_lifecycle import daily_lifecycle
from quantrec.flows.search import quantization_search
from quantrec.tasks.config import QuantrecConfig

DAILY_CRON = "0 6 * * *"
DAILY_TIMEZONE = "UTC"


def lifecycle_deployments(
    *, cron: str = DAILY_CRON, timezone: str = DAILY_TIMEZONE, config: QuantrecConfig | None = None
) -> list[RunnerDeployment]:
    """``daily-lifecycle`` on a daily cron (it processes the last complete day), and
    ``backfill`` and ``quantization-search`` on demand (the UI's Run button, or
    ``prefect deployment run <flow>/<deployment> --param ...``).

    ``config`` becomes every deployment's default ``config`` parameter (None: the built-in
    defaults); a run from the UI may override any parameter.
    """
    from prefect.client.schemas.schedules import CronSchedule

    defaults = {"config": config.model_dump(mode="json")} if config is not None else {}
    return [
        daily_lifecycle.to_deployment(
            name="daily-lifecycle",
            schedule=CronSchedule(cron=cron, timezone=timezone),
            parameters=defaults,
            description="Every day: validate, drift, retrain fp32, quantize, gate, register.",
            tags=["quantrec"],
        ),
        backfill.to_deployment(
            name="backfill",
            parameters=defaults,
            description="The daily lifecycle over a range of days, in order.",
            tags=["quantrec"],
        ),
        quantization_search.to_deployment(
            name="quantization-search",
            parameters=defaults,
            description="One run date with a fresh precision search instead of the reused plan.",
            tags=["quantrec"],
        ),
    ]
