"""Drift stages: save each candidate's reference profile, measure day D against the
champion's, and measure how stale the champion's quantization has become.

The reference of a model is its training window. Its statistics are built once, when the
model is trained, and logged with the run that registers it (``drift/reference_profile``),
so every later day, and every rerun of a day, compares against exactly the same reference.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from quantrec.data_checks.drift import DriftProfile, calibrated, measure
from quantrec.models.batch import batch_from_frame
from quantrec.models.lifecycle import Champion, DriftOutcome, Partitions, Trained, drift_outcome
from quantrec.models.names import Tag
from quantrec.models.scorer import predict_proba
from quantrec.models.staleness import quantization_staleness
from quantrec.models.train import torch_threads
from quantrec.tasks.config import QuantrecConfig
from quantrec.tasks.settings import quantrec_home
from quantrec.tasks.tracking import connect, load_version, log_metrics, mlflow_task, stage_timer

PROFILE_ARTIFACT = "drift/reference_profile"


def _window_profile(partitions: Partitions, **options) -> DriftProfile:
    """The window's drift profile, with how much its days differ among themselves."""
    day_lake = quantrec_home().day_lake()
    days = [day_lake.read(day) for day in partitions.window]
    profile = DriftProfile.build(pd.concat(days, ignore_index=True), partitions.schema, **options)
    return calibrated(profile, days, partitions.schema)


@mlflow_task("save-reference-profile")
def save_reference_profile(
    trained: Trained, partitions: Partitions, config: QuantrecConfig, run_id: str
) -> None:
    """Profile the candidate's training window and log it with the run.

    The scores binned for prediction drift are the fp32 parent's on the held-out rows:
    fresh rows it never trained on, as the days it will serve.
    """
    _, client = connect()
    with stage_timer(client, run_id, "reference"), torch_threads(config.training.threads):
        scores = predict_proba(
            trained.model, trained.holdout, batch_size=config.evaluation.batch_size
        )
        profile = _window_profile(
            partitions,
            scores=scores,
            source={
                "run_id": run_id,
                "days": [d.isoformat() for d in partitions.window],
                "window_digest": partitions.window_digest(),
            },
        )
    with tempfile.TemporaryDirectory() as tmp:
        folder = profile.save(Path(tmp) / "reference_profile")
        client.log_artifacts(run_id, str(folder), PROFILE_ARTIFACT)


def champion_profile(champion: Champion) -> DriftProfile | None:
    """The reference profile saved with the champion's run, or None (an older run)."""
    try:
        local = mlflow.artifacts.download_artifacts(
            run_id=champion.run_id,
            artifact_path=PROFILE_ARTIFACT,
            dst_path=tempfile.mkdtemp(prefix="quantrec-profile-"),
        )
    except (MlflowException, OSError):
        return None
    return DriftProfile.load(local)


@task(name="measure-drift", cache_policy=NO_CACHE)
def measure_run_date_drift(
    partitions: Partitions, champion: Champion | None, config: QuantrecConfig, run_id: str
) -> DriftOutcome:
    """Drift of the run date against the champion's saved reference (or, on the first
    day, the training window), the champion's prediction drift and quantization
    staleness. The whole-day statistics are MLflow metrics (``drift.*``, ``staleness.*``:
    the few a reviewer compares across runs); every per-feature and per-unit score is in
    the logged tables ``drift/features.csv`` and ``drift/staleness.csv``, under threshold or
    not.
    """
    home, client = connect()
    day_lake = home.day_lake()
    with stage_timer(client, run_id, "drift"), torch_threads(config.training.threads):
        day = day_lake.read(partitions.run_date)
        profile = champion_profile(champion) if champion is not None else None
        scores, staleness = None, {}
        if profile is not None:
            schema = champion.loaded.schema
            batch = batch_from_frame(day, schema)
            scores = predict_proba(
                champion.loaded.model, batch, batch_size=config.evaluation.batch_size
            )
            staleness = champion_staleness(champion, batch, config)
            reference = f"champion version {champion.version} (run {champion.run_id})"
        else:
            schema = partitions.schema
            profile = _window_profile(partitions)
            reference = "the training window (no champion profile yet)"
        report = measure(profile, day, schema, scores=scores, thresholds=config.drift)
    log_metrics(client, run_id, whole_day({**report.to_metrics(), **staleness}))
    client.log_text(run_id, report.table.to_csv(index=False), "drift/features.csv")
    if staleness:
        units = pd.DataFrame(
            [
                {"measure": k, "value": v}
                for k, v in staleness.items()
                if k not in whole_day(staleness)
            ]
        )
        client.log_text(run_id, units.to_csv(index=False), "drift/staleness.csv")
    client.log_dict(run_id, {**report.to_dict(), "reference": reference}, "drift/report.json")
    client.set_tag(run_id, Tag.DRIFT_LEVEL, report.level)
    get_run_logger().info("drift %s against %s: %s", report.level, reference, report.summary())
    return drift_outcome(report, staleness=staleness, reference=reference)


def whole_day(metrics: dict[str, float]) -> dict[str, float]:
    """The whole-day statistics among drift and staleness metrics: ``drift.<statistic>``
    and ``staleness.<measure>``; a per-feature or per-unit score has a third part
    (``drift.psi.dense_0``, ``staleness.out_of_range.over_arch.mlp.0``)."""
    return {key: value for key, value in metrics.items() if key.count(".") == 1}


def champion_staleness(champion: Champion, batch, config: QuantrecConfig) -> dict[str, float]:
    """Staleness of the champion's precision plan on day D, against its own fp32 parent;
    empty when the champion is fp32 itself or its parent is not registered."""
    if champion.parent_version is None or champion.parent_version == champion.version:
        return {}
    parent = load_version(champion.model_name, champion.parent_version)
    staleness = quantization_staleness(
        champion.loaded.model, parent.model, batch, batch_size=config.evaluation.batch_size
    )
    return staleness.to_metrics()
