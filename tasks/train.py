"""Training stages: fit the fp32 candidate on the window, derive its low-precision variants."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from quantrec.models.batch import Batch, batch_from_frame
from quantrec.models.dlrm import DLRM
from quantrec.models.plan import PrecisionPlan
from quantrec.models.quantize import model_bytes, uniform_plan
from quantrec.models.train import TrainReport, torch_threads, train_dlrm
from quantrec.tasks.config import QuantrecConfig
from quantrec.models.stream import WindowStream, holdout_mask, read_holdout
from quantrec.tasks.data import Partitions, dataset_entity, lake, log_dataset_entity
from quantrec.tasks.identity import pause_point, stage_cache_key
from quantrec.tasks.tracking import connect, flatten, log_metrics, log_params, stage_timer

PARENT = "fp32"
SEARCHED = "searched"


@dataclass
class Candidate:
    """The run date's fp32 model and the variants derived from it, by name."""

    variants: dict[str, DLRM]
    bytes: dict[str, int]
    plans: dict[str, PrecisionPlan]
    train_samples_per_s: float


@dataclass
class Trained:
    """The fp32 parent, how its training went, and the recent rows it never saw."""

    model: DLRM
    report: TrainReport
    holdout: Batch
    rows: int = 0
    seconds: float = 0.0  # wall time of the whole stage: reading, training
    computed_by: str = ""  # MLflow run that computed it (another one when resumed)
    dataset: object = None  # MLflow dataset entity of the training window


def split_holdout(days: list[pd.DataFrame], *, fraction: float,
                  seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows, held-out rows) of a window given day by day, oldest first.

    A seeded ``fraction`` of the last day is held out: the freshest rows the parent never
    trained on, where the precision search measures NE and calibrates.
    """
    last = days[-1]
    held = holdout_mask(len(last), fraction=fraction, seed=seed)
    training = pd.concat([*days[:-1], last[~held]], ignore_index=True)
    return training, last[held].reset_index(drop=True)


@task(name="train-fp32", cache_key_fn=stage_cache_key("train"), persist_result=True,
      result_storage_key="quantrec-train-{parameters[run_key]}")
def train_candidate(partitions: Partitions, config: QuantrecConfig, run_key: str,
                    run_id: str) -> Trained:
    """Train the fp32 DLRM on the window before the run date, deterministically.

    Pure compute (nothing is logged here): the result is persisted under ``run_key``, and
    ``record_training`` logs it, whether it was computed now or by a run that crashed later.
    """
    day_lake = lake()
    training = config.training
    started = time.perf_counter()
    paths = [day_lake.path(day) for day in partitions.window]
    # The window streams from its day files (memory does not grow with the window); the
    # seeded held-out share of the last day is excluded and kept for search and calibration.
    mask, held = read_holdout(paths[-1], fraction=config.search.holdout_fraction,
                              seed=training.seed)
    stream = WindowStream(paths, partitions.schema, exclude={paths[-1]: mask})
    dataset = window_dataset(
        held, rows=stream.rows,
        name=f"window {partitions.window[0]}..{partitions.window[-1]}",
        source=str(day_lake.path(partitions.window[0]).parent.parent),
        digest=partitions.window_digest(),
        label=partitions.schema.label,
    )
    torch.manual_seed(training.seed)
    model = DLRM.from_schema(
        partitions.schema,
        embedding_dim=config.model.embedding_dim,
        bottom_mlp=config.model.bottom_mlp,
        top_mlp=config.model.top_mlp,
    )
    pause_point("train")
    with torch_threads(training.threads):
        report = train_dlrm(
            model,
            stream,
            epochs=training.epochs,
            batch_size=training.batch_size,
            learning_rate=training.learning_rate,
            seed=training.seed,
            sparse_optimizer=training.sparse_optimizer,
            sparse_learning_rate=training.sparse_learning_rate,
            fused=training.fused,
        )
    model.eval()
    get_run_logger().info("trained on %d rows at %.0f samples/s", stream.rows,
                          report.samples_per_s)
    return Trained(model=model, report=report,
                   holdout=batch_from_frame(held, partitions.schema),
                   rows=stream.rows, seconds=time.perf_counter() - started, computed_by=run_id,
                   dataset=dataset)


def window_dataset(sample: pd.DataFrame, *, rows: int, name: str, source: str, digest: str,
                   label: str):
    """The MLflow dataset entity of a streamed window: schema from a sample of its rows,
    the row count of the whole window (it is never loaded at once)."""
    from mlflow.entities import Dataset

    entity = dataset_entity(sample, name=name, source=source, digest=digest, label=label)
    return Dataset(name=entity.name, digest=entity.digest, source_type=entity.source_type,
                   source=entity.source, schema=entity.schema,
                   profile=json.dumps({"num_rows": rows,
                                       "num_elements": rows * sample.shape[1]}))


@task(name="record-training", cache_policy=NO_CACHE, retries=3,
      retry_delay_seconds=exponential_backoff(backoff_factor=2), retry_jitter_factor=0.5)
def record_training(trained: Trained, config: QuantrecConfig, run_id: str) -> None:
    """Log the training parameters, dataset, throughput and stage time to the run."""
    _, client = connect()
    log_params(client, run_id, flatten("", {"model": config.model.model_dump(),
                                            "training": config.training.model_dump()}))
    log_dataset_entity(client, run_id, trained.dataset, context="training")
    log_metrics(client, run_id, {
        "train.rows": trained.rows,
        "search.holdout_rows": len(trained.holdout),
        "train.samples_per_s": trained.report.samples_per_s,
        "train.final_loss": trained.report.final_loss,
        "train.seconds": trained.report.seconds,
        "time.train_s": trained.seconds,
    })
    if trained.computed_by != run_id:
        client.set_tag(run_id, "quantrec.resumed.train", trained.computed_by)


@task(name="release-stage-results", cache_policy=NO_CACHE)
def release_stage_results(run_key: str, search_key: str) -> None:
    """Delete the persisted training and search results of a finished run: a rerun of a
    finished identity reuses its record, so they would only take disk (a model each)."""
    from prefect.settings import PREFECT_RESULTS_LOCAL_STORAGE_PATH

    folder = Path(PREFECT_RESULTS_LOCAL_STORAGE_PATH.value())
    for name in (f"quantrec-train-{run_key}", f"quantrec-search-{search_key}"):
        (folder / name).unlink(missing_ok=True)


@task(name="quantize", cache_policy=NO_CACHE)
def quantize_variants(trained: Trained, plan: PrecisionPlan, run_id: str,
                      threads: int | None = None) -> Candidate:
    """fp32, fp16 and int8 everywhere, and the precision plan's variant (``searched``).

    Static recipes in the plan calibrate on the held-out rows, so a reused plan is
    re-calibrated on the freshest data.
    """
    _, client = connect()
    model = trained.model
    with stage_timer(client, run_id, "quantize"), torch_threads(threads):
        plans = {
            PARENT: PrecisionPlan.from_model(model),
            "fp16": PrecisionPlan.from_precisions(uniform_plan(model, "fp16")),
            "int8": PrecisionPlan.from_precisions(uniform_plan(model, "int8")),
            SEARCHED: plan,
        }
        variants = {
            name: model if name == PARENT else recipe.apply(model, calibration=trained.holdout)
            for name, recipe in plans.items()
        }
    sizes = {name: model_bytes(m) for name, m in variants.items()}
    log_metrics(client, run_id, {f"{name}.bytes": size for name, size in sizes.items()})
    return Candidate(
        variants=variants,
        bytes=sizes,
        plans=plans,
        train_samples_per_s=trained.report.samples_per_s,
    )
