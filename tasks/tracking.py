"""MLflow plumbing shared by the tasks: connect, one run per run date, flat metric names.

Tasks log through an explicit ``run_id`` (``MlflowClient``) rather than the fluent
"active run", so a stage never writes into whatever run another thread left open.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from datetime import date
from typing import Iterator, Mapping

import mlflow
from mlflow.tracking import MlflowClient

from quantrec.tasks.settings import Home, quantrec_home

RUN_DATE_TAG = "quantrec.run_date"


def connect() -> tuple[Home, MlflowClient]:
    """Point MLflow at ``$MLFLOW_TRACKING_URI`` or the embedded store; return a client."""
    home = quantrec_home()
    mlflow.set_tracking_uri(home.tracking_uri)
    mlflow.set_registry_uri(home.tracking_uri)
    return home, MlflowClient(tracking_uri=home.tracking_uri, registry_uri=home.tracking_uri)


def experiment_id(client: MlflowClient, home: Home, name: str) -> str:
    """The experiment's id, created on first use (artifacts under ``$QUANTREC_HOME``)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = home.mlflow_artifacts.as_uri() if home.uses_embedded_tracking else None
    return client.create_experiment(name, artifact_location=location)


def start_run(client: MlflowClient, experiment: str, run_date: date, tags: Mapping[str, str]) -> str:
    """Open this run date's MLflow run and return its id."""
    run = client.create_run(
        experiment,
        run_name=f"lifecycle-{run_date.isoformat()}",
        tags={RUN_DATE_TAG: run_date.isoformat(), **tags},
    )
    return run.info.run_id


def retry_unless(*errors: type[BaseException]):
    """A Prefect ``retry_condition_fn``: retry any failure except ``errors`` (bad input
    that a retry cannot fix)."""

    def condition(task, task_run, state) -> bool:
        try:
            state.result()
        except errors:
            return False
        except Exception:  # noqa: BLE001 - anything else may be transient
            return True
        return True

    return condition


def log_metrics(client: MlflowClient, run_id: str, metrics: Mapping[str, float]) -> None:
    """Log finite metrics in one call; NaN (e.g. AUC of a one-class day) is skipped."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [
        Metric(key, float(value), now, 0)
        for key, value in metrics.items()
        if value is not None and math.isfinite(float(value))
    ]
    for start in range(0, len(batch), 500):
        client.log_batch(run_id, metrics=batch[start : start + 500])


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, object]) -> None:
    from mlflow.entities import Param

    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])


def flatten(prefix: str, values: Mapping[str, object]) -> dict[str, object]:
    """``{"a": {"b": 1}}`` -> ``{"prefix.a.b": 1}`` for metric and param names."""
    flat: dict[str, object] = {}
    for key, value in values.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten(name, value))
        else:
            flat[name] = value
    return flat


@contextmanager
def stage_timer(client: MlflowClient, run_id: str, stage: str) -> Iterator[None]:
    """Log the wall time of a stage as ``time.<stage>_s``."""
    started = time.perf_counter()
    try:
        yield
    finally:
        log_metrics(client, run_id, {f"time.{stage}_s": time.perf_counter() - started})


def stage_timings(run_ids: list[str]) -> dict[str, list[float]]:
    """Seconds per stage (``time.<stage>_s``) across the given runs, in run order."""
    _, client = connect()
    timings: dict[str, list[float]] = {}
    for run_id in run_ids:
        for key, value in client.get_run(run_id).data.metrics.items():
            if key.startswith("time.") and key.endswith("_s"):
                timings.setdefault(key[len("time."):-len("_s")], []).append(value)
    return timings
