"""The daily pipeline plan: which filter and which K a two-stage pipeline serves with on run
date D, and whether it may serve at all.

1. Queries of D (``day_cases``): every user of D with a click, sampled to ``queries``,
   against the *catalogue*: the item ids seen in the training window (``day_catalogue``),
   each with its item-side columns (``pipeline.item_columns``) from its last row there.
   Relevance is the user's clicks on D, cut to the catalogue (an item new on D is no
   candidate). Every other column comes from the user's first row of D
   (``models.queries``).
2. The filter (``choose_filter``): the smallest low-precision variant the gate passed
   (promoted, challenger or passed), RecPipe's cheap model; the ranker is the run date's
   fp32 parent. No passing variant: no pipeline today.
3. The sweep (``plan_pipeline``): single-stage fp32 ranking (the reference) and the filter
   keeping each K of ``keeps`` (those below the catalogue's size) for the ranker; quality
   on every query, the sequential service time and bounded Poisson load runs at
   ``load_rates`` times the single-stage capacity, interleaved
   (``models.pipeline_eval``).
4. The gate rules of a pipeline (``pipeline_checks``): recall@k against single-stage at
   least ``min_recall``, and no NDCG@k drop these queries can tell from noise (the upper
   end of the paired 95 % interval of the change is >= 0). Of the points that pass, the
   one with the lowest p95 is chosen; none passing: no pipeline today, and why.

Pure: no Prefect, no MLflow (``tasks.pipeline`` logs and registers the plan).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from torch import nn

from quantrec.data_checks.schema import FeatureSchema
from quantrec.models.names import Variant
from quantrec.models.pipeline import RankingPipeline, single_stage, two_stage
from quantrec.models.pipeline_eval import (
    PipelinePoint,
    measure_load,
    measure_quality,
    pipeline_points,
    service_ms,
)
from quantrec.models.pipeline_pyfunc import serving_model
from quantrec.models.queries import CandidateBatcher, Query, day_queries, sample_queries

REFERENCE = "fp32"
PASSING_VERDICTS = ("promoted", "challenger", "passed")
METRIC_PREFIX = "pipeline"


class PipelineTag:
    """Tag keys of a registered pipeline version and of the run that planned it."""

    PLAN = "quantrec.pipeline"  # run: the chosen pipeline, or "none" and why
    VERSION = "quantrec.pipeline_version"  # run: the registered pipeline's version
    MODEL = "quantrec.pipeline.model"  # the registered model its stages are versions of
    PIPELINE = "quantrec.pipeline.name"  # e.g. "int8@300>fp32"
    FILTER = "quantrec.pipeline.filter"
    FILTER_VERSION = "quantrec.pipeline.filter_version"
    RANKER = "quantrec.pipeline.ranker"
    RANKER_VERSION = "quantrec.pipeline.ranker_version"
    KEEP = "quantrec.pipeline.keep"
    RECALL = "quantrec.pipeline.recall_at_10"
    NDCG = "quantrec.pipeline.ndcg_at_10"
    P95_MS = "quantrec.pipeline.p95_ms"


def pipeline_model_name(model_name: str) -> str:
    """The registered model the pipelines of ``model_name`` are versions of."""
    return f"{model_name}-pipeline"


def day_catalogue(
    window: Iterable[pd.DataFrame], *, item_column: str, item_columns: Sequence[str] = ()
) -> pd.DataFrame:
    """One row per distinct item id of the window (sorted), with ``item_columns`` from the
    item's last row (frames oldest first)."""
    columns = [item_column, *(c for c in item_columns if c != item_column)]
    frames = [f[columns] for f in window]
    if not frames:
        raise ValueError("no window day to build the catalogue from")
    rows = pd.concat(frames, ignore_index=True)
    last = rows.drop_duplicates(item_column, keep="last")
    return last.sort_values(item_column, kind="stable").reset_index(drop=True)


def day_cases(
    frame: pd.DataFrame,
    catalogue: pd.DataFrame,
    schema: FeatureSchema,
    *,
    day: str,
    user_column: str,
    item_column: str,
    count: int,
    seed: int,
) -> list[tuple[Query, CandidateBatcher]]:
    """``count`` queries of ``frame`` (day D) against ``catalogue`` (module docstring, 1)."""
    batcher = CandidateBatcher(catalogue, schema, item_column=item_column, template=frame.iloc[[0]])
    known = set(batcher.items.tolist())
    found = day_queries(
        frame, day=day, user_column=user_column, item_column=item_column, label_column=schema.label
    )
    cut = [
        Query(user=q.user, day=q.day, context=q.context, relevant=q.relevant & known)
        for q in found
        if q.relevant & known
    ]
    if not cut:
        return []
    return [(q, batcher) for q in sample_queries(cut, count, seed=seed)]


