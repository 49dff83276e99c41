"""The daily lifecycle flow: one run date, end to end.

Flows only compose tasks; each stage is one task, so its name, state and timing show in the
Prefect UI, and every policy between stages is in the core (``models.lifecycle``). For run
date D: ingest the window and D, validate D, measure drift against the champion's
reference, train fp32 on the window, choose the precision plan, quantize, evaluate
everything (and the champion) on D, gate, register, promote or nominate a challenger,
plan and register a two-stage pipeline (with ``[pipeline] enabled``), report.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from prefect import flow
from prefect.runtime import flow_run

from quantrec.flows.errors import is_stop
from quantrec.models.lifecycle import DayOutcome, why_stop
from quantrec.models.pipeline_plan import pipeline_model_name
from quantrec.models.plan_record import plan_record
from quantrec.tasks.concurrency import run_slot
from quantrec.tasks.config import QuantrecConfig
from quantrec.tasks.data import ingest_days, validate_run_date
from quantrec.tasks.drift import measure_run_date_drift, save_reference_profile
from quantrec.tasks.evaluate import decide_promotion, evaluate_variants, record_stop
from quantrec.tasks.lifecycle import publish_lifecycle_report
from quantrec.tasks.pipeline import plan_two_stage, register_pipeline
from quantrec.tasks.registry import (
    latest_parent,
    load_champion,
    register_variants,
    set_challenger,
    switch_champion,
)
from quantrec.tasks.report import (
    close_failed_run,
    finished_outcome,
    open_lifecycle_run,
    outcome_state,
    publish_reused,
    publish_run_report,
    publish_summary,
)
from quantrec.tasks.retention import apply_retention
from quantrec.tasks.search import choose_precision_plan, record_plan
from quantrec.tasks.settings import code_version, run_key
from quantrec.tasks.stage_store import discard_stage_results
from quantrec.tasks.train import (
    fit_run_baselines,
    plan_candidate_training,
    quantize_variants,
    record_training,
    train_candidate,
)


def last_complete_day() -> date:
    """What a scheduled run processes: yesterday, in UTC."""
    return datetime.now(UTC).date() - timedelta(days=1)


def _run_name() -> str:
    """``lifecycle-<run date>``, as the MLflow run of the same date is named."""
    run_date = flow_run.parameters.get("run_date") or last_complete_day()
    return f"lifecycle-{run_date}"


@flow(name="daily-lifecycle", flow_run_name=_run_name, log_prints=True)
def daily_lifecycle(
    run_date: date | None = None,
    config: QuantrecConfig | None = None,
    force_search: bool = False,
    force: bool = False,
    wait: bool = False,
) -> DayOutcome:
    """Run the whole lifecycle for ``run_date`` (default: the last complete day, UTC).

    ``force_search`` searches the precision plan again instead of reusing the last one.
    ``force`` trains and registers again even if this date already ran on the same data,
    configuration and code (otherwise that run's outcome is returned and nothing is
    registered twice). ``wait`` queues behind a run of the same date instead of refusing.

    The flow run ends COMPLETED, its state named after the outcome ("Promoted",
    "Challenger", "Rejected", "Reused") with the reason as its message; calling the flow
    returns the ``DayOutcome``.
    """
    run_date = run_date or last_complete_day()
    config = config or QuantrecConfig()
    # One run of a model and date at a time: the home's file lock, and with a Prefect
    # server its global concurrency limit, which holds across workers and machines.
    with run_slot(config.registry.model_name, run_date, wait=wait):
        return _lifecycle(run_date, config, force_search=force_search, force=force)


def _lifecycle(
    run_date: date, config: QuantrecConfig, *, force_search: bool, force: bool
) -> DayOutcome:
    model_name, config_json = config.registry.model_name, config.model_dump_json()
    run_id = open_lifecycle_run(run_date, config.registry.experiment, config_json)
    try:
        partitions = ingest_days(run_date, config.training.window_days, config.feed, run_id)
        key = run_key(
            run_date=run_date,
            digests=partitions.digests,
            config_json=config_json,
            code=code_version(),
        )
        done = finished_outcome(config.registry.experiment, key, run_id)
        if done is not None and not force:
            return outcome_state(publish_reused(done, run_id))
        validation = None if partitions.problem else validate_run_date(partitions, config, run_id)
        stop = why_stop(partitions, validation, config.training.window_days)
        if stop is not None:
            decision = record_stop(stop, validation, run_id)
            outcome = switch_champion(
                DayOutcome.of_decision(
                    decision,
                    run_date=run_date,
                    model_name=model_name,
                    run_id=run_id,
                    quarantined=validation.quarantined if validation else None,
                )
            )
            return _finish(outcome, config)
        champion = load_champion(model_name)
        drift = measure_run_date_drift(partitions, champion, config, run_id)
        # Resumable stages: their results persist under the run's identity (refreshed when
        # forced), so a rerun after a crash does not train or search again.
        parent = latest_parent(model_name, run_date)
        training = plan_candidate_training(partitions, parent, config, drift.level)
        trained = train_candidate(partitions, training, config, key, run_id, force)
        record_training(trained, partitions, config, run_id)
        save_reference_profile(trained, partitions, config, run_id)
        plan = choose_precision_plan(
            trained, run_date, config, key, run_id, force_search, drift.level, force
        )
        record_plan(plan, run_id)
        candidate = quantize_variants(trained, plan.plan, run_id, config.training.threads)
        baselines = fit_run_baselines(trained, partitions, config, run_id)
        evaluation = evaluate_variants(partitions, candidate, champion, baselines, config, run_id)
        decision = decide_promotion(
            validation, evaluation, candidate.bytes, config, drift.level, run_id
        )
        outcome = DayOutcome.of_decision(
            decision,
            run_date=run_date,
            model_name=model_name,
            run_id=run_id,
            metrics={n: m.to_dict() for n, m in evaluation.metrics.items()},
            bytes=candidate.bytes,
            precisions={n: p.precisions() for n, p in candidate.plans.items()},
            window=partitions.window,
            window_digest=partitions.window_digest(),
            train_samples_per_s=candidate.train_samples_per_s,
            training_mode=training.mode,
            training_reason=training.reason,
            trained_through=training.days[-1].isoformat(),
            full_retrain_date=training.full_retrain_date.isoformat(),
            plan_source=plan.source,
            plan_reason=plan.reason,
            drift=drift.summary,
            **plan_record(plan.predicted, evaluation.metrics),
        )
        outcome = register_variants(
            outcome, candidate.variants, candidate.plans, candidate.schema, key, force
        )
        outcome = switch_champion(outcome)
        if outcome.challenger_variant:
            outcome = set_challenger(outcome)
        if config.pipeline.enabled:
            pipeline = plan_two_stage(partitions, candidate, outcome, config, run_id)
            outcome = register_pipeline(pipeline, candidate, outcome, key, force)
        outcome = publish_run_report(outcome, decision, drift, evaluation, config)
        outcome = _finish(outcome, config)
        discard_stage_results(key)
        return outcome
    except BaseException as err:
        close_failed_run(run_id, stopped=is_stop(err))
        raise


def _finish(outcome: DayOutcome, config: QuantrecConfig):
    outcome = publish_summary(outcome)
    publish_lifecycle_report(config)
    if config.registry.retention:
        apply_retention(config.registry.model_name, config.registry.keep_days)
        if config.pipeline.enabled:
            pipelines = pipeline_model_name(config.registry.model_name)
            apply_retention(pipelines, config.registry.keep_days)
    return outcome_state(outcome)
