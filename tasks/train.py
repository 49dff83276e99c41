"""Training stages: fit the fp32 candidate on the window, derive its low-precision variants."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from models.batch import Batch, batch_from_frame
from models.dlrm import DLRM
from models.plan import PrecisionPlan
from models.quantize import model_bytes, uniform_plan
from models.train import TrainReport, torch_threads, train_dlrm
from tasks.config import QuantrecConfig
from tasks.data import Partitions, lake, log_dataset
from tasks.tracking import connect, flatten, log_metrics, log_params, stage_timer

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


def split_holdout(days: list[pd.DataFrame], *, fraction: float,
                  seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows, held-out rows) of a window given day by day, oldest first.

    A seeded ``fraction`` of the last day is held out: the freshest rows the parent never
    trained on, where the precision search measures NE and calibrates.
    """
    last = days[-1]
    held = np.zeros(len(last), dtype=bool)
    rng = np.random.default_rng(seed)
    held[rng.choice(len(last), size=max(1, round(fraction * len(last))), replace=False)] = True
    training = pd.concat([*days[:-1], last[~held]], ignore_index=True)
    return training, last[held].reset_index(drop=True)


@task(name="train-fp32", cache_policy=NO_CACHE)
def train_candidate(partitions: Partitions, config: QuantrecConfig, run_id: str) -> Trained:
    """Train the fp32 DLRM on the window before the run date, deterministically."""
    _, client = connect()
    day_lake = lake()
    training = config.training
    log_params(client, run_id, flatten("", {"model": config.model.model_dump(),
                                            "training": training.model_dump()}))
    with stage_timer(client, run_id, "train"):
        frame, held = split_holdout(
            [day_lake.read(day) for day in partitions.window],
            fraction=config.search.holdout_fraction,
            seed=training.seed,
        )
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
        "search.holdout_rows": len(held),
        "train.samples_per_s": report.samples_per_s,
        "train.final_loss": report.final_loss,
        "train.seconds": report.seconds,
    })
    get_run_logger().info(
        "trained on %d rows at %.0f samples/s", len(batch), report.samples_per_s
    )
    model.eval()
    return Trained(model=model, report=report, holdout=batch_from_frame(held, partitions.schema))


@task(name="quantize", cache_policy=NO_CACHE)
def quantize_variants(trained: Trained, plan: PrecisionPlan, run_id: str) -> Candidate:
    """fp32, fp16 and int8 everywhere, and the precision plan's variant (``searched``).

    Static recipes in the plan calibrate on the held-out rows, so a reused plan is
    re-calibrated on the freshest data.
    """
    _, client = connect()
    model = trained.model
    with stage_timer(client, run_id, "quantize"):
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
