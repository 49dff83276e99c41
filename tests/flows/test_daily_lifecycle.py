"""Three tiny synthetic days through the real flows, a real MLflow SQLite store and registry."""

import io
import json
from datetime import date

import mlflow
import pandas as pd
import pytest

from quantrec.flows.cli import main
from quantrec.models.batch import batch_from_frame
from quantrec.models.scorer import score
from quantrec.tasks.settings import quantrec_home
from quantrec.tasks.tracking import load_version


def test_one_record_per_day_in_order(backfilled):
    _, _, records = backfilled
    assert [r["date"] for r in records] == ["2026-03-01", "2026-03-02", "2026-03-03"]
    for record in records:
        assert set(record["registered_versions"]) == {"fp32", "fp16", "int8", "searched"}
        assert record["metrics"]["fp32"]["ne"] > 0
        assert record["bytes"]["int8"] < record["bytes"]["fp32"] / 2


def test_champion_alias_points_at_a_version_whose_gate_passed(backfilled, client):
    _, config, records = backfilled
    name = config.registry.model_name
    champion = client.get_model_version_by_alias(name, "champion")
    assert champion.tags["quantrec.decision"] == "promoted"
    assert str(champion.version) == records[-1]["champion_version"]
    promoted = [r for r in records if r["decision"] == "promoted"]
    assert promoted, "a generous gate must promote at least one day"
    versions = client.search_model_versions(f"name='{name}'")
    assert len(versions) == 4 * len(records)
    for version in versions:
        assert version.tags["quantrec.decision"] in {"promoted", "passed", "rejected"}
    # "previous" is the champion the last switch replaced (none when no switch replaced one).
    switches = [
        r
        for r in records
        if r["champion_version_before"] and r["champion_version"] != r["champion_version_before"]
    ]
    expected = switches[-1]["champion_version_before"] if switches else None
    previous = client.get_registered_model(name).aliases.get("previous")
    assert (None if previous is None else str(previous)) == expected


def test_each_run_logs_metrics_datasets_and_decision(backfilled, client):
    _, _, records = backfilled
    for record in records:
        run = client.get_run(record["mlflow_run_id"])
        assert run.info.status == "FINISHED"
        for key in (
            "fp32.ne",
            "int8.ne",
            "searched.ne",
            "fp16.ne",
            "fp32.auc",
            "int8.bytes",
            "searched.bytes",
            "time.train_s",
            "time.search_s",
        ):
            assert key in run.data.metrics, key
        assert run.data.tags["quantrec.decision"] == record["decision"]
        contexts = {
            tag.value
            for d in run.inputs.dataset_inputs
            for tag in d.tags
            if tag.key == "mlflow.data.context"
        }
        assert contexts == {"training", "evaluation"}
        decision = mlflow.artifacts.load_dict(f"runs:/{record['mlflow_run_id']}/decision.json")
        assert decision["outcome"] == record["decision"]
    assert "champion.ne" in client.get_run(records[-1]["mlflow_run_id"]).data.metrics


def test_champion_reloads_and_reproduces_its_logged_ne(backfilled, client):
    _, config, records = backfilled
    name = config.registry.model_name
    champion = client.get_model_version_by_alias(name, "champion")
    loaded = load_version(name, champion.version)
    run_date = date.fromisoformat(champion.tags["quantrec.run_date"])
    frame = quantrec_home().day_lake().read(run_date)
    metrics = score(
        loaded.model,
        batch_from_frame(frame, loaded.schema),
        batch_size=config.evaluation.batch_size,
    )
    record = next(r for r in records if r["date"] == run_date.isoformat())
    variant = champion.tags["quantrec.variant"]
    assert metrics.ne == record["metrics"][variant]["ne"]
    pyfunc = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    probabilities = pyfunc.predict(frame.drop(columns=["label"]).head(100))
    assert probabilities.shape == (100,)
    assert ((probabilities > 0) & (probabilities < 1)).all()


def test_plan_is_searched_once_then_reused_while_it_passes(backfilled, client):
    _, _, records = backfilled
    assert records[0]["plan_source"] == "searched"
    first = client.get_run(records[0]["mlflow_run_id"])
    assert first.data.tags["quantrec.plan_source"] == "searched"
    assert "search.candidates" in first.data.metrics
    artifacts = {a.path for a in client.list_artifacts(first.info.run_id, "search")}
    assert {"search/plan.json", "search/search.json", "search/pareto.png"} <= artifacts
    _, config, _ = backfilled
    bound = config.gate.quantization_ne_budget_rel  # search.faithfulness left unset
    for earlier, record in zip(records, records[1:]):
        run = client.get_run(earlier["mlflow_run_id"]).data
        verdict = run.tags["quantrec.searched_verdict"]
        drifted = (
            abs(run.metrics["search.realised_delta"]) >= config.search.reuse_drift_share * bound
        )
        refused = "the reused plan's interval crosses" in record["plan_reason"]
        expected = "searched" if verdict == "rejected" or drifted or refused else "reused"
        assert record["plan_source"] == expected, (earlier["date"], verdict, drifted)


