"""Registry stages: load the champion, register every evaluated variant, switch aliases.

Each variant is an MLflow ``python_function`` model whose loader is ``models.pyfunc``
reading tensors plus the recipe: nothing pickled is ever loaded. Each version's stored files
get a manifest of their SHA-256 when it is registered (``tracking.record_manifest``), checked
before every load. The alias switch is the only promotion step; until it runs, the old
champion keeps serving.
"""

from __future__ import annotations

import tempfile
from datetime import date
from pathlib import Path

import mlflow
import torch
from mlflow.exceptions import MlflowException
from prefect import get_run_logger

from quantrec.data_checks.schema import FeatureSchema
from quantrec.models.artifact import save_model
from quantrec.models.lifecycle import Champion, DayOutcome, Lineage
from quantrec.models.manifest import IntegrityError
from quantrec.models.model_card import model_card
from quantrec.models.names import Alias, Tag, Variant
from quantrec.models.plan import PrecisionPlan
from quantrec.models.plan_table import plan_rows
from quantrec.tasks.settings import pause_point
from quantrec.tasks.tracking import (
    champion_version,
    connect,
    load_version,
    log_plan_rows,
    mlflow_task,
    move_champion,
    record_manifest,
    retry_unless,
)

SERVING_REQUIREMENTS = [f"torch=={torch.__version__.split('+')[0]}", "pandas", "numpy", "pyarrow"]


# Tampered files stay tampered: no retry.
@mlflow_task("load-champion", retry_condition_fn=retry_unless(IntegrityError))
def load_champion(model_name: str) -> Champion | None:
    _, client = connect()
    version = champion_version(client, model_name)
    if version is None:
        get_run_logger().info("no champion yet for %s", model_name)
        return None
    tags = client.get_model_version(model_name, version).tags
    run_id = tags.get(Tag.MLFLOW_RUN_ID, "")
    siblings = (
        client.search_model_versions(
            f"name='{model_name}' and tags.`{Tag.MLFLOW_RUN_ID}` = '{run_id}'"
        )
        if run_id
        else []
    )
    parents = [v for v in siblings if v.tags.get(Tag.VARIANT) == Variant.FP32]
    parent = max(parents, key=lambda v: int(v.version)) if parents else None
    return Champion(
        version=version,
        loaded=load_version(model_name, version),
        model_name=model_name,
        run_id=run_id,
        parent_version=str(parent.version) if parent else None,
    )


def _lineage(version) -> Lineage | None:
    """What the fp32 parent version recorded of its training; None for a version that
    recorded nothing (it cannot be continued)."""
    through, full = (version.tags.get(Tag.TRAINED_THROUGH), version.tags.get(Tag.FULL_RETRAIN_DATE))
    if not through or not full:
        return None
    return Lineage(
        version=str(version.version),
        trained_through=date.fromisoformat(through),
        full_retrain_date=date.fromisoformat(full),
    )


@mlflow_task("find-training-parent")
def latest_parent(model_name: str, run_date: date) -> Lineage | None:
    """The newest registered fp32 parent trained before ``run_date``: the model line that
    continual training continues, whether or not the gate promoted it (the gate guards
    what serves; the line learns every day). None when there is none yet."""
    _, client = connect()
    try:
        found = client.search_model_versions(
            f"name='{model_name}' and tags.`{Tag.VARIANT}` = '{Variant.FP32}'"
        )
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    lines = [line for v in found if (line := _lineage(v)) and line.trained_through < run_date]
    return max(lines, key=lambda line: (line.trained_through, int(line.version)), default=None)


def registered_for(client, model_name: str, run_key: str) -> dict[str, str]:
    """Variant -> version already registered under ``run_key`` (newest when repeated)."""
    try:
        found = client.search_model_versions(
            f"name='{model_name}' and tags.`{Tag.RUN_KEY}` = '{run_key}'"
        )
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return {}
        raise
    versions: dict[str, str] = {}
    for version in sorted(found, key=lambda v: int(v.version)):
        variant = version.tags.get(Tag.VARIANT)
        if variant:
            versions[variant] = str(version.version)
    return versions


