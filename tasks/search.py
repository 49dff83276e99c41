"""Precision-plan stage: search a plan per layer and per table, or reuse the last one.

A search is the expensive part (every unit at every candidate precision); a plan found on
one day is reused on the next ones, re-calibrated on fresh rows, until its variant fails
the gate, its realised NE change drifts towards the faithfulness bound, its interval on the
day's held-out rows crosses that bound, the drift is severe, or a search is forced
(``quantrec search``): the policy is ``models.lifecycle.why_search`` and ``reuse_refused``.
"""

from __future__ import annotations

from datetime import date

import mlflow
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from quantrec.models.lifecycle import (
    PlanChoice,
    PreviousPlan,
    Trained,
    reuse_plan,
    reuse_refused,
    search_plan,
    why_search,
)
from quantrec.models.names import DriftLevel, Tag
from quantrec.models.plan import PrecisionPlan
from quantrec.models.plan_record import PREDICTED_METRICS, REALISED_METRIC, realised_delta
from quantrec.models.report_render import pareto_figure
from quantrec.models.search import Faithfulness, SearchResult
from quantrec.tasks.config import QuantrecConfig
from quantrec.tasks.fanout import sensitivity_measure
from quantrec.tasks.stage_store import StageStore, resume_stage, stage_key, training_plan_dict
from quantrec.tasks.tracking import connect, log_metrics, mlflow_task

PLAN_ARTIFACT = "search/plan.json"


def faithfulness(config: QuantrecConfig) -> Faithfulness:
    """The faithfulness bound (default: the gate's budget) with the gate's bootstrap."""
    gate, bound = config.gate, config.search.faithfulness
    return Faithfulness(
        bound=gate.quantization_ne_budget_rel if bound is None else bound,
        samples=gate.bootstrap_samples,
        confidence=gate.confidence,
        seed=gate.bootstrap_seed,
    )


def previous_plan(client, experiment: str, run_date: date) -> PreviousPlan | None:
    """The plan of the latest earlier run that recorded one, with its verdict there."""
    experiment_ = client.get_experiment_by_name(experiment)
    if experiment_ is None:
        return None
    runs = client.search_runs(
        [experiment_.experiment_id],
        filter_string=f"tags.`{Tag.PLAN_SOURCE}` != ''",
        max_results=1000,
    )
    earlier = [
        r
        for r in runs
        if r.data.tags.get(Tag.RUN_DATE, "") < run_date.isoformat()
        and r.data.tags[Tag.PLAN_SOURCE] != "skipped"
    ]
    if not earlier:
        return None
    latest = max(earlier, key=lambda r: (r.data.tags[Tag.RUN_DATE], r.info.start_time))
    text = mlflow.artifacts.load_text(f"runs:/{latest.info.run_id}/{PLAN_ARTIFACT}")
    metrics = latest.data.metrics
    realised = metrics.get(REALISED_METRIC)
    if realised is None:  # runs from before the record: the variants' NE on their date
        realised = realised_delta(
            {v: metrics[f"{v}.ne"] for v in ("fp32", "searched") if f"{v}.ne" in metrics}
        )
    return PreviousPlan(
        plan=PrecisionPlan.from_json(text),
        run_date=latest.data.tags[Tag.RUN_DATE],
        verdict=latest.data.tags.get(Tag.SEARCHED_VERDICT),
        realised_delta=realised,
    )


@task(name="precision-plan", cache_policy=NO_CACHE)
def choose_precision_plan(
    trained: Trained,
    run_date: date,
    config: QuantrecConfig,
    run_key: str,
    run_id: str,
    force: bool = False,
    drift_level: DriftLevel = DriftLevel.OK,
    refresh: bool = False,
) -> PlanChoice:
    """Search a plan on the held-out rows, or reuse the last one.

    Its result is kept in the home's stage store under the run's identity, the training
    plan and the search's flags (``tasks.stage_store``), so a rerun after a crash resumes it
    (``refresh`` chooses again); ``record_plan`` logs it.
    """
    store = StageStore()
    key = stage_key(run_key, training_plan_dict(trained.plan), bool(force), str(drift_level))
    if not refresh:
        resumed = resume_stage("precision plan", lambda: store.load_choice(key))
        if resumed is not None:
            get_run_logger().info("precision plan resumed from run %s", resumed.computed_by)
            return resumed
    choice = _choose(trained, run_date, config, force, drift_level)
    choice.computed_by = run_id
    store.save_choice(key, choice)
    get_run_logger().info("precision plan %s: %s", choice.source, choice.reason)
    return choice


def _choose(
    trained: Trained,
    run_date: date,
    config: QuantrecConfig,
    force: bool,
    drift_level: DriftLevel,
) -> PlanChoice:
    _, client = connect()
    previous = previous_plan(client, config.registry.experiment, run_date)
    bound = faithfulness(config)
    reason = why_search(
        previous,
        reuse=config.search.reuse_plan,
        force=force,
        drift_level=drift_level,
        faithfulness=bound.bound,
        drift_share=config.search.reuse_drift_share,
    )
    threads, batch_size = config.training.threads, config.evaluation.batch_size
    if reason is None:
        choice = reuse_plan(
            previous, trained, faithfulness=bound, batch_size=batch_size, threads=threads
        )
        reason = reuse_refused(choice, bound)
    if reason is not None:
        choice = search_plan(
            trained,
            reason=reason,
            budget_rel=config.gate.quantization_ne_budget_rel,
            linear_candidates=config.search.linear_candidates,
            table_candidates=config.search.table_candidates,
            batch_size=batch_size,
            threads=threads,
            faithfulness=bound,
            measure=sensitivity_measure(config.scale, threads=threads),
        )
    return choice


@mlflow_task("record-plan")
def record_plan(choice: PlanChoice, run_id: str) -> None:
    """Log the plan (tomorrow's run may reuse it), its source and the search's evidence."""
    _, client = connect()
    client.log_text(run_id, choice.plan.to_json(), PLAN_ARTIFACT)
    client.set_tag(run_id, Tag.PLAN_SOURCE, choice.source)
    client.set_tag(run_id, Tag.PLAN_REASON, choice.reason[:5000])
    log_metrics(client, run_id, {"time.search_s": choice.seconds})
    if choice.predicted is not None:
        log_metrics(
            client,
            run_id,
            {name: getattr(choice.predicted, key) for key, name in PREDICTED_METRICS.items()},
        )
    if choice.result is not None and not choice.result.skipped:
        _record_search(client, run_id, choice.result)
    if choice.computed_by != run_id:
        client.set_tag(run_id, Tag.RESUMED_SEARCH, choice.computed_by)


def _record_search(client, run_id: str, result: SearchResult) -> None:
    """The search's evidence: every candidate, the sensitivity table, a Pareto chart."""
    client.log_dict(run_id, result.to_dict(), "search/search.json")
    log_metrics(
        client,
        run_id,
        {
            "search.ne_fp32_holdout": result.ne_fp32,
            "search.chosen_ne_delta_rel": result.chosen.ne_delta_rel,
            "search.chosen_bytes": result.chosen.bytes,
            "search.candidates": len(result.evaluated),
        },
    )
    client.log_figure(run_id, pareto_figure(result), "search/pareto.png")
