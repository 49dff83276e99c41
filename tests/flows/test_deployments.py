from prefect.client.orchestration import get_client

from flows.deployments import lifecycle_deployments


def test_daily_lifecycle_deployment_has_its_cron_schedule():
    daily, backfill = lifecycle_deployments(cron="30 5 * * *", timezone="Europe/Paris")
    deployment_id = daily.apply()
    backfill.apply()
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment(deployment_id)
    assert deployment.name == "daily-lifecycle"
    [schedule] = deployment.schedules
    assert schedule.schedule.cron == "30 5 * * *"
    assert schedule.schedule.timezone == "Europe/Paris"