def choose_filter(verdicts: Mapping[str, str], sizes: Mapping[str, int]) -> str | None:
    """The smallest low-precision variant whose verdict passed, or None."""
    passing = [
        n for n, v in verdicts.items() if n != Variant.FP32 and v in PASSING_VERDICTS and n in sizes
    ]
    return min(passing, key=lambda n: (sizes[n], n)) if passing else None


def pipeline_checks(point: PipelinePoint, *, min_recall: float) -> list[dict]:
    """The gate rules of a pipeline, each with value, limit and whether it passed."""
    return [
        {
            "rule": "pipeline_recall_at_k",
            "value": point.recall_at_10,
            "limit": f">= {min_recall}",
            "passed": point.recall_at_10 >= min_recall,
        },
        {
            "rule": "pipeline_ndcg_drop_within_noise",
            "value": point.ndcg_change,
            "interval": [point.ndcg_change_low, point.ndcg_change_high],
            "limit": "interval high >= 0",
            "passed": point.ndcg_change_high >= 0.0,
        },
    ]


@dataclass(frozen=True)
class PipelinePlan:
    """The day's sweep and what it chose (``chosen`` None: no pipeline serves today).

    ``points`` holds the reference first, then one point per K; ``checks`` are the gate
    rules of the chosen point (of the best-recall point when none passed).
    """

    filter: str
    ranker: str
    k: int
    item_column: str
    shared_context: bool
    candidates: int
    queries: int
    points: tuple[PipelinePoint, ...]
    chosen: PipelinePoint | None
    checks: tuple[dict, ...]
    reason: str
    seconds: float

    @property
    def passed(self) -> bool:
        return self.chosen is not None

    def metrics(self) -> dict[str, float]:
        """``pipeline.*`` metrics: the chosen point against single-stage, and the sweep."""
        reference = self.points[0]
        out = {
            f"{METRIC_PREFIX}.candidates": float(self.candidates),
            f"{METRIC_PREFIX}.queries": float(self.queries),
            f"{METRIC_PREFIX}.passed": float(self.passed),
            f"{METRIC_PREFIX}.single.ndcg_at_10": reference.ndcg_at_10,
            f"{METRIC_PREFIX}.single.p95_ms": reference.p95_ms,
            f"{METRIC_PREFIX}.single.queries_per_s": reference.queries_per_s,
            f"{METRIC_PREFIX}.seconds": self.seconds,
        }
        for point in self.points[1:]:
            for field in ("recall_at_10", "ndcg_at_10", "p95_ms", "queries_per_s"):
                out[f"{METRIC_PREFIX}.k{point.k}.{field}"] = getattr(point, field)
        if self.chosen is not None:
            chosen = self.chosen
            out.update(
                {
                    f"{METRIC_PREFIX}.k": float(chosen.k or 0),
                    f"{METRIC_PREFIX}.recall_at_10": chosen.recall_at_10,
                    f"{METRIC_PREFIX}.ndcg_at_10": chosen.ndcg_at_10,
                    f"{METRIC_PREFIX}.ndcg_change": chosen.ndcg_change,
                    f"{METRIC_PREFIX}.hr_at_10": chosen.hr_at_10,
                    f"{METRIC_PREFIX}.p50_ms": chosen.p50_ms,
                    f"{METRIC_PREFIX}.p95_ms": chosen.p95_ms,
                    f"{METRIC_PREFIX}.p99_ms": chosen.p99_ms,
                    f"{METRIC_PREFIX}.queries_per_s": chosen.queries_per_s,
                    f"{METRIC_PREFIX}.p95_ratio": chosen.p95_ratio,
                    f"{METRIC_PREFIX}.throughput_ratio": chosen.throughput_ratio,
                }
            )
        return out

    def sweep_frame(self) -> pd.DataFrame:
        """One row per point of the sweep, with ``chosen`` marking the served one."""
        rows = [
            {**asdict(p), "chosen": self.chosen is not None and p.pipeline == self.chosen.pipeline}
            for p in self.points
        ]
        return pd.DataFrame(rows)

    def to_dict(self) -> dict:
        """The decision as JSON: what was chosen, why, and the checks."""
        return {
            "filter": self.filter,
            "ranker": self.ranker,
            "served_k": self.k,
            "shared_context": self.shared_context,
            "candidates": self.candidates,
            "queries": self.queries,
            "chosen": None if self.chosen is None else self.chosen.pipeline,
            "k": None if self.chosen is None else self.chosen.k,
            "passed": self.passed,
            "reason": self.reason,
            "checks": list(self.checks),
        }


