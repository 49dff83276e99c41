"""Registry stages: load the champion, register every evaluated variant, switch aliases.

Each variant is an MLflow ``python_function`` model whose loader is ``models.pyfunc``
reading tensors plus the recipe: nothing pickled is ever loaded. The alias switch is the
only promotion step; until it runs, the old champion keeps serving.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import mlflow
import torch
from mlflow.exceptions import MlflowException
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from data_checks.schema import FeatureSchema
from models.artifact import LoadedModel, save_model
from models.gate import Decision
from models.metrics import Metrics
from models.plan import PrecisionPlan
from tasks.tracking import connect

CHAMPION, PREVIOUS = "champion", "previous"
SERVING_REQUIREMENTS = [f"torch=={torch.__version__.split('+')[0]}", "pandas", "numpy", "pyarrow"]


@dataclass
class Champion:
    version: str
    loaded: LoadedModel


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


@task(name="load-champion", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def load_champion(model_name: str) -> Champion | None:
    _, client = connect()
    version = champion_version(client, model_name)
    if version is None:
        get_run_logger().info("no champion yet for %s", model_name)
        return None
    return Champion(version=version, loaded=load_version(model_name, version))


@task(name="register", cache_policy=NO_CACHE)
def register_variants(
    *,
    run_id: str,
    run_date: date,
    variants: dict,
    schema: FeatureSchema,
    metrics: dict[str, Metrics],
    sizes: dict[str, int],
    plans: dict[str, PrecisionPlan],
    decision: Decision,
    model_name: str,
) -> dict[str, str]:
    """Register every variant as a version tagged with its verdict; return name -> version."""
    _, client = connect()
    versions: dict[str, str] = {}
    for name, model in variants.items():
        with tempfile.TemporaryDirectory() as tmp:
            artifact = save_model(model, Path(tmp) / "artifact", schema=schema,
                                  precision=name, plan=plans.get(name))
            with mlflow.start_run(run_id=run_id):
                info = mlflow.pyfunc.log_model(
                    name=name,
                    loader_module="models.pyfunc",
                    data_path=str(artifact),
                    pip_requirements=SERVING_REQUIREMENTS,
                    registered_model_name=model_name,
                )
        version = str(info.registered_model_version)
        tags = {
            "quantrec.run_date": run_date.isoformat(),
            "quantrec.variant": name,
            "quantrec.decision": decision.verdict(name),
            "quantrec.ne": f"{metrics[name].ne:.6f}",
            "quantrec.bytes": str(sizes[name]),
            "quantrec.mlflow_run_id": run_id,
        }
        for key, value in tags.items():
            client.set_model_version_tag(model_name, version, key, value)
        versions[name] = version
    if "searched" in variants:
        # Tomorrow's run reads this to decide whether the plan may be reused.
        client.set_tag(run_id, "quantrec.searched_verdict", decision.verdict("searched"))
    return versions


@task(name="promote", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def switch_champion(model_name: str, version: str | None, run_id: str) -> str | None:
    """Point ``champion`` at ``version`` (and ``previous`` at the one it replaces).

    With ``version`` None nothing moves. Returns the champion version after the step.
    """
    _, client = connect()
    current = champion_version(client, model_name)
    if version is None or version == current:
        return current
    if current is not None:
        # previous first: a crash between the two calls leaves the old champion serving.
        client.set_registered_model_alias(model_name, PREVIOUS, current)
    client.set_registered_model_alias(model_name, CHAMPION, version)
    client.set_tag(run_id, "quantrec.champion_version", version)
    get_run_logger().info("champion of %s: version %s (was %s)", model_name, version, current)
    return version
