"""The pipeline stages: plan the run date's two-stage pipeline, log the sweep, register it.

Thin: ``models.pipeline_plan`` builds the queries, sweeps (filter, K) and applies the
pipeline's rules; ``models.pipeline_pyfunc`` writes the model. These tasks read the lake,
log ``pipeline.*`` metrics and ``pipeline/`` artifacts to the run, and register the chosen
pipeline as a version of ``<registry.model_name>-pipeline``, tagged with the versions of
its stages.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from quantrec.models.evaluation import slice_roles
from quantrec.models.lifecycle import Candidate, DayOutcome, Partitions
from quantrec.models.names import Tag, Variant
from quantrec.models.pipeline import Stage
from quantrec.models.pipeline_plan import (
    PipelinePlan,
    PipelineTag,
    choose_filter,
    day_cases,
    day_catalogue,
    finite,
    pipeline_model_name,
    plan_pipeline,
    sweep_figure,
)
from quantrec.models.pipeline_pyfunc import LOADER_MODULE, SavedStage, save_pipeline
from quantrec.models.train import torch_threads
from quantrec.tasks.config import QuantrecConfig
from quantrec.tasks.tracking import (
    SERVING_REQUIREMENTS,
    connect,
    log_metrics,
    mlflow_task,
    record_manifest,
    stage_timer,
)

ARTIFACTS = "pipeline"


@task(name="pipeline-plan", cache_policy=NO_CACHE)
def plan_two_stage(
    partitions: Partitions,
    candidate: Candidate,
    outcome: DayOutcome,
    config: QuantrecConfig,
    run_id: str,
) -> PipelinePlan | None:
    """The day's sweep and choice, logged; None when no pipeline can be planned (no
    passing low-precision filter, no user or item column, no query), said in the log."""
    home, client = connect()
    verdicts = {name: outcome.verdict(name) for name in candidate.variants}
    filter_name = choose_filter(verdicts, candidate.bytes)
    user, item = slice_roles(partitions.schema, config.gate.user_column, config.gate.item_column)
    plan, why_not = None, None
    if filter_name is None:
        why_not = "no low-precision variant passed the gate"
    elif not (user and item):
        why_not = "the feed names no user or item column (set gate.user_column / item_column)"
    else:
        with stage_timer(client, run_id, "pipeline-plan"):
            cases = _cases(home.day_lake(), partitions, candidate, user, item, config)
            if not cases:
                why_not = f"no user of {partitions.run_date} clicked an item of the window"
            else:
                with torch_threads(1):  # one torch thread per stage thread (models.loadgen)
                    plan = plan_pipeline(
                        candidate.variants[filter_name],
                        candidate.variants[Variant.FP32],
                        cases,
                        filter_name=filter_name,
                        settings=config.pipeline,
                    )
    if plan is None:
        client.set_tag(run_id, PipelineTag.PLAN, f"none: {why_not}")
        get_run_logger().info("no two-stage pipeline today: %s", why_not)
        return None
    log_metrics(client, run_id, finite(plan.metrics()))
    client.log_text(run_id, plan.sweep_frame().to_csv(index=False), f"{ARTIFACTS}/sweep.csv")
    client.log_dict(run_id, plan.to_dict(), f"{ARTIFACTS}/decision.json")
    client.log_figure(run_id, sweep_figure(plan), f"{ARTIFACTS}/sweep.png")
    client.set_tag(run_id, PipelineTag.PLAN, plan.chosen.pipeline if plan.passed else "none")
    get_run_logger().info("pipeline plan: %s", plan.reason)
    return plan


def _cases(lake, partitions, candidate, user, item, config):
    """The run date's queries against the window's items (``models.pipeline_plan``)."""
    settings = config.pipeline
    columns = [item, *settings.item_columns]
    window = [pd.read_parquet(lake.path(d), columns=columns) for d in partitions.window]
    catalogue = day_catalogue(window, item_column=item, item_columns=settings.item_columns)
    return day_cases(
        lake.read(partitions.run_date),
        catalogue,
        candidate.schema,
        day=partitions.run_date.isoformat(),
        user_column=user,
        item_column=item,
        count=settings.queries,
        seed=config.training.seed,
    )


@mlflow_task("register-pipeline")
def register_pipeline(
    plan: PipelinePlan | None,
    candidate: Candidate,
    outcome: DayOutcome,
    run_key: str,
    force: bool = False,
) -> DayOutcome:
    """Register the chosen pipeline (nothing when none passed); the outcome with its
    record. Idempotent per ``run_key`` unless ``force``, as the variants are."""
    if plan is None or plan.chosen is None:
        decision = None if plan is None else plan.to_dict()
        return outcome.replace(pipeline=decision)
    _, client = connect()
    name, run_id = pipeline_model_name(outcome.model_name), outcome.mlflow_run_id
    existing = [] if force else _registered(client, name, run_key)
    if existing:
        version = existing[-1]
        get_run_logger().info("the pipeline is already registered as %s version %s", name, version)
    else:
        version = _log_version(client, plan, candidate, name, run_id, run_key, outcome)
        record_manifest(client, name, version, run_id)
    versions = outcome.registered_versions
    tags = {
        PipelineTag.MODEL: outcome.model_name,
        PipelineTag.PIPELINE: plan.chosen.pipeline,
        PipelineTag.FILTER: plan.filter,
        PipelineTag.FILTER_VERSION: versions.get(plan.filter, ""),
        PipelineTag.RANKER: plan.ranker,
        PipelineTag.RANKER_VERSION: versions.get(plan.ranker, ""),
        PipelineTag.KEEP: str(plan.chosen.k),
        PipelineTag.RECALL: f"{plan.chosen.recall_at_10:.4f}",
        PipelineTag.NDCG: f"{plan.chosen.ndcg_at_10:.4f}",
        PipelineTag.P95_MS: f"{plan.chosen.p95_ms:.3f}",
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    client.update_model_version(name, version, description=_card(plan, outcome, versions))
    client.set_tag(run_id, PipelineTag.VERSION, version)
    return outcome.replace(pipeline={**plan.to_dict(), "model": name, "version": version})


def _registered(client, name: str, run_key: str) -> list[str]:
    try:
        found = client.search_model_versions(
            f"name='{name}' and tags.`{Tag.RUN_KEY}` = '{run_key}'"
        )
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return []
        raise
    return [str(v.version) for v in sorted(found, key=lambda v: int(v.version))]


def _log_version(client, plan, candidate, name, run_id, run_key, outcome) -> str:
    """Log the pipeline's files to the run, then create its version with its identity."""
    filter_model = candidate.variants[plan.filter]
    ranker = candidate.variants[plan.ranker]
    stages = [
        SavedStage(Stage(plan.filter, filter_model, plan.chosen.k), plan.filter, candidate.schema),
        SavedStage(Stage(plan.ranker, ranker, plan.k), plan.ranker, candidate.schema),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        directory = save_pipeline(
            stages,
            Path(tmp) / "pipeline",
            schema=candidate.schema,
            item_column=plan.item_column,
            shared_context=plan.shared_context,
        )
        mlflow.start_run(run_id=run_id)
        try:
            info = mlflow.pyfunc.log_model(
                name="pipeline",
                loader_module=LOADER_MODULE,
                data_path=str(directory),
                pip_requirements=SERVING_REQUIREMENTS,
            )
        finally:
            # As the variants: the run stays RUNNING until the flow closes it.
            mlflow.end_run(status="RUNNING")
    try:
        client.create_registered_model(name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    identity = {
        Tag.RUN_KEY: run_key,
        Tag.MLFLOW_RUN_ID: run_id,
        Tag.RUN_DATE: outcome.date.isoformat(),
    }
    version = client.create_model_version(
        name, info.model_uri, run_id=run_id, tags=identity, model_id=info.model_id
    )
    return str(version.version)


def _card(plan: PipelinePlan, outcome: DayOutcome, versions: dict[str, str]) -> str:
    chosen, single = plan.chosen, plan.points[0]
    change = (
        f"{chosen.ndcg_change:+.4f} [{chosen.ndcg_change_low:+.4f}, {chosen.ndcg_change_high:+.4f}]"
    )
    return (
        f"Two-stage pipeline of {outcome.model_name}, run date {outcome.date}: the "
        f"{plan.filter} variant (version {versions.get(plan.filter, '?')}) scores "
        f"{plan.candidates} candidates and keeps {chosen.k} for the {plan.ranker} ranker "
        f"(version {versions.get(plan.ranker, '?')}), which serves the top {plan.k}.\n\n"
        f"On {plan.queries} queries of the run date: recall@{plan.k} "
        f"{chosen.recall_at_10:.3f} against single-stage; NDCG@{plan.k} "
        f"{chosen.ndcg_at_10:.4f} (single-stage {single.ndcg_at_10:.4f}, change {change}); "
        f"p95 {chosen.p95_ms:.2f} ms against {single.p95_ms:.2f} ms; "
        f"{chosen.queries_per_s:.1f} queries/s against {single.queries_per_s:.1f}.\n\n"
        "Request: one row per candidate (the user's columns repeated, an optional `query` "
        "column); response: item, score, rank."
    )
