"""Precision-plan stage: search a plan per layer and per table, or reuse the last one.

A search is the expensive part (every unit at every candidate precision); a plan found on
one day is reused on the next ones, re-calibrated on fresh rows, until its variant fails
the gate or a search is forced (``quantrec search``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date

import mlflow
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from quantrec.models.plan import PrecisionPlan
from quantrec.models.search import Budget, SearchResult, search_precision_plan
from quantrec.models.train import torch_threads
from quantrec.tasks.config import QuantrecConfig
from quantrec.tasks.report import pareto_figure
from quantrec.tasks.tracking import RUN_DATE_TAG, connect, log_metrics
from quantrec.tasks.identity import stage_cache_key
from quantrec.tasks.train import Trained

PLAN_SOURCE_TAG = "quantrec.plan_source"
SEARCHED_VERDICT_TAG = "quantrec.searched_verdict"
PLAN_ARTIFACT = "search/plan.json"


@dataclass
class PlanChoice:
    """The plan the searched variant runs and where it came from."""

    plan: PrecisionPlan
    source: str  # "searched" or "reused"
    reason: str
    result: SearchResult | None = None
    seconds: float = 0.0
    computed_by: str = ""  # MLflow run that computed it (another one when resumed)


def previous_plan(client, experiment: str, run_date: date) -> tuple[PrecisionPlan, dict] | None:
    """The plan of the latest earlier run that recorded one, with that run's tags."""
    experiment_ = client.get_experiment_by_name(experiment)
    if experiment_ is None:
        return None
    runs = client.search_runs(
        [experiment_.experiment_id],
        filter_string=f"tags.`{PLAN_SOURCE_TAG}` != ''",
        max_results=1000,
    )
    earlier = [r for r in runs if r.data.tags.get(RUN_DATE_TAG, "") < run_date.isoformat()]
    if not earlier:
        return None
    latest = max(earlier, key=lambda r: (r.data.tags[RUN_DATE_TAG], r.info.start_time))
    text = mlflow.artifacts.load_text(f"runs:/{latest.info.run_id}/{PLAN_ARTIFACT}")
    return PrecisionPlan.from_json(text), latest.data.tags


def why_search(previous: tuple[PrecisionPlan, dict] | None, *, reuse: bool, force: bool) -> str | None:
    """Why a search must run today, or None when the previous plan may be reused."""
    if force:
        return "search forced"
    if not reuse:
        return "search.reuse_plan is off"
    if previous is None:
        return "no earlier plan"
    verdict = previous[1].get(SEARCHED_VERDICT_TAG)
    if verdict == "rejected":
        return f"the plan's variant failed the gate on {previous[1][RUN_DATE_TAG]}"
    return None


@task(name="precision-plan", cache_key_fn=stage_cache_key("search"), persist_result=True,
      result_storage_key="quantrec-search-{parameters[run_key]}")
def choose_precision_plan(
    trained: Trained, run_date: date, config: QuantrecConfig, run_key: str, run_id: str,
    force: bool = False,
) -> PlanChoice:
    """Search a plan on the held-out rows, or reuse the last one.

    Its result is persisted under ``run_key`` (a forced search is part of the key);
    ``record_plan`` logs it.
    """
    _, client = connect()
    started = time.perf_counter()
    previous = previous_plan(client, config.registry.experiment, run_date)
    reason = why_search(previous, reuse=config.search.reuse_plan, force=force)
    if reason is None:
        plan, tags = previous
        choice = PlanChoice(plan=plan, source="reused",
                            reason=f"reused the plan searched for {tags[RUN_DATE_TAG]}")
    else:
        # Half the held-out rows to search on, half to confirm the finalists: a plan that
        # passes the budget on the rows it was picked on can pass by noise.
        half = len(trained.holdout) // 2
        with torch_threads(config.training.threads):
            result = search_precision_plan(
                trained.model,
                trained.holdout.slice(0, half),
                calibration=trained.holdout,
                confirmation=trained.holdout.slice(half, len(trained.holdout)),
                budget=Budget(limit=config.gate.quantization_ne_budget_rel),
                linear_candidates=config.search.linear_candidates,
                table_candidates=config.search.table_candidates,
                batch_size=config.evaluation.batch_size,
            )
        choice = PlanChoice(plan=result.chosen, source="searched",
                            reason=f"{reason}; {result.reason}", result=result)
    choice.seconds = time.perf_counter() - started
    choice.computed_by = run_id
    get_run_logger().info("precision plan %s: %s", choice.source, choice.reason)
    return choice


@task(name="record-plan", cache_policy=NO_CACHE, retries=3,
      retry_delay_seconds=exponential_backoff(backoff_factor=2), retry_jitter_factor=0.5)
def record_plan(choice: PlanChoice, run_id: str) -> None:
    """Log the plan (tomorrow's run may reuse it), its source and the search's evidence."""
    _, client = connect()
    client.log_text(run_id, choice.plan.to_json(), PLAN_ARTIFACT)
    client.set_tag(run_id, PLAN_SOURCE_TAG, choice.source)
    client.set_tag(run_id, "quantrec.plan_reason", choice.reason[:5000])
    log_metrics(client, run_id, {"time.search_s": choice.seconds})
    if choice.result is not None:
        record_search(client, run_id, choice.result)
    if choice.computed_by != run_id:
        client.set_tag(run_id, "quantrec.resumed.search", choice.computed_by)


def record_search(client, run_id: str, result: SearchResult) -> None:
    """The search's evidence: every candidate, the sensitivity table, a Pareto chart."""
    client.log_dict(run_id, result.to_dict(), "search/search.json")
    log_metrics(client, run_id, {
        "search.ne_fp32_holdout": result.ne_fp32,
        "search.chosen_ne_delta_rel": result.chosen.ne_delta_rel,
        "search.chosen_bytes": result.chosen.bytes,
        "search.candidates": len(result.evaluated),
    })
    client.log_figure(run_id, pareto_figure(result), "search/pareto.png")
