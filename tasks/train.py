"""Training stages: fit the fp32 candidate on the window, derive its low-precision variants."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from models.batch import batch_from_frame
from models.dlrm import DLRM
from models.quantize import model_bytes, quantize_int8
from models.train import TrainReport, torch_threads, train_dlrm
from tasks.config import QuantrecConfig
from tasks.data import Partitions, lake, log_dataset
from tasks.tracking import connect, flatten, log_metrics, log_params, stage_timer

PARENT = "fp32"


@dataclass
class Candidate:
    """The run date's fp32 model and the variants quantized from it, by name."""

    variants: dict[str, DLRM]
    bytes: dict[str, int]
    train_samples_per_s: float


@dataclass
class Trained:
    model: DLRM
    report: TrainReport


@task(name="train-fp32", cache_policy=NO_CACHE)
def train_candidate(partitions: Partitions, config: QuantrecConfig, run_id: str) -> Trained:
    """Train the fp32 DLRM on the window before the run date, deterministically."""
    _, client = connect()
    day_lake = lake()
    training = config.training
    log_params(client, run_id, flatten("", {"model": config.model.model_dump(),
                                            "training": training.model_dump()}))
    with stage_timer(client, run_id, "train"):
        frame = day_lake.read_days(list(partitions.window))
        log_dataset(
            client, run_id, frame,
            name=f"window {partitions.window[0]}..{partitions.window[-1]}",
            source=str(day_lake.path(partitions.window[0]).parent.parent),
            digest=partitions.window_digest(),
            context="training",
            label=partitions.schema.label,
        )
        batch = batch_from_frame(frame, partitions.schema)
        torch.manual_seed(training.seed)
        model = DLRM.from_schema(
            partitions.schema,
            embedding_dim=config.model.embedding_dim,
            bottom_mlp=config.model.bottom_mlp,
            top_mlp=config.model.top_mlp,
        )
        with torch_threads(training.threads):
            report = train_dlrm(
                model,
                batch,
                epochs=training.epochs,
                batch_size=training.batch_size,
                learning_rate=training.learning_rate,
                seed=training.seed,
            )
    log_metrics(client, run_id, {
        "train.rows": len(batch),
        "train.samples_per_s": report.samples_per_s,
        "train.final_loss": report.final_loss,
        "train.seconds": report.seconds,
    })
    get_run_logger().info(
        "trained on %d rows at %.0f samples/s", len(batch), report.samples_per_s
    )
    model.eval()
    return Trained(model=model, report=report)


@task(name="quantize", cache_policy=NO_CACHE)
def quantize_variants(trained: Trained, run_id: str) -> Candidate:
    """The fp32 parent plus its int8 variant (dynamic int8 MLPs, row-wise int8 tables)."""
    _, client = connect()
    model = trained.model
    with stage_timer(client, run_id, "quantize"):
        variants = {PARENT: model, "int8": quantize_int8(model)}
    sizes = {name: model_bytes(m) for name, m in variants.items()}
    log_metrics(client, run_id, {f"{name}.bytes": size for name, size in sizes.items()})
    return Candidate(
        variants=variants,
        bytes=sizes,
        train_samples_per_s=trained.report.samples_per_s,
    )
