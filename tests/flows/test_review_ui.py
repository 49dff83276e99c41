"""What a reviewer sees in the two UIs, on the backfilled state: Prefect flow runs named by
date, tagged and ended in a state named after the outcome, with the decision in their log
and the reports as artifacts; MLflow runs with the day's summary as description, only
whole-day drift metrics, model cards with a plan table; reviews that update the card, the
decision tag, the run's description and a Prefect artifact."""

import re

import mlflow
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterName,
    LogFilter,
    LogFilterFlowRunId,
)

from quantrec.flows.cli import main
from quantrec.models.markdown import GAP
from quantrec.models.names import Tag
from quantrec.tasks.tracking import (
    EXPERIMENT_KIND,
    NOTE_TAG,
    UI_URL_FILE,
    mlflow_ui_base,
)


def natural_key(name: str) -> tuple:
    """Digit runs read as numbers: ``bags.2`` before ``bags.10``."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


STATE_NAMES = {"promoted": "Promoted", "challenger": "Challenger", "rejected": "Rejected"}


def _backfill_runs(records):
    """Run name -> the backfill's flow run of that date (other tests rerun some dates on
    the same Prefect server later)."""
    names = [f"lifecycle-{r['date']}" for r in records]
    with get_client(sync_client=True) as prefect:
        runs = prefect.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=names))
        )
    first = {}
    for run in sorted(runs, key=lambda r: r.created, reverse=True):
        first[run.name] = run
    return first


def _artifacts(key: str):
    with get_client(sync_client=True) as prefect:
        return prefect.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )


def test_flow_runs_are_named_tagged_and_end_in_the_outcome(backfilled):
    _, _, records = backfilled
    runs = _backfill_runs(records)
    for record in records:
        run = runs[f"lifecycle-{record['date']}"]
        assert run.state.is_completed()
        assert run.state.name == STATE_NAMES[record["decision"]]
        assert run.state.message == " ".join(record["reason"].split())[:1000]
        assert f"decision:{record['decision']}" in run.tags
        assert f"drift:{record['drift_level']}" in run.tags
        with get_client(sync_client=True) as prefect:
            logs = prefect.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id]))
            )
        messages = "\n".join(log.message for log in logs)
        assert f"decision for {record['date']}: {record['decision']}" in messages
        assert f"drift level of {record['date']}: {record['drift_level']}" in messages


def test_the_lifecycle_report_is_published_in_both_uis(backfilled, client):
    _, config, records = backfilled
    runs = {run.id for run in _backfill_runs(records).values()}
    published = [a for a in _artifacts("lifecycle-report") if a.flow_run_id in runs]
    assert len(published) == len(records)  # one version per run, under one key
    latest = max(published, key=lambda a: a.created)
    for record in records:
        assert f"| {record['date']} | {record['decision']} |" in latest.data
    experiment = client.get_experiment_by_name(config.registry.experiment)
    (run,) = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`{Tag.FLOW}` = 'lifecycle-report'"
    )
    names = {a.path for a in client.list_artifacts(run.info.run_id, "lifecycle")}
    assert {"lifecycle/lifecycle.html", "lifecycle/lifecycle.png"} <= names
    assert run.data.tags[NOTE_TAG].startswith("# quantrec lifecycle, ")
    # Each run scores only its own day with the frozen model; the earlier days' NEs are the
    # ones the first runs measured, and all of them are there.
    assert run.data.tags["quantrec.frozen_version"] == records[0]["registered_versions"]["int8"]
    table = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/lifecycle/lifecycle.csv")
    rows = {row.split(",")[0]: row for row in table.strip().splitlines()[1:]}
    # Every backfilled day, in date order; other tests may add run dates to the shared home
    # (the bad days of tests/flows/test_bad_days.py), and the report covers those too.
    assert list(rows) == sorted(rows)
    for record in records:
        assert rows[record["date"]].split(",")[1] not in ("", "nan"), record["date"]
    plan = _artifacts(f"plan-{records[-1]['date']}")
    winner = records[-1]["promoted_variant"] or records[-1]["challenger_variant"]
    assert bool(plan) == bool(winner)


def test_mlflow_runs_read_as_the_day_with_only_whole_day_drift_metrics(backfilled, client):
    _, config, records = backfilled
    experiment = client.get_experiment_by_name(config.registry.experiment)
    assert experiment.tags[EXPERIMENT_KIND] == "custom_model_development"
    assert experiment.tags[NOTE_TAG].startswith("quantrec's daily lifecycle: one run per run date")
    for record in records:
        run = client.get_run(record["mlflow_run_id"])
        note = run.data.tags[NOTE_TAG]
        assert note.startswith(f"# quantrec lifecycle, run date {record['date']}")
        assert f"**Decision:** {record['decision']}" in note
        drift = [k for k in run.data.metrics if k.startswith(("drift.", "staleness."))]
        assert "drift.dataset_drift_share" in drift
        assert all(k.count(".") == 1 for k in drift), drift
        features = mlflow.artifacts.load_text(f"runs:/{record['mlflow_run_id']}/drift/features.csv")
        assert features.startswith("feature,kind,statistic,value,threshold")
        decision = mlflow.artifacts.load_text(f"runs:/{record['mlflow_run_id']}/decision.txt")
        lines = decision.splitlines()
        assert lines[0] == f"outcome: {record['decision']}"
        table = lines[lines.index("") + 1 :]
        assert table[0].split()[0] == "result"
        results = [row.split()[0] for row in table[1:]]
        assert results == sorted(results, key=lambda r: {"FAIL": 0, "not": 2}.get(r, 1))
        assert all(re.search(r"(<=|>=) \S", row) for row in table[1:])


def test_model_cards_hold_the_plan_as_a_table_in_table_order(backfilled, client):
    _, config, records = backfilled
    for version in records[-1]["registered_versions"].values():
        card = client.get_model_version(config.registry.model_name, version).description
        gap = GAP  # MLflow's tables have no cell padding
        assert f"\n\n| model{gap} | ne{gap} | auc{gap} | log_loss{gap} | calibration{gap} |" in card
        assert f"\n\n| unit{gap} | feature{gap} | precision{gap} | bytes{gap} |" in card
        units = re.findall(r"^\| `([^`]+)`", card, flags=re.MULTILINE)
        tables = [u for u in units if "embedding_bags" in u]
        assert len(tables) > 10 and tables == sorted(tables, key=natural_key)
        assert "### Gate checks of this variant (failures first)" in card


def test_links_point_at_the_mlflow_ui_once_its_address_is_known(backfilled, client, monkeypatch):
    home, _, records = backfilled
    monkeypatch.delenv("QUANTREC_MLFLOW_UI_URL", raising=False)
    assert mlflow_ui_base(client) is None
    (home / UI_URL_FILE).write_text("http://127.0.0.1:5000\n")
    try:
        assert mlflow_ui_base(client) == "http://127.0.0.1:5000"
        monkeypatch.setenv("QUANTREC_MLFLOW_UI_URL", "http://mlflow.example:8080/")
        assert mlflow_ui_base(client) == "http://mlflow.example:8080"
    finally:
        (home / UI_URL_FILE).unlink()


@pytest.fixture
def copied(home_copy):
    _, config, records, client = home_copy
    return config, records, client


def test_a_review_updates_the_card_the_decision_tag_and_the_day(copied):
    config, records, client = copied
    name = config.registry.model_name
    champion = client.get_registered_model(name).aliases["champion"]
    record = records[-1]
    version = next(v for v in record["registered_versions"].values() if v != str(champion))
    client.set_model_version_tag(name, version, "quantrec.review", "pending")
    client.set_registered_model_alias(name, "challenger", version)

    assert main(["review", "approve", version, "--reason", "read its slices"]) == 0
    found = client.get_model_version(name, version)
    assert found.tags[Tag.DECISION] == "approved"
    assert found.description.startswith(f"## {name}: `{found.tags[Tag.VARIANT]}`")
    assert "**Decision:** approved (the gate said:" in found.description
    assert "approved in review by" in found.description and "read its slices" in found.description
    note = client.get_run(record["mlflow_run_id"]).data.tags[NOTE_TAG]
    assert f"**After review:** version {version} approved" in note
    assert f"**Champion:** version {version} " in note
    artifact = max(_artifacts(f"review-{version}"), key=lambda a: a.created)
    assert f"approve: {name} version {version}" in artifact.data

    assert main(["rollback", "--reason", "NE alarm"]) == 0
    found = client.get_model_version(name, version)
    assert found.tags[Tag.DECISION] == "rolled back"
    assert "rolled back by" in found.description and "NE alarm" in found.description