def test_every_run_records_the_plans_predicted_and_realised_ne_change(backfilled, client):
    _, config, records = backfilled
    bound = config.gate.quantization_ne_budget_rel
    for record in records:
        metrics = client.get_run(record["mlflow_run_id"]).data.metrics
        low, high = metrics["search.predicted_delta_low"], metrics["search.predicted_delta_high"]
        assert low <= metrics["search.predicted_delta"] <= high
        assert (record["predicted_delta_low"], record["predicted_delta_high"]) == (low, high)
        if record["plan_source"] == "searched":  # accepted only within the two-sided bound
            assert max(abs(low), abs(high)) <= bound, record["plan_reason"]
        realised = (metrics["searched.ne"] - metrics["fp32.ne"]) / metrics["fp32.ne"]
        assert metrics["search.realised_delta"] == pytest.approx(realised, rel=1e-9)
        assert record["realised_delta"] == pytest.approx(realised, rel=1e-9)


def test_searched_version_reloads_with_its_plan(backfilled, client):
    _, config, records = backfilled
    version = records[0]["registered_versions"]["searched"]
    loaded = load_version(config.registry.model_name, version)
    plan_text = mlflow.artifacts.load_text(f"runs:/{records[0]['mlflow_run_id']}/search/plan.json")
    assert loaded.recipe["precision_plan"] == {
        unit: spec["precision"] for unit, spec in json.loads(plan_text)["units"].items()
    }


def test_every_artifact_of_the_embedded_store_lives_in_the_home(backfilled, client):
    home, config, records = backfilled
    experiment = client.get_experiment_by_name(config.registry.experiment)
    assert experiment.artifact_location == (home / "mlartifacts").resolve().as_uri()
    for record in records:
        assert client.get_run(record["mlflow_run_id"]).info.artifact_uri.startswith(
            experiment.artifact_location
        )
    models = client.search_logged_models(experiment_ids=[experiment.experiment_id])
    assert len(models) == 4 * len(records)
    for model in models:
        assert model.artifact_location.startswith(experiment.artifact_location)


def test_the_model_line_trains_continually_after_its_first_full_retrain(backfilled, client):
    """Day 1 trains on the window from scratch; each later day continues the latest fp32
    parent on the one new day, whether or not the gate promoted it."""
    _, config, records = backfilled
    assert [r["training_mode"] for r in records] == ["full", "continual", "continual"]
    assert [r["trained_through"] for r in records] == ["2026-02-28", "2026-03-01", "2026-03-02"]
    assert {r["full_retrain_date"] for r in records} == {"2026-03-01"}
    first = records[0]["registered_versions"]["fp32"]
    tags = client.get_model_version(config.registry.model_name, first).tags
    assert tags["quantrec.trained_through"] == "2026-02-28"
    run = client.get_run(records[1]["mlflow_run_id"])
    assert f"continues version {first}" in run.data.tags["quantrec.training_reason"]
    # The parent's fp32 artifact kept its optimizers' state; the continued runs resumed it
    # for one pass over the new day, the full retrain started afresh.
    resumed = [
        client.get_run(r["mlflow_run_id"]).data.metrics["train.optimizer_resumed"] for r in records
    ]
    epochs = [client.get_run(r["mlflow_run_id"]).data.metrics["train.epochs"] for r in records]
    assert resumed == [0.0, 1.0, 1.0] and epochs[1:] == [1.0, 1.0]
    assert load_version(config.registry.model_name, first).model.optimizer_state is not None


def test_every_searched_variant_logs_its_numerics_against_fp32(backfilled, client):
    _, config, records = backfilled
    for record in records:
        version = record["registered_versions"]["searched"]
        text = mlflow.artifacts.load_text(f"runs:/{record['mlflow_run_id']}/search/numerics.csv")
        frame = pd.read_csv(io.StringIO(text))
        plan = load_version(config.registry.model_name, version).recipe["precision_plan"]
        units = frame[frame["kind"] != "output"]
        assert sorted(units["unit"]) == sorted(plan), record["date"]
        assert dict(zip(units["unit"], units["precision"])) == plan
        assert set(units["reference_precision"]) == {"fp32"}
        assert list(frame["unit"])[-1] == "output"
        assert frame["first"].sum() <= 1
        # The run's report shows the same table, unit by unit.
        page = mlflow.artifacts.load_text(f"runs:/{record['mlflow_run_id']}/report.html")
        assert "Numerics: searched vs fp32, unit by unit" in page
        assert all(unit in page for unit in units["unit"])


def test_debug_prints_a_versions_numerics_as_logged_and_refuses_bad_versions(
    backfilled, client, capsys
):
    _, config, records = backfilled
    versions = records[0]["registered_versions"]
    assert main(["debug", "--version", versions["searched"]]) == 0
    out = capsys.readouterr().out
    assert f"searched v{versions['searched']} against fp32 v{versions['fp32']}" in out
    assert "sparse_arch.embedding_bags.0" in out and "over_arch.mlp.0" in out
    # The registered versions reproduce the numerics the run logged, on the same rows.
    assert main(["debug", "--version", versions["searched"], "--csv"]) == 0
    printed = pd.read_csv(io.StringIO(capsys.readouterr().out))
    logged = mlflow.artifacts.load_text(f"runs:/{records[0]['mlflow_run_id']}/search/numerics.csv")
    pd.testing.assert_frame_equal(printed, pd.read_csv(io.StringIO(logged)))
    assert main(["debug", "--version", versions["int8"], "--against", versions["fp16"]]) == 0
    assert f"int8 v{versions['int8']} against fp16 v{versions['fp16']}" in capsys.readouterr().out
    assert main(["debug", "--version", "999"]) == 2
    assert "no version '999'" in capsys.readouterr().err
    assert main(["debug", "--version", versions["fp32"]]) == 2
    assert "its own reference" in capsys.readouterr().err
