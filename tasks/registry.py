"""Registry stages: load the champion, register every evaluated variant, switch aliases.

Each variant is an MLflow ``python_function`` model whose loader is ``models.pyfunc``
reading tensors plus the recipe: nothing pickled is ever loaded. The alias switch is the
only promotion step; until it runs, the old champion keeps serving.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import mlflow
import torch
from mlflow.exceptions import MlflowException
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from quantrec.data_checks.schema import FeatureSchema
from quantrec.models.artifact import LoadedModel, save_model
from quantrec.models.gate import Decision
from quantrec.models.metrics import Metrics
from quantrec.models.plan import PrecisionPlan
from quantrec.tasks.identity import pause_point
from quantrec.tasks.model_card import model_card
from quantrec.tasks.tracking import connect

CHAMPION, PREVIOUS, CHALLENGER = "champion", "previous", "challenger"
logger = logging.getLogger(__name__)
SERVING_REQUIREMENTS = [f"torch=={torch.__version__.split('+')[0]}", "pandas", "numpy", "pyarrow"]


@dataclass
class Champion:
    """The serving model: its version, weights, the run that made it and its fp32 parent."""

    version: str
    loaded: LoadedModel
    model_name: str = ""
    run_id: str = ""
    parent_version: str | None = None


def champion_version(client, model_name: str) -> str | None:
    """The version the ``champion`` alias points at, or None when there is none yet."""
    try:
        registered = client.get_registered_model(model_name)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    version = registered.aliases.get(CHAMPION)
    return None if version is None else str(version)


def load_version(model_name: str, version: str) -> LoadedModel:
    """Load one registered version back into a model (tensors plus recipe)."""
    return mlflow.pyfunc.load_model(f"models:/{model_name}/{version}").get_raw_model()


@task(name="load-champion", cache_policy=NO_CACHE, retries=3,
      retry_delay_seconds=exponential_backoff(backoff_factor=2), retry_jitter_factor=0.5)
def load_champion(model_name: str) -> Champion | None:
    _, client = connect()
    version = champion_version(client, model_name)
    if version is None:
        get_run_logger().info("no champion yet for %s", model_name)
        return None
    tags = client.get_model_version(model_name, version).tags
    run_id = tags.get("quantrec.mlflow_run_id", "")
    siblings = client.search_model_versions(
        f"name='{model_name}' and tags.`quantrec.mlflow_run_id` = '{run_id}'") if run_id else []
    parents = [str(v.version) for v in siblings if v.tags.get("quantrec.variant") == "fp32"]
    return Champion(version=version, loaded=load_version(model_name, version),
                    model_name=model_name, run_id=run_id,
                    parent_version=max(parents, key=int) if parents else None)


RUN_KEY_TAG = "quantrec.run_key"


def registered_for(client, model_name: str, run_key: str) -> dict[str, str]:
    """Variant -> version already registered under ``run_key`` (newest when repeated)."""
    try:
        found = client.search_model_versions(
            f"name='{model_name}' and tags.`{RUN_KEY_TAG}` = '{run_key}'"
        )
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return {}
        raise
    versions: dict[str, str] = {}
    for version in sorted(found, key=lambda v: int(v.version)):
        variant = version.tags.get("quantrec.variant")
        if variant:
            versions[variant] = str(version.version)
    return versions


@task(name="register", cache_policy=NO_CACHE, retries=3,
      retry_delay_seconds=exponential_backoff(backoff_factor=2), retry_jitter_factor=0.5)
def register_variants(
    *,
    run_id: str,
    run_key: str,
    run_date: date,
    variants: dict,
    schema: FeatureSchema,
    metrics: dict[str, Metrics],
    sizes: dict[str, int],
    plans: dict[str, PrecisionPlan],
    decision: Decision,
    model_name: str,
    window: tuple[date, ...] = (),
    window_digest: str = "",
    drift: dict | None = None,
    force: bool = False,
) -> dict[str, str]:
    """Register every variant as a version tagged with its verdict; return name -> version.

    Idempotent: a variant already registered under ``run_key`` (a crashed or repeated run
    of the same date, data, config and code) is not registered again unless ``force``; its
    tags and model card are brought up to date. Each version's description is its model
    card (``tasks.model_card``).
    """
    _, client = connect()
    all_metrics = {n: m.to_dict() for n, m in metrics.items()}
    record = decision.to_dict()
    existing = {} if force else registered_for(client, model_name, run_key)
    versions: dict[str, str] = {}
    for name, model in variants.items():
        if name in existing:
            version = existing[name]
            get_run_logger().info("%s already registered as version %s", name, version)
        else:
            pause_point("register")
            version = _log_version(run_id, name, model, schema, plans.get(name), model_name)
        tags = {
            "quantrec.run_date": run_date.isoformat(),
            "quantrec.variant": name,
            "quantrec.decision": decision.verdict(name),
            "quantrec.ne": f"{metrics[name].ne:.6f}",
            "quantrec.bytes": str(sizes[name]),
            "quantrec.mlflow_run_id": run_id,
            RUN_KEY_TAG: run_key,
        }
        for key, value in tags.items():
            client.set_model_version_tag(model_name, version, key, value)
        card = model_card(
            model_name=model_name, variant=name, run_date=run_date, run_id=run_id,
            window=window, window_digest=window_digest, metrics=all_metrics, parent="fp32",
            champion_key="champion", precisions=plans[name].precisions(),
            size_bytes=sizes[name], parent_bytes=sizes.get("fp32", sizes[name]), drift=drift,
            verdict=decision.verdict(name), decision=record,
        )
        client.update_model_version(model_name, version, description=card)
        versions[name] = version
    if "searched" in variants:
        # Tomorrow's run reads this to decide whether the plan may be reused.
        client.set_tag(run_id, "quantrec.searched_verdict", decision.verdict("searched"))
    return versions


def _log_version(run_id: str, name: str, model, schema: FeatureSchema,
                 plan: PrecisionPlan | None, model_name: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        artifact = save_model(model, Path(tmp) / "artifact", schema=schema,
                              precision=name, plan=plan)
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


@task(name="promote", cache_policy=NO_CACHE, retries=3,
      retry_delay_seconds=exponential_backoff(backoff_factor=2), retry_jitter_factor=0.5)
def switch_champion(model_name: str, version: str | None, run_id: str) -> str | None:
    """Point ``champion`` at ``version`` (and ``previous`` at the one it replaces).

    With ``version`` None nothing moves. Returns the champion version after the step.
    """
    _, client = connect()
    pause_point("promote")
    after = move_champion(client, model_name, version)
    if version is not None:
        client.set_tag(run_id, "quantrec.champion_version", after)
    return after


def move_champion(client, model_name: str, version: str | None) -> str | None:
    """The one promotion step: ``previous`` <- old champion, then ``champion`` <- version.

    Setting ``previous`` first means a crash between the two calls leaves the old champion
    serving. Returns the champion version after the step.
    """
    current = champion_version(client, model_name)
    if version is None or version == current:
        return current
    if current is not None:
        client.set_registered_model_alias(model_name, PREVIOUS, current)
    client.set_registered_model_alias(model_name, CHAMPION, version)
    logger.info("champion of %s: version %s (was %s)", model_name, version, current)
    return version


@task(name="nominate-challenger", cache_policy=NO_CACHE, retries=3,
      retry_delay_seconds=exponential_backoff(backoff_factor=2), retry_jitter_factor=0.5)
def set_challenger(model_name: str, version: str, run_id: str, reason: str) -> str:
    """Point ``challenger`` at ``version`` for human review; the champion does not move."""
    _, client = connect()
    client.set_registered_model_alias(model_name, CHALLENGER, version)
    client.set_model_version_tag(model_name, version, "quantrec.review", "pending")
    client.set_model_version_tag(model_name, version, "quantrec.challenger_reason", reason[:5000])
    client.set_tag(run_id, "quantrec.challenger_version", version)
    get_run_logger().warning("version %s of %s is the challenger, awaiting review: %s",
                             version, model_name, reason)
    return version
