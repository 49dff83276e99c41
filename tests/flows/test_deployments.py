"""The deployments are created with their schedule and default parameters, and a run
created from a deployment with parameters (what the UI's Run button does) carries them."""

from datetime import date

from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment

from quantrec.flows.deployments import lifecycle_deployments
from quantrec.tasks.config import QuantrecConfig


def test_daily_lifecycle_deployment_has_its_cron_schedule():
    daily, fill, search = lifecycle_deployments(cron="30 5 * * *", timezone="Europe/Paris")
    deployment_id = daily.apply()
    fill.apply()
    search.apply()
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment(deployment_id)
        names = {d.name for d in client.read_deployments()}
    assert deployment.name == "daily-lifecycle"
    [schedule] = deployment.schedules
    assert schedule.schedule.cron == "30 5 * * *"
    assert schedule.schedule.timezone == "Europe/Paris"
    assert {"daily-lifecycle", "backfill", "quantization-search"} <= names


def test_a_run_with_parameters_is_created_from_the_deployment():
    config = QuantrecConfig().with_overrides(feed={"rows_per_day": 1234})
    daily, *_ = lifecycle_deployments(config=config)
    daily.apply()
    # timeout=0: create the run and return; no worker is serving in this test.
    flow_run = run_deployment(
        "daily-lifecycle/daily-lifecycle",
        parameters={"run_date": "2026-03-05", "force": True},
        timeout=0,
    )
    assert flow_run.parameters["run_date"] == "2026-03-05"
    assert flow_run.parameters["force"] is True
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment(flow_run.deployment_id)
    assert deployment.parameters["config"]["feed"]["rows_per_day"] == 1234
    assert date.fromisoformat(flow_run.parameters["run_date"]) == date(2026, 3, 5)
