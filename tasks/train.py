"""Training stages: fit the fp32 candidate on the window, derive its low-precision variants.

Thin: ``models.lifecycle.train_fp32`` and ``build_variants`` compute; these tasks persist
the result for a resume, and log it.
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from quantrec.models.lifecycle import Candidate, Partitions, Trained, build_variants, train_fp32
from quantrec.models.names import Tag
from quantrec.models.plan import PrecisionPlan
from quantrec.tasks.config import QuantrecConfig
from quantrec.tasks.settings import STAGE_RESULT_TTL, pause_point, quantrec_home, stage_cache_key
from quantrec.tasks.tracking import (
    connect, dataset_entity, flatten, log_dataset, log_metrics, log_params, mlflow_task,
    stage_timer,
)

@task(name="train-fp32", cache_key_fn=stage_cache_key("train"), persist_result=True,
      cache_expiration=STAGE_RESULT_TTL,
      result_storage_key="quantrec-train-{parameters[run_key]}")
def train_candidate(partitions: Partitions, config: QuantrecConfig, run_key: str,
                    run_id: str) -> Trained:
    """Train the fp32 DLRM on the window before the run date, deterministically.

    Pure compute (nothing is logged here): the result is persisted under ``run_key``, and
    ``record_training`` logs it, whether it was computed now or by a run that crashed later.
    """
    day_lake = quantrec_home().day_lake()
    pause_point("train")
    trained = train_fp32([day_lake.path(day) for day in partitions.window], partitions.schema,
                         model=config.model, training=config.training,
                         holdout_fraction=config.search.holdout_fraction)
    trained.computed_by = run_id
    get_run_logger().info("trained on %d rows at %.0f samples/s", trained.rows,
                          trained.report.samples_per_s)
    return trained


@mlflow_task("record-training")
def record_training(trained: Trained, partitions: Partitions, config: QuantrecConfig,
                    run_id: str) -> None:
    """Log the training parameters, dataset, throughput and stage time to the run."""
    home, client = connect()
    log_params(client, run_id, flatten("", {"model": config.model.model_dump(),
                                            "training": config.training.model_dump()}))
    window = partitions.window
    log_dataset(client, run_id, dataset_entity(
        trained.sample, rows=trained.rows, name=f"window {window[0]}..{window[-1]}",
        source=str(home.lake), digest=partitions.window_digest(),
        label=partitions.schema.label), context="training")
    log_metrics(client, run_id, {
        "train.rows": trained.rows,
        "search.holdout_rows": len(trained.holdout),
        "train.samples_per_s": trained.report.samples_per_s,
        "train.final_loss": trained.report.final_loss,
        "train.seconds": trained.report.seconds,
        "time.train_s": trained.seconds,
    })
    if trained.computed_by != run_id:
        client.set_tag(run_id, Tag.RESUMED_TRAIN, trained.computed_by)


@task(name="quantize", cache_policy=NO_CACHE)
def quantize_variants(trained: Trained, plan: PrecisionPlan, run_id: str,
                      threads: int) -> Candidate:
    """fp32, fp16 and int8 everywhere, and the precision plan's variant (``searched``),
    re-calibrated on the held-out rows."""
    _, client = connect()
    with stage_timer(client, run_id, "quantize"):
        candidate = build_variants(trained, plan, threads=threads)
    log_metrics(client, run_id, {f"{n}.bytes": size for n, size in candidate.bytes.items()})
    return candidate
