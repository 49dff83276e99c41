"""Evaluation stages: score every variant and the champion on the run date, then gate."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from quantrec.models.batch import batch_from_frame
from quantrec.models.gate import Decision, decide
from quantrec.models.metrics import MetricError, Metrics, compute_metrics, normalized_entropy
from quantrec.models.scorer import predict_proba
from quantrec.models.slices import head_ids, slice_masks
from quantrec.models.train import torch_threads
from quantrec.tasks.config import QuantrecConfig
from quantrec.tasks.data import Partitions, lake, log_dataset
from quantrec.tasks.registry import Champion
from quantrec.tasks.tracking import connect, flatten, log_metrics, stage_timer
from quantrec.tasks.train import PARENT, Candidate

CHAMPION_KEY = "champion"
# Which raw columns are users and items when the gate policy does not say: per feed.
SLICE_ROLES = {"synthetic": ("cat_3", "cat_2"), "movielens": ("user_id", "item_id")}


@dataclass
class Evaluation:
    """Every variant's (and the champion's) scores on the run date's rows."""

    metrics: dict[str, Metrics]
    predictions: dict[str, np.ndarray]  # name -> click probabilities, float64 (B,)
    labels: np.ndarray  # float64 (B,) 0/1
    slices: dict[str, np.ndarray]  # slice name -> bool (B,)

    def slice_table(self) -> pd.DataFrame:
        """NE of each model on each slice: columns slice, variant, rows, ne."""
        rows = []
        for name, mask in self.slices.items():
            for variant, probs in self.predictions.items():
                try:
                    ne = normalized_entropy(self.labels[mask], probs[mask])
                except MetricError:
                    ne = float("nan")  # a one-class slice has no NE
                rows.append((name, variant, int(mask.sum()), ne))
        return pd.DataFrame(rows, columns=["slice", "variant", "rows", "ne"])


def slice_roles(config: QuantrecConfig) -> tuple[str | None, str | None]:
    """(user column, item column): the policy's, else the feed's known ones."""
    gate = config.gate
    default = SLICE_ROLES.get(config.feed.name, (None, None))
    return gate.user_column or default[0], gate.item_column or default[1]


def _slices(frame: pd.DataFrame, partitions: Partitions, config: QuantrecConfig) -> dict:
    user, item = slice_roles(config)
    user = user if user in frame.columns else None
    item = item if item in frame.columns else None
    columns = [c for c in (user, item) if c]
    window = pd.concat(
        [pd.read_parquet(lake().path(d), columns=columns) for d in partitions.window],
        ignore_index=True) if columns else pd.DataFrame()
    return slice_masks(
        frame,
        user_column=user,
        item_column=item,
        seen_users=window[user].explode().dropna().unique() if user else None,
        head_items=head_ids(window[item], config.gate.head_traffic_share) if item else None,
        slice_columns=config.gate.slice_columns,
        max_values=config.gate.max_slice_values,
    )


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_variants(
    partitions: Partitions,
    candidate: Candidate,
    champion: Champion | None,
    config: QuantrecConfig,
    run_id: str,
) -> Evaluation:
    """NE, AUC, log loss and calibration of each variant and the champion on the same
    rows, overall and per slice."""
    _, client = connect()
    day_lake = lake()
    batch_size = config.evaluation.batch_size
    with stage_timer(client, run_id, "evaluate"), torch_threads(config.training.threads):
        frame = day_lake.read(partitions.run_date)
        log_dataset(
            client, run_id, frame,
            name=f"day {partitions.run_date}",
            source=str(day_lake.path(partitions.run_date)),
            digest=partitions.digests[partitions.run_date][:16],
            context="evaluation",
            label=partitions.schema.label,
        )
        batch = batch_from_frame(frame, partitions.schema)
        labels = batch.labels.double().numpy()
        predictions = {
            name: predict_proba(model, batch, batch_size=batch_size)
            for name, model in candidate.variants.items()
        }
        if champion is not None:
            champion_batch = batch_from_frame(frame, champion.loaded.schema)
            predictions[CHAMPION_KEY] = predict_proba(
                champion.loaded.model, champion_batch, batch_size=batch_size)
        evaluation = Evaluation(
            metrics={n: compute_metrics(labels, p) for n, p in predictions.items()},
            predictions=predictions, labels=labels,
            slices=_slices(frame, partitions, config),
        )
    log_metrics(client, run_id, flatten("", {n: m.to_dict() for n, m in evaluation.metrics.items()}))
    table = evaluation.slice_table()
    log_metrics(client, run_id, {
        f"slice.{row.slice}.{row.variant}.ne".replace("=", "_"): row.ne
        for row in table.itertuples(index=False)
    })
    if not table.empty:
        client.log_text(run_id, table.to_csv(index=False), "evaluation/slices.csv")
    return evaluation


@task(name="gate", cache_policy=NO_CACHE)
def decide_promotion(
    validation: dict, evaluation: Evaluation, sizes: dict[str, int],
    config: QuantrecConfig, drift_level: str, run_id: str,
) -> Decision:
    """Apply the gate and write the decision (JSON, text and run tags), pass or fail.

    Low-precision variants are preferred smallest first; fp32 comes last, as a fallback.
    The drift level tightens the budget (warn) or sends the winner to review (severe).
    """
    _, client = connect()
    candidates = [n for n in evaluation.predictions if n != CHAMPION_KEY]
    low_precision = sorted((n for n in candidates if n != PARENT), key=lambda n: sizes[n])
    decision = decide(
        labels=evaluation.labels,
        predictions={n: evaluation.predictions[n] for n in candidates},
        parent=PARENT,
        champion=evaluation.predictions.get(CHAMPION_KEY),
        preference=[*low_precision, PARENT],
        policy=config.gate,
        slices=evaluation.slices,
        data_valid=validation["passed"],
        drift_level=drift_level,
    )
    record_decision(client, run_id, decision)
    return decision


def record_decision(client, run_id: str, decision: Decision) -> None:
    client.log_dict(run_id, decision.to_dict(), "decision.json")
    client.log_text(run_id, decision.to_text(), "decision.txt")
    client.set_tag(run_id, "quantrec.decision", decision.outcome)
    client.set_tag(run_id, "quantrec.promoted_variant", decision.promoted or "none")
    client.set_tag(run_id, "quantrec.challenger_variant", decision.challenger or "none")
    client.set_tag(run_id, "quantrec.decision_reason", decision.reason[:5000])
    within_noise = [f"{v}:{c.name}" for v, cs in decision.checks.items() for c in cs
                    if getattr(c, "within_noise", None)]
    client.set_tag(run_id, "quantrec.within_noise", ", ".join(within_noise)[:5000] or "none")
    for variant, checks in decision.checks.items():
        log_metrics(client, run_id, {
            f"gate.{variant}.{c.name}": c.value for c in checks if c.value is not None
        })
