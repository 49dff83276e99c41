"""Training stages: fit the fp32 candidate on the window, derive its low-precision variants.

Thin: ``models.lifecycle.train_fp32`` and ``build_variants`` compute; these tasks persist
the result for a resume, and log it.
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from quantrec.models.baselines import Baselines
from quantrec.models.lifecycle import (
    Candidate,
    Lineage,
    Partitions,
    Trained,
    TrainingPlan,
    build_variants,
    fit_window_baselines,
    plan_training,
    train_fp32,
)
from quantrec.models.names import Tag
from quantrec.models.plan import PrecisionPlan
from quantrec.tasks.config import QuantrecConfig
from quantrec.tasks.settings import pause_point, quantrec_home
from quantrec.tasks.stage_store import StageStore, resume_stage, stage_key, training_plan_dict
from quantrec.tasks.tracking import (
    connect,
    dataset_entity,
    flatten,
    load_version,
    log_dataset,
    log_metrics,
    log_params,
    mlflow_task,
    stage_timer,
)


@task(name="plan-training", cache_policy=NO_CACHE)
def plan_candidate_training(
    partitions: Partitions, parent: Lineage | None, config: QuantrecConfig, drift_level: str
) -> TrainingPlan:
    """Continue the model line's latest fp32 parent on the new days, or retrain on the
    window (``models.lifecycle.plan_training``)."""
    plan = plan_training(
        partitions.run_date,
        partitions.window,
        mode=config.training.mode,
        full_retrain_days=config.training.full_retrain_days,
        parent=parent,
        drift_level=drift_level,
    )
    get_run_logger().info("training %s on %d day(s): %s", plan.mode, len(plan.days), plan.reason)
    return plan


@task(name="train-fp32", cache_policy=NO_CACHE)
def train_candidate(
    partitions: Partitions,
    plan: TrainingPlan,
    config: QuantrecConfig,
    run_key: str,
    run_id: str,
    force: bool = False,
) -> Trained:
    """Train the fp32 DLRM on the plan's days, deterministically, from scratch or from the
    champion's parent.

    Pure compute (nothing is logged here): the result is kept in the home's stage store
    under the run's identity and the training plan (``tasks.stage_store``), so a rerun after
    a crash resumes it (``force`` trains again); ``record_training`` logs it, whether it
    was computed now or by a run that crashed later.
    """
    day_lake = quantrec_home().day_lake()
    paths = [day_lake.path(day) for day in plan.days]
    store, key = StageStore(), stage_key(run_key, training_plan_dict(plan))
    if not force:
        resumed = resume_stage(
            "training",
            lambda: store.load_trained(
                key,
                holdout_path=paths[-1],
                holdout_fraction=config.search.holdout_fraction,
                seed=config.training.seed,
            ),
        )
        if resumed is not None:
            get_run_logger().info("training resumed from run %s", resumed.computed_by)
            return resumed
    warm = load_version(config.registry.model_name, plan.warm_from) if plan.warm_from else None
    pause_point("train")
    trained = train_fp32(
        paths,
        partitions.schema,
        model=config.model,
        training=config.training,
        holdout_fraction=config.search.holdout_fraction,
        warm_from=warm,
    )
    trained.computed_by, trained.plan = run_id, plan
    store.save_trained(key, trained)
    get_run_logger().info(
        "trained on %d rows at %.0f samples/s", trained.rows, trained.report.samples_per_s
    )
    return trained


@mlflow_task("record-training")
def record_training(
    trained: Trained, partitions: Partitions, config: QuantrecConfig, run_id: str
) -> None:
    """Log the training parameters, dataset, throughput and stage time to the run."""
    home, client = connect()
    log_params(
        client,
        run_id,
        flatten("", {"model": config.model.model_dump(), "training": config.training.model_dump()}),
    )
    window = trained.plan.days if trained.plan else partitions.window
    log_dataset(
        client,
        run_id,
        dataset_entity(
            trained.sample,
            rows=trained.rows,
            name=f"window {window[0]}..{window[-1]}",
            source=str(home.lake),
            digest=partitions.window_digest(),
            label=partitions.schema.label,
        ),
        context="training",
    )
    log_metrics(
        client,
        run_id,
        {
            "train.rows": trained.rows,
            "search.holdout_rows": len(trained.holdout),
            "train.samples_per_s": trained.report.samples_per_s,
            "train.final_loss": trained.report.final_loss,
            "train.seconds": trained.report.seconds,
            "train.epochs": trained.report.epochs,
            "train.best_epoch": trained.report.best_epoch,
            # 1: the optimizers resumed the parent run's state (models.train, step 4).
            "train.optimizer_resumed": float(trained.report.resumed),
            "model.embedding_dim": trained.model.architecture()["embedding_dim"],
            "time.train_s": trained.seconds,
        },
    )
    if trained.report.exchange_bytes_per_step is not None:  # trained on torchrun ranks
        log_metrics(
            client,
            run_id,
            {"train.exchange_bytes_per_step": trained.report.exchange_bytes_per_step},
        )
    if trained.plan is not None:
        client.set_tag(run_id, Tag.TRAINING_MODE, trained.plan.mode)
        client.set_tag(run_id, Tag.TRAINING_REASON, trained.plan.reason[:5000])
        log_metrics(client, run_id, {"train.days": len(trained.plan.days)})
    if trained.computed_by != run_id:
        client.set_tag(run_id, Tag.RESUMED_TRAIN, trained.computed_by)


@task(name="fit-baselines", cache_policy=NO_CACHE)
def fit_run_baselines(
    trained: Trained, partitions: Partitions, config: QuantrecConfig, run_id: str
) -> Baselines:
    """The base rate and the logistic regression every candidate must beat, fitted on the
    window's rows; their choices are logged (``baselines.json``)."""
    home, client = connect()
    day_lake = home.day_lake()
    with stage_timer(client, run_id, "baselines"):
        baselines = fit_window_baselines(
            [day_lake.path(day) for day in partitions.window],
            trained,
            holdout_fraction=config.search.holdout_fraction,
            seed=config.training.seed,
        )
    client.log_dict(run_id, baselines.to_dict(), "baselines.json")
    get_run_logger().info(
        "baselines: base rate %.4f; %s",
        baselines.base_rate,
        baselines.logistic.reason if baselines.logistic else baselines.note,
    )
    return baselines


@task(name="quantize", cache_policy=NO_CACHE)
def quantize_variants(
    trained: Trained, plan: PrecisionPlan, run_id: str, threads: int
) -> Candidate:
    """fp32, fp16 and int8 everywhere, and the precision plan's variant (``searched``),
    re-calibrated on the held-out rows."""
    _, client = connect()
    with stage_timer(client, run_id, "quantize"):
        candidate = build_variants(trained, plan, threads=threads)
    log_metrics(client, run_id, {f"{n}.bytes": size for n, size in candidate.bytes.items()})
    return candidate
