"""The daily lifecycle flow: one run date, end to end.

Flows only compose tasks; each stage is one task, so its name, state and timing show in the
Prefect UI. For run date D: ingest the window and D, validate D, measure drift against the
champion's reference, train fp32 on the window, choose the precision plan (searched again
on severe drift), quantize, evaluate everything (and the champion) on D, gate (stricter on
warn; review instead of promotion on severe), register, promote or nominate a challenger,
report.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from prefect import flow

from quantrec.tasks.config import QuantrecConfig
from quantrec.tasks.data import ingest_days, validate_run_date, why_stop
from quantrec.tasks.drift import measure_run_date_drift, save_reference_profile
from quantrec.tasks.evaluate import decide_promotion, evaluate_variants
from quantrec.tasks.identity import code_version, run_date_lock, run_key
from quantrec.tasks.registry import load_champion, register_variants, set_challenger, switch_champion
from quantrec.tasks.report import (
    close_failed_run,
    day_record,
    finished_record,
    open_lifecycle_run,
    publish_reused,
    publish_run_report,
    publish_summary,
    stopped_record,
)
from quantrec.tasks.search import choose_precision_plan, record_plan
from quantrec.tasks.train import (
    quantize_variants,
    record_training,
    release_stage_results,
    train_candidate,
)


def last_complete_day() -> date:
    """What a scheduled run processes: yesterday, in UTC."""
    return datetime.now(timezone.utc).date() - timedelta(days=1)


@flow(name="daily-lifecycle", log_prints=True)
def daily_lifecycle(
    run_date: date | None = None,
    config: QuantrecConfig | None = None,
    force_search: bool = False,
    force: bool = False,
    wait: bool = False,
) -> dict:
    """Run the whole lifecycle for ``run_date`` (default: the last complete day, UTC).

    ``force_search`` searches the precision plan again instead of reusing the last one.
    ``force`` trains and registers again even if this date already ran on the same data,
    configuration and code (otherwise that run's record is returned and nothing is
    registered twice). ``wait`` queues behind a run of the same date instead of refusing.

    Returns the run date's record (see ``tasks.report.day_record``).
    """
    run_date = run_date or last_complete_day()
    config = config or QuantrecConfig()
    with run_date_lock(config.registry.model_name, run_date, wait=wait):
        return _lifecycle(run_date, config, force_search=force_search, force=force)


def _lifecycle(run_date: date, config: QuantrecConfig, *, force_search: bool,
               force: bool) -> dict:
    model_name = config.registry.model_name
    config_json = config.model_dump_json()
    run_id = open_lifecycle_run(run_date, config.registry.experiment, config_json)
    try:
        partitions = ingest_days(run_date, config.training.window_days, config.feed, run_id)
        key = run_key(run_date=run_date, digests=partitions.digests, config_json=config_json,
                      code=code_version())
        done = finished_record(config.registry.experiment, key, run_id)
        if done is not None and not force:
            return publish_reused(done, run_id)
        validation = None if partitions.problem else validate_run_date(partitions, run_id)
        stop = why_stop(partitions, validation, config.training.window_days)
        if stop is not None:
            return publish_summary(stopped_record(run_date, run_id, stop, validation, model_name))
        champion = load_champion(model_name)
        champion_before = champion.version if champion else None
        drift = measure_run_date_drift(partitions, champion, config, run_id)
        # Resumable stages: their results persist under the run's identity (refreshed when
        # forced), so a rerun after a crash does not train or search again.
        trained = train_candidate.with_options(refresh_cache=force or None)(
            partitions, config, key, run_id)
        record_training(trained, config, run_id)
        save_reference_profile(trained, partitions, config, run_id)
        # Severe drift: the reused plan was fitted to a world that is gone; search again.
        search = force_search or drift.level == "severe"
        search_key = f"{key}-{int(search)}"
        plan = choose_precision_plan.with_options(refresh_cache=force or None)(
            trained, run_date, config, search_key, run_id, search)
        record_plan(plan, run_id)
        candidate = quantize_variants(trained, plan.plan, run_id, config.training.threads)
        evaluation = evaluate_variants(partitions, candidate, champion, config, run_id)
        decision = decide_promotion(validation, evaluation, candidate.bytes, config,
                                    drift.level, run_id)
        registered = register_variants(
            run_id=run_id, run_key=key, run_date=run_date, variants=candidate.variants,
            schema=partitions.schema, metrics=evaluation.metrics, sizes=candidate.bytes,
            plans=candidate.plans, decision=decision, model_name=model_name,
            window=partitions.window, window_digest=partitions.window_digest(),
            drift=drift.summary, force=force,
        )
        promoted_version = registered.get(decision.promoted) if decision.promoted else None
        champion_after = switch_champion(model_name, promoted_version, run_id)
        challenger = (set_challenger(model_name, registered[decision.challenger], run_id,
                                     decision.reason) if decision.challenger else None)
        report = publish_run_report(run_date, run_id, decision, drift, evaluation)
        record = publish_summary(day_record(
            run_date=run_date, run_id=run_id, decision=decision,
            metrics=evaluation.metrics, sizes=candidate.bytes, registered=registered,
            champion_before=champion_before, champion_after=champion_after,
            train_samples_per_s=candidate.train_samples_per_s,
            plan_source=plan.source, plan_reason=plan.reason, model_name=model_name,
            drift=drift.summary, challenger_version=challenger, report=report,
        ))
        release_stage_results(key, search_key)
        return record
    except BaseException:
        close_failed_run(run_id)
        raise
