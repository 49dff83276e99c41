"""Evaluation stages: score every variant and the champion on the run date, then gate."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from models.batch import batch_from_frame
from models.gate import Decision, decide
from models.metrics import Metrics
from models.scorer import score
from tasks.config import QuantrecConfig
from tasks.data import Partitions, lake, log_dataset
from tasks.registry import Champion
from tasks.tracking import connect, flatten, log_metrics, stage_timer
from tasks.train import PARENT, Candidate

CHAMPION_KEY = "champion"


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_variants(
    partitions: Partitions,
    candidate: Candidate,
    champion: Champion | None,
    config: QuantrecConfig,
    run_id: str,
) -> dict[str, Metrics]:
    """NE, AUC, log loss and calibration of each variant and the champion, same rows."""
    _, client = connect()
    day_lake = lake()
    batch_size = config.evaluation.batch_size
    with stage_timer(client, run_id, "evaluate"):
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
        results = {
            name: score(model, batch, batch_size=batch_size)
            for name, model in candidate.variants.items()
        }
        if champion is not None:
            champion_batch = batch_from_frame(frame, champion.loaded.schema)
            results[CHAMPION_KEY] = score(
                champion.loaded.model, champion_batch, batch_size=batch_size
            )
    log_metrics(client, run_id, flatten("", {n: m.to_dict() for n, m in results.items()}))
    return results


@task(name="gate", cache_policy=NO_CACHE)
def decide_promotion(
    validation: dict, metrics: dict[str, Metrics], sizes: dict[str, int],
    config: QuantrecConfig, run_id: str,
) -> Decision:
    """Apply the gate and write the decision (JSON artifact and run tags), pass or fail.

    Low-precision variants are preferred smallest first; fp32 comes last, as a fallback.
    """
    _, client = connect()
    gate = config.gate
    candidates = {n: m for n, m in metrics.items() if n != CHAMPION_KEY}
    low_precision = sorted((n for n in candidates if n != PARENT), key=lambda n: sizes[n])
    decision = decide(
        data_valid=validation["passed"],
        candidates=candidates,
        parent=PARENT,
        champion=metrics.get(CHAMPION_KEY),
        quantization_ne_budget_rel=gate.quantization_ne_budget_rel,
        champion_ne_epsilon_rel=gate.champion_ne_epsilon_rel,
        preference=[*low_precision, *([PARENT] if gate.allow_fp32_fallback else [])],
    )
    record_decision(client, run_id, decision)
    return decision


def record_decision(client, run_id: str, decision: Decision) -> None:
    client.log_dict(run_id, decision.to_dict(), "decision.json")
    client.set_tag(run_id, "quantrec.decision", decision.outcome)
    client.set_tag(run_id, "quantrec.promoted_variant", decision.promoted or "none")
    client.set_tag(run_id, "quantrec.decision_reason", decision.reason[:5000])
    for variant, checks in decision.checks.items():
        log_metrics(client, run_id, {
            f"gate.{variant}.{c.name}": c.value for c in checks if c.value is not None
        })
