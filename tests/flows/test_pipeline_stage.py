"""With [pipeline] on, the daily flow plans a two-stage pipeline after the gate, logs the
sweep and registers the chosen pipeline under its own model, tagged with its stages'
versions; the registered pipeline serves what its stages, loaded alone, rank."""

from __future__ import annotations

import json
from datetime import timedelta

import mlflow
import numpy as np

from quantrec.flows.daily_lifecycle import daily_lifecycle
from quantrec.models.batch import batch_from_frame
from quantrec.models.evaluation import slice_roles
from quantrec.models.pipeline import two_stage
from quantrec.models.pipeline_plan import PipelineTag, day_catalogue, pipeline_model_name
from quantrec.models.pipeline_pyfunc import serving_model
from quantrec.models.queries import candidate_frame, day_queries
from quantrec.tasks.retention import collect
from quantrec.tasks.settings import quantrec_home
from quantrec.tasks.tracking import load_version, verified_copy

from .conftest import END

FAST = {
    "enabled": True,
    "queries": 30,
    "timing_queries": 8,
    "load_queries": 8,
    "load_seconds": 1.0,
    "keeps": (50, 200),
}


def test_the_flow_plans_logs_and_registers_a_two_stage_pipeline(home_copy, tmp_path) -> None:
    _, config, _, client = home_copy
    config = config.with_overrides(pipeline=FAST)
    day = END + timedelta(days=1)
    outcome = daily_lifecycle(run_date=day, config=config)
    assert outcome.pipeline is not None, "the pipeline stage did not run"
    decision = outcome.pipeline
    assert decision["passed"], decision["reason"]
    print(f"pipeline plan: {decision['reason']}")
    name = pipeline_model_name(config.registry.model_name)
    assert decision["model"] == name
    version = client.get_model_version(name, decision["version"])
    tags = version.tags
    assert tags[PipelineTag.FILTER] == decision["filter"] != "fp32"
    assert tags[PipelineTag.FILTER_VERSION] == outcome.registered_versions[decision["filter"]]
    assert tags[PipelineTag.RANKER_VERSION] == outcome.registered_versions["fp32"]
    assert int(tags[PipelineTag.KEEP]) == decision["k"]
    assert float(tags[PipelineTag.RECALL]) >= config.pipeline.min_recall
    run = client.get_run(outcome.mlflow_run_id)
    for metric in ("pipeline.recall_at_10", "pipeline.ndcg_at_10", "pipeline.p95_ms"):
        assert metric in run.data.metrics, metric
    assert run.data.tags[PipelineTag.VERSION] == decision["version"]
    logged = {a.path for a in client.list_artifacts(outcome.mlflow_run_id, "pipeline")}
    assert {"pipeline/sweep.csv", "pipeline/decision.json", "pipeline/sweep.png"} <= logged
    # Retention covers the pipeline model too: its versions of recent run dates are kept.
    assert decision["version"] in collect(name, keep_days=30, dry_run=True).plan.keep
    recorded = json.loads(
        mlflow.artifacts.load_text(f"runs:/{outcome.mlflow_run_id}/pipeline/decision.json")
    )
    assert recorded["checks"] and all(c["passed"] for c in recorded["checks"])

    # The registered pipeline serves what its registered stages rank in process.
    lake = quantrec_home().day_lake()
    frame = lake.read(day)
    schema_user, schema_item = slice_roles(
        config.feed.build(day).schema(), config.gate.user_column, config.gate.item_column
    )
    filter_stage = load_version(config.registry.model_name, tags[PipelineTag.FILTER_VERSION])
    ranker = load_version(config.registry.model_name, tags[PipelineTag.RANKER_VERSION])
    window = [lake.read(day - timedelta(days=d)) for d in (2, 1)]
    catalogue = day_catalogue(window, item_column=schema_item)
    query = day_queries(
        frame, day=str(day), user_column=schema_user, item_column=schema_item, label_column="label"
    )[0]
    request = candidate_frame(query.context, catalogue).drop(columns=["label"])
    served = mlflow.pyfunc.load_model(
        str(verified_copy(name, decision["version"], tmp_path / "copy"))
    ).predict(request)
    # Stages as the registered pipeline serves them (fused, user-side work shared).
    shared = decision["shared_context"]
    pipeline = two_stage(
        serving_model(filter_stage.model, shared_context=shared),
        serving_model(ranker.model, shared_context=shared),
        keep=decision["k"],
        k=config.pipeline.k,
        filter_name=decision["filter"],
    )
    expected = pipeline.rank(
        batch_from_frame(request.assign(label=0), ranker.schema), request[schema_item].to_numpy()
    )
    assert served["item"].tolist() == expected.items.tolist()
    np.testing.assert_array_equal(served["score"].to_numpy(), expected.scores)
