"""Evaluation stages: score every variant and the champion on the run date, then gate.

Thin: ``models.evaluation`` scores, ``models.gate`` decides; these tasks read the day, log
the scores and write the decision (JSON, text, run tags).
"""

from __future__ import annotations

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from quantrec.models.baselines import Baselines
from quantrec.models.batch import batch_from_frame
from quantrec.models.evaluation import Evaluation, evaluate, run_date_slices, slice_roles
from quantrec.models.gate import Decision, decide, reject_invalid_data
from quantrec.models.lifecycle import (
    Candidate,
    Champion,
    Partitions,
    Validation,
    promotion_preference,
)
from quantrec.models.names import CHAMPION_KEY, Tag, Variant
from quantrec.models.plan_record import REALISED_METRIC, realised_delta
from quantrec.tasks.config import QuantrecConfig
from quantrec.tasks.tracking import (
    connect,
    dataset_entity,
    flatten,
    log_dataset,
    log_metrics,
    mlflow_task,
    stage_timer,
)

# Rows of the run date whose schema stands for the day in its MLflow dataset record: the
# profile counts every row, but a whole-frame profile of a large day cost seconds a run.
DATASET_SAMPLE_ROWS = 1000


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_variants(
    partitions: Partitions,
    candidate: Candidate,
    champion: Champion | None,
    baselines: Baselines,
    config: QuantrecConfig,
    run_id: str,
) -> Evaluation:
    """NE, AUC, log loss and calibration of each variant and the champion on the same
    rows, overall and per slice, beside the baselines (and the truth, on synthetic days)."""
    home, client = connect()
    day_lake, day, gate = home.day_lake(), partitions.run_date, config.gate
    # The stage's time (time.evaluate_s) is its core alone, reading and scoring the day:
    # what the run logs is tracking, measured apart (tests/benchmarks/bench_overhead.py).
    with stage_timer(client, run_id, "evaluate"):
        frame = day_lake.read(day)
        user, item = slice_roles(partitions.schema, gate.user_column, gate.item_column)
        columns = [c for c in (user, item) if c and c in frame.columns]
        slices = run_date_slices(
            frame,
            (pd.read_parquet(day_lake.path(d), columns=columns) for d in partitions.window),
            user=user,
            item=item,
            head_traffic_share=gate.head_traffic_share,
            slice_columns=gate.slice_columns,
            max_values=gate.max_slice_values,
        )
        evaluation = evaluate(
            batch_from_frame(frame, candidate.schema),
            candidate.variants,
            slices=slices,
            champion=None
            if champion is None
            else (champion.loaded.model, batch_from_frame(frame, champion.loaded.schema)),
            batch_size=config.evaluation.batch_size,
            threads=config.training.threads,
            baselines=baselines,
            truth=_ground_truth(config, day, len(frame)),
        )
    log_dataset(
        client,
        run_id,
        dataset_entity(
            frame.head(DATASET_SAMPLE_ROWS),
            rows=len(frame),
            name=f"day {day}",
            source=str(day_lake.path(day)),
            digest=partitions.digests[day][:16],
            label=partitions.schema.label,
        ),
        context="evaluation",
    )
    log_metrics(
        client, run_id, flatten("", {n: m.to_dict() for n, m in evaluation.metrics.items()})
    )
    realised = realised_delta({n: m.ne for n, m in evaluation.metrics.items()})
    if realised is not None:  # the searched plan's NE change vs fp32 on D: what it predicted
        log_metrics(client, run_id, {REALISED_METRIC: realised})
    table = evaluation.slice_table()
    log_metrics(
        client,
        run_id,
        {
            f"slice.{row.slice}.{row.variant}.ne".replace("=", "_"): row.ne
            for row in table.itertuples(index=False)
        },
    )
    if not table.empty:
        client.log_text(run_id, table.to_csv(index=False), "evaluation/slices.csv")
    return evaluation


def _ground_truth(config: QuantrecConfig, day, rows: int):
    """The feed's true click probabilities of the day's rows, when it has them (the
    synthetic feed) and they match the partition."""
    source = config.feed.build(day)
    if not hasattr(source, "click_probability"):
        return None
    truth = source.click_probability(day)
    return truth if len(truth) == rows else None


@task(name="gate", cache_policy=NO_CACHE)
def decide_promotion(
    validation: Validation,
    evaluation: Evaluation,
    sizes: dict[str, int],
    config: QuantrecConfig,
    drift_level: str,
    run_id: str,
) -> Decision:
    """Apply the gate and write the decision (JSON, text and run tags), pass or fail.

    The drift level tightens the budget (warn) or sends the winner to review (severe).
    """
    _, client = connect()
    candidates = evaluation.candidates
    with stage_timer(client, run_id, "gate"):
        decision = decide(
            labels=evaluation.labels,
            predictions={n: evaluation.predictions[n] for n in candidates},
            parent=Variant.FP32,
            champion=evaluation.predictions.get(CHAMPION_KEY),
            baselines=evaluation.baselines,
            preference=promotion_preference({n: sizes[n] for n in candidates}),
            policy=config.gate,
            slices=evaluation.slices,
            data_valid=validation.passed,
            drift_level=drift_level,
        )
    _record_decision(client, run_id, decision)
    return decision


@mlflow_task("record-stop")
def record_stop(stop: str, validation: Validation | None, run_id: str) -> Decision:
    """The decision of a run that stops before training (bad or missing data): rejected,
    naming the failed check; the champion stays."""
    _, client = connect()
    check = "data_valid" if validation is not None else "data_available"
    decision = reject_invalid_data(stop, check=check)
    _record_decision(client, run_id, decision)
    return decision


def _record_decision(client, run_id: str, decision: Decision) -> None:
    client.log_dict(run_id, decision.to_dict(), "decision.json")
    client.log_text(run_id, decision.to_text(), "decision.txt")
    client.set_tag(run_id, Tag.DECISION, decision.outcome)
    client.set_tag(run_id, Tag.PROMOTED_VARIANT, decision.promoted or "none")
    client.set_tag(run_id, Tag.CHALLENGER_VARIANT, decision.challenger or "none")
    client.set_tag(run_id, Tag.DECISION_REASON, decision.reason[:5000])
    within_noise = [
        f"{v}:{c.name}" for v, cs in decision.checks.items() for c in cs if c.within_noise
    ]
    client.set_tag(run_id, Tag.WITHIN_NOISE, ", ".join(within_noise)[:5000] or "none")
    for variant, checks in decision.checks.items():
        log_metrics(
            client,
            run_id,
            {f"gate.{variant}.{c.name}": c.value for c in checks if c.value is not None},
        )
