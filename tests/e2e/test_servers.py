"""End to end on real servers: a Prefect server, an MLflow server, and ``quantrec schedule``
serving the deployments; a run triggered the way an operator would (``prefect deployment
run``) completes, and its versions, aliases and Prefect artifacts are where they belong.

    python -m pytest -q -m e2e tests/e2e/test_servers.py
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.settings import PREFECT_API_URL, temporary_settings

from .conftest import BIN, Quantrec, alias, versions_of, wait_until

RUN_DATE = "2026-03-02"
DEPLOYMENT = "daily-lifecycle/daily-lifecycle"


def _deployment(name: str):
    with get_client(sync_client=True) as client:
        try:
            return client.read_deployment_by_name(name)
        except Exception:  # noqa: BLE001 - not created yet (ObjectNotFound)
            return None


def _flow_run(flow_run_id: UUID):
    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id)


def _artifacts(key: str) -> list:
    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )


@pytest.mark.e2e
def test_a_deployment_run_on_real_servers_registers_and_promotes(
    tmp_path, prefect_api, mlflow_servers
):
    mlflow = mlflow_servers(tmp_path / "mlflow")
    quantrec = Quantrec(tmp_path / "home", prefect_api=prefect_api, tracking_uri=mlflow.url)
    serving = quantrec.start("schedule")
    try:
        with temporary_settings(updates={PREFECT_API_URL: prefect_api}):
            _run_through_the_deployment(quantrec, serving)
    finally:
        quantrec.close()


def _run_through_the_deployment(quantrec: Quantrec, serving: subprocess.Popen) -> None:
    # `serve` registers the three deployments one after the other.
    others = ("backfill/backfill", "quantization-search/quantization-search")
    wait_until(
        lambda: all(_deployment(name) for name in (DEPLOYMENT, *others)),
        timeout_s=240,
        what="the three deployments",
        every_s=2,
        alive=serving,
    )
    deployment = _deployment(DEPLOYMENT)
    [schedule] = deployment.schedules
    assert schedule.schedule.cron == "0 6 * * *"
    assert schedule.schedule.timezone == "UTC"
    # The config file passed to `quantrec schedule` is every run's default.
    assert deployment.parameters["config"]["feed"]["rows_per_day"] == 3000

    triggered = subprocess.run(
        [str(BIN / "prefect"), "deployment", "run", DEPLOYMENT, "--param", f"run_date={RUN_DATE}"],
        env=quantrec.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    flow_run_id = UUID(re.search(r"UUID: ([0-9a-f-]{36})", triggered.stdout).group(1))

    started = time.monotonic()
    flow_run = wait_until(
        lambda: (run := _flow_run(flow_run_id)).state.is_final() and run,
        timeout_s=600,
        what=f"flow run {flow_run_id} to finish",
        every_s=3,
        alive=serving,
    )
    print(f"flow run {flow_run.state.name} after {time.monotonic() - started:.0f} s")
    assert flow_run.state.is_completed(), (flow_run.state, quantrec.output(serving)[1][-3000:])
    assert flow_run.parameters["run_date"] == RUN_DATE

    client = quantrec.client()
    versions = versions_of(client, RUN_DATE)
    assert {v.tags["quantrec.variant"] for v in versions} == {"fp32", "fp16", "int8", "searched"}
    assert len(versions) == 4
    [run] = [
        r
        for r in client.search_runs(
            [client.get_experiment_by_name("quantrec").experiment_id],
            filter_string=f"tags.`quantrec.run_date` = '{RUN_DATE}'",
        )
    ]
    assert run.info.status == "FINISHED"
    # The first day has no champion: the alias goes to the variant the gate promoted, if any.
    promoted = run.data.tags["quantrec.promoted_variant"]
    champion = alias(client)
    if promoted == "none":
        assert champion is None
    else:
        [winner] = [v for v in versions if v.tags["quantrec.variant"] == promoted]
        assert champion == winner.version
        assert winner.tags["quantrec.decision"] == "promoted"

    [summary] = _artifacts(f"lifecycle-{RUN_DATE}")
    assert summary.type == "markdown" and summary.flow_run_id == flow_run_id
    assert f"run date {RUN_DATE}" in summary.data and run.info.run_id in summary.data
    [table] = _artifacts(f"variants-{RUN_DATE}")
    assert table.type == "table" and table.flow_run_id == flow_run_id
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert {row["variant"] for row in rows} == {"fp32", "fp16", "int8", "searched"}
    assert {str(row["version"]) for row in rows} == {v.version for v in versions}