def plan_pipeline(
    filter_model: nn.Module,
    ranker: nn.Module,
    cases: Sequence[tuple[Query, CandidateBatcher]],
    *,
    filter_name: str,
    settings,
) -> PipelinePlan:
    """The sweep and the choice (module docstring, 3-4). ``settings`` is the config's
    ``[pipeline]`` section (``tasks.config.PipelineConfig``). Every stage runs as the
    registered pipeline serves it (``models.pipeline_pyfunc.serving_model``)."""
    started = time.perf_counter()
    if not cases:
        raise ValueError("no query of the run date has a click on a catalogue item")
    shared = settings.shared_context
    filter_model = serving_model(filter_model, shared_context=shared)
    ranker = serving_model(ranker, shared_context=shared)
    n, k = len(cases[0][1]), settings.k
    keeps = [keep for keep in settings.keeps if k <= keep < n] or [max(k, n // 2)]
    pipelines: dict[str, RankingPipeline] = {REFERENCE: single_stage(ranker, k=k)}
    for keep in keeps:
        pipeline = two_stage(filter_model, ranker, keep=keep, k=k, filter_name=filter_name)
        pipelines[pipeline.name] = pipeline
    quality = measure_quality(pipelines, cases, reference=REFERENCE, k=k)
    requests = [(b.batch(q), b.items) for q, b in cases[: settings.timing_queries]]
    services = service_ms(pipelines, requests)
    rates = [m * 1e3 / services[REFERENCE] for m in sorted(settings.load_rates)]
    load = measure_load(
        pipelines,
        requests,
        rates=rates,
        rounds=settings.load_rounds,
        queries_per_run=settings.load_queries,
        max_seconds=settings.load_seconds,
    )
    points = pipeline_points(pipelines, quality, load, services, reference=REFERENCE)
    staged = [p for p in points if p.k is not None]
    judged = [(p, pipeline_checks(p, min_recall=settings.min_recall)) for p in staged]
    passing = [(p, c) for p, c in judged if all(check["passed"] for check in c)]
    if passing:
        chosen, checks = min(passing, key=lambda pc: pc[0].p95_ms)
        # Not a rule: the plan serves the fastest faithful pipeline even when single-stage
        # is faster still (a small catalogue), and says so.
        speed = (
            f"{chosen.p95_ratio:.2f}x lower"
            if chosen.p95_ratio >= 1
            else f"{1 / chosen.p95_ratio:.2f}x higher: single-stage is faster on these queries"
        )
        reason = (
            f"{chosen.pipeline}: recall@{k} {chosen.recall_at_10:.3f}, NDCG@{k} change "
            f"{chosen.ndcg_change:+.4f}, p95 {chosen.p95_ms:.2f} ms against single-stage "
            f"{points[0].p95_ms:.2f} ms ({speed})"
        )
    else:
        chosen = None
        best, checks = max(judged, key=lambda pc: (pc[0].recall_at_10, pc[0].ndcg_change))
        failed = "; ".join(f"{c['rule']} {c['value']:.4f} {c['limit']}" for c in checks)
        reason = f"no (filter, K) passes the pipeline rules; the best, {best.pipeline}: {failed}"
    return PipelinePlan(
        filter=filter_name,
        ranker=REFERENCE,
        k=k,
        item_column=cases[0][1].item_column,
        shared_context=shared,
        candidates=n,
        queries=len(cases),
        points=tuple(points),
        chosen=chosen,
        checks=tuple(checks),
        reason=reason,
        seconds=time.perf_counter() - started,
    )


def sweep_figure(plan: PipelinePlan):
    """NDCG@k against p95 of every point of the sweep; the chosen one ringed."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5))
    axes = figure.add_subplot()
    for point in plan.points:
        axes.scatter(point.p95_ms, point.ndcg_at_10, color="tab:blue" if point.k else "black")
        axes.annotate(point.pipeline, (point.p95_ms, point.ndcg_at_10), fontsize=8)
    if plan.chosen is not None:
        axes.scatter(
            plan.chosen.p95_ms, plan.chosen.ndcg_at_10, s=200, facecolors="none", color="red"
        )
    axes.set_xlabel("p95 latency per query (ms), bounded Poisson load")
    axes.set_ylabel("NDCG@10 on the day's clicks")
    axes.set_title(f"pipelines on {plan.queries} queries x {plan.candidates} candidates")
    figure.tight_layout()
    return figure


def finite(values: Mapping[str, float]) -> dict[str, float]:
    """The metrics MLflow can store (a NaN percentile of a run that completed nothing is
    left out)."""
    return {k: float(v) for k, v in values.items() if np.isfinite(v)}