@mlflow_task("register")
def register_variants(
    outcome: DayOutcome,
    variants: dict,
    plans: dict[str, PrecisionPlan],
    schema: FeatureSchema,
    run_key: str,
    force: bool = False,
) -> DayOutcome:
    """Register every variant as a version tagged with its verdict; the outcome with the
    versions (name -> version).

    Idempotent: a variant already registered under ``run_key`` (a crashed or repeated run
    of the same date, data, config and code) is not registered again unless ``force``; its
    tags and model card are brought up to date. Each version's description is its model
    card (``models.model_card``) with its precision plan unit by unit, also logged as the
    run's ``plans/<variant>.json``.
    """
    _, client = connect()
    model_name, run_id = outcome.model_name, outcome.mlflow_run_id
    existing = {} if force else registered_for(client, model_name, run_key)
    versions: dict[str, str] = {}
    for name, model in variants.items():
        if name in existing:
            version = existing[name]
            get_run_logger().info("%s already registered as version %s", name, version)
            if not client.get_model_version(model_name, version).tags.get(Tag.MANIFEST_SHA256):
                # A crash between logging and the manifest: this run key wrote the files
                # moments ago, so the resumed run takes the manifest it did not get to.
                record_manifest(client, model_name, version, run_id)
        else:
            pause_point("register")
            version = _log_version(run_id, name, model, schema, plans.get(name), model_name)
            # Taken of what the store holds now, before anything can read it back.
            record_manifest(client, model_name, version, run_id)
        tags = {
            Tag.RUN_DATE: outcome.date.isoformat(),
            Tag.VARIANT: name,
            Tag.DECISION: outcome.verdict(name),
            Tag.NE: (f"{outcome.metrics[name]['ne']:.6f}" if name in outcome.metrics else "n/a"),
            Tag.BYTES: str(outcome.bytes[name]),
            Tag.MLFLOW_RUN_ID: run_id,
            Tag.RUN_KEY: run_key,
            Tag.TRAINING_MODE: outcome.training_mode or "",
            Tag.TRAINED_THROUGH: outcome.trained_through or "",
            Tag.FULL_RETRAIN_DATE: outcome.full_retrain_date or "",
        }
        for key, value in tags.items():
            client.set_model_version_tag(model_name, version, key, value)
        rows = plan_rows(model, plans.get(name))
        log_plan_rows(client, run_id, name, rows)
        client.update_model_version(
            model_name, version, description=model_card(outcome, name, plan=rows)
        )
        versions[name] = version
    if Variant.SEARCHED in variants:
        # Tomorrow's run reads this to decide whether the plan may be reused.
        client.set_tag(run_id, Tag.SEARCHED_VERDICT, outcome.verdict(Variant.SEARCHED))
    return outcome.replace(registered_versions=versions)


def _log_version(
    run_id: str,
    name: str,
    model,
    schema: FeatureSchema,
    plan: PrecisionPlan | None,
    model_name: str,
) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        artifact = save_model(
            model, Path(tmp) / "artifact", schema=schema, precision=name, plan=plan
        )
        mlflow.start_run(run_id=run_id)
        try:
            info = mlflow.pyfunc.log_model(
                name=name,
                loader_module="quantrec.models.pyfunc",
                data_path=str(artifact),
                pip_requirements=SERVING_REQUIREMENTS,
                registered_model_name=model_name,
            )
        finally:
            # Leaving a fluent run would mark it FINISHED; promote and summarize are still to
            # come, and a crash there must leave the run RUNNING for the next run to close.
            mlflow.end_run(status="RUNNING")
    return str(info.registered_model_version)


@mlflow_task("promote")
def switch_champion(outcome: DayOutcome) -> DayOutcome:
    """Point ``champion`` at the promoted variant's version (and ``previous`` at the one it
    replaces); nothing moves when nothing was promoted. The outcome with the champion
    before and after the step."""
    _, client = connect()
    pause_point("promote")
    before = champion_version(client, outcome.model_name)
    version = outcome.registered_versions.get(outcome.promoted_variant or "")
    after = move_champion(client, outcome.model_name, version)
    if version is not None:
        client.set_tag(outcome.mlflow_run_id, Tag.CHAMPION_VERSION, after)
    return outcome.replace(champion_version_before=before, champion_version=after)


@mlflow_task("nominate-challenger")
def set_challenger(outcome: DayOutcome) -> DayOutcome:
    """Point ``challenger`` at the day's winner for human review (severe drift); the
    champion does not move."""
    _, client = connect()
    model_name = outcome.model_name
    version = outcome.registered_versions[outcome.challenger_variant]
    client.set_registered_model_alias(model_name, Alias.CHALLENGER, version)
    client.set_model_version_tag(model_name, version, Tag.REVIEW, "pending")
    client.set_model_version_tag(model_name, version, Tag.CHALLENGER_REASON, outcome.reason[:5000])
    client.set_tag(outcome.mlflow_run_id, Tag.CHALLENGER_VERSION, version)
    get_run_logger().warning(
        "version %s of %s is the challenger, awaiting review: %s",
        version,
        model_name,
        outcome.reason,
    )
    return outcome.replace(challenger_version=version)
