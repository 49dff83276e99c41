"""Pipelines side by side: quality on the same queries, speed under the same Poisson load,
and the iso-quality rule that picks a (filter, K).

1. ``measure_quality``: every pipeline serves every query (``models.queries``); per query,
   recall@k against the reference pipeline's list (single-stage fp32), NDCG@k and HR@k on
   the query's relevant items (``models.ranking_metrics``).
2. ``service_ms``: the median time of one query served sequentially, without load,
   interleaved query by query.
3. ``measure_load``: for each offered rate, ``rounds`` rounds in which every pipeline runs
   one bounded ``models.loadgen.run_load`` in turn, the order rotated by one each round, so
   no pipeline always runs first, last or next to the same neighbour (interleaved in one
   process: drift of the machine spreads over all of them).
4. ``pipeline_points``: one ``PipelinePoint`` per pipeline: the quality means with 95 %
   bootstrap intervals over queries (NDCG's change against the reference paired), the
   latency percentiles at the lowest offered rate (every pipeline below its capacity
   there), the best completed rate over the sweep (its capacity under load), and the
   ratios against the reference.
5. Iso-quality: recall@k >= ``min_recall`` (0.99) and the interval of the NDCG@k change
   holds 0 (no drop these queries can tell from noise); ``best_point`` is the iso-quality
   pipeline with the lowest p95.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from quantrec.models.loadgen import LoadSettings, run_load
from quantrec.models.pipeline import RankingPipeline
from quantrec.models.queries import CandidateBatcher, Query
from quantrec.models.ranking_metrics import (
    hit_rate_at_k,
    mean_interval,
    ndcg_at_k,
    paired_difference_interval,
    recall_at_k,
)

MIN_RECALL = 0.99  # the bar: the pipeline keeps 99 % of single-stage's top k


@dataclass(frozen=True)
class QueryMetrics:
    """Per-query values of one pipeline, float64 (Q,) each, queries in the given order."""

    recall: np.ndarray
    ndcg: np.ndarray
    hit_rate: np.ndarray


def measure_quality(
    pipelines: Mapping[str, RankingPipeline],
    cases: Sequence[tuple[Query, CandidateBatcher]],
    *,
    reference: str,
    k: int,
) -> dict[str, QueryMetrics]:
    """Serve every query with every pipeline; recall against ``pipelines[reference]``.

    A first-stage model shared by several pipelines (one filter, several K) scores each
    query once: its logits depend only on the model and the query's rows.
    """
    values = {name: ([], [], []) for name in pipelines}
    for query, batcher in cases:
        batch = batcher.batch(query)
        truth = pipelines[reference].rank(batch, batcher.items).items
        first_scores: dict[int, np.ndarray] = {}
        for name, pipeline in pipelines.items():
            candidates = pipeline.start(batch, batcher.items)
            for stage in range(len(pipeline.stages)):
                if stage == 0:
                    key = id(pipeline.stages[0].model)
                    if key not in first_scores:
                        first_scores[key] = pipeline.score(0, candidates)
                    logits = first_scores[key]
                else:
                    logits = pipeline.score(stage, candidates)
                candidates = pipeline.keep(stage, candidates, logits)
            served = pipeline.finish(candidates).items
            recall, ndcg, hits = values[name]
            recall.append(recall_at_k(served, truth, k))
            ndcg.append(ndcg_at_k(served, query.relevant, k))
            hits.append(hit_rate_at_k(served, query.relevant, k))
    return {
        n: QueryMetrics(*(np.array(v, dtype=np.float64) for v in vs)) for n, vs in values.items()
    }


def service_ms(
    pipelines: Mapping[str, RankingPipeline], requests: Sequence[tuple], *, warmup: int = 3
) -> dict[str, float]:
    """Pipeline -> median milliseconds of one (batch, items) request served in this thread,
    without load. Interleaved per request (every pipeline serves request i before any
    serves i + 1, the order rotated), so a burst of another process's work on a shared
    machine slows every pipeline alike."""
    names = list(pipelines)
    for batch, items in requests[:warmup]:
        for name in names:
            pipelines[name].rank(batch, items)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i, (batch, items) in enumerate(requests):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            pipelines[name].rank(batch, items)
            times[name].append(time.perf_counter() - started)
    return {name: float(np.median(t) * 1e3) for name, t in times.items()}


@dataclass
class LoadCell:
    """One pipeline at one offered rate, summed over the rounds."""

    latencies_ms: list[np.ndarray] = field(default_factory=list)
    issued: int = 0
    completed: int = 0
    abandoned: int = 0
    seconds: float = 0.0  # sum of the runs' first-arrival-to-last-completion times

    def percentile_ms(self, q: float) -> float:
        if not self.completed:
            return float("nan")
        return float(np.percentile(np.concatenate(self.latencies_ms), q))

    @property
    def queries_per_s(self) -> float:
        return self.completed / self.seconds if self.seconds > 0 else 0.0


def measure_load(
    pipelines: Mapping[str, RankingPipeline],
    requests: Sequence[tuple],
    *,
    rates: Sequence[float],
    rounds: int,
    queries_per_run: int,
    max_seconds: float,
) -> dict[str, dict[float, LoadCell]]:
    """Pipeline -> offered rate (queries/s) -> what the bounded runs measured (module
    docstring, step 3). Round r draws its arrivals from seed r: every pipeline of a round
    meets the same arrival times."""
    names = list(pipelines)
    cells = {name: {rate: LoadCell() for rate in rates} for name in names}
    for rate in rates:
        for round_ in range(rounds):
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                settings = LoadSettings(rate, queries_per_run, max_seconds, seed=round_)
                result = run_load(pipelines[name].stage_steps(), requests, settings)
                cell = cells[name][rate]
                cell.latencies_ms.append(result.latencies_ms)
                cell.issued += result.issued
                cell.completed += result.completed
                cell.abandoned += result.abandoned
                cell.seconds += result.elapsed_s
    return cells


@dataclass(frozen=True)
class PipelinePoint:
    """One pipeline's quality and speed (module docstring, step 4).

    ``k`` is how many candidates the first stage passes on (None: single-stage);
    intervals are 95 % bootstrap over queries; milliseconds per query.
    """

    pipeline: str
    filter: str
    k: int | None
    queries: int
    recall_at_10: float
    recall_low: float
    recall_high: float
    ndcg_at_10: float
    ndcg_low: float
    ndcg_high: float
    ndcg_change: float
    ndcg_change_low: float
    ndcg_change_high: float
    hr_at_10: float
    service_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    rate_qps: float
    queries_per_s: float
    p95_ratio: float  # reference p95 / this p95: > 1 is a lower tail latency
    throughput_ratio: float  # this queries/s / the reference's
    iso_quality: bool


def pipeline_points(
    pipelines: Mapping[str, RankingPipeline],
    quality: Mapping[str, QueryMetrics],
    load: Mapping[str, Mapping[float, LoadCell]],
    services: Mapping[str, float],
    *,
    reference: str,
    min_recall: float = MIN_RECALL,
) -> list[PipelinePoint]:
    """One point per pipeline, in the order of ``pipelines`` (module docstring)."""
    base_ndcg = quality[reference].ndcg
    low_rate = min(load[reference])
    base_p95 = load[reference][low_rate].percentile_ms(95)
    base_qps = max(c.queries_per_s for c in load[reference].values())
    points = []
    for name, pipeline in pipelines.items():
        q, cells = quality[name], load[name]
        change = paired_difference_interval(q.ndcg, base_ndcg)
        recall_interval, ndcg_interval = mean_interval(q.recall), mean_interval(q.ndcg)
        p95, qps = cells[low_rate].percentile_ms(95), max(c.queries_per_s for c in cells.values())
        staged = len(pipeline.stages) > 1
        recall = float(q.recall.mean())
        points.append(
            PipelinePoint(
                pipeline=name,
                filter=pipeline.stages[0].name if staged else "-",
                k=pipeline.stages[0].keep if staged else None,
                queries=int(q.ndcg.size),
                recall_at_10=recall,
                recall_low=recall_interval[0],
                recall_high=recall_interval[1],
                ndcg_at_10=float(q.ndcg.mean()),
                ndcg_low=ndcg_interval[0],
                ndcg_high=ndcg_interval[1],
                ndcg_change=float((q.ndcg - base_ndcg).mean()),
                ndcg_change_low=change[0],
                ndcg_change_high=change[1],
                hr_at_10=float(q.hit_rate.mean()),
                service_ms=services[name],
                p50_ms=cells[low_rate].percentile_ms(50),
                p95_ms=p95,
                p99_ms=cells[low_rate].percentile_ms(99),
                rate_qps=low_rate,
                queries_per_s=qps,
                p95_ratio=base_p95 / p95,
                throughput_ratio=qps / base_qps,
                iso_quality=recall >= min_recall and change[0] <= 0.0 <= change[1],
            )
        )
    return points


def best_point(points: Sequence[PipelinePoint]) -> PipelinePoint | None:
    """The multi-stage point at iso-quality with the lowest p95, or None."""
    candidates = [p for p in points if p.k is not None and p.iso_quality]
    return min(candidates, key=lambda p: p.p95_ms) if candidates else None
