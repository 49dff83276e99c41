"""Pipelines side by side on a tiny day: per-query quality, interleaved bounded load runs,
the iso-quality rule; and a filter reading fewer features than the ranker."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from quantrec.data_checks.schema import FeatureSchema
from quantrec.models.batch import batch_from_frame
from quantrec.models.dlrm import DLRM
from quantrec.models.pipeline import RankingPipeline, Stage, single_stage, two_stage
from quantrec.models.pipeline_eval import (
    best_point,
    measure_load,
    measure_quality,
    pipeline_points,
    service_ms,
)
from quantrec.models.queries import CandidateBatcher, day_queries

ITEMS = [f"item-{i}" for i in range(30)]


@pytest.fixture
def cases(make_frame, tiny_schema):
    day = make_frame(rows=300, seed=5)
    batcher = CandidateBatcher(
        pd.DataFrame({"item": ITEMS}), tiny_schema, item_column="item", template=day.iloc[[0]]
    )
    queries = day_queries(
        day, day="d", user_column="user", item_column="item", label_column="label"
    )
    return [(q, batcher) for q in queries[:12]]


@pytest.fixture
def pipelines(make_model, cases) -> dict[str, RankingPipeline]:
    ranker, small = make_model(seed=0), make_model(seed=1, embedding_dim=2)
    n = len(cases[0][1])
    return {
        "fp32": single_stage(ranker, k=5),
        "all": two_stage(small, ranker, keep=n, k=5, filter_name="small"),
        "few": two_stage(small, ranker, keep=5, k=5, filter_name="small"),
    }


def test_quality_per_query_and_the_iso_quality_rule(pipelines, cases) -> None:
    quality = measure_quality(pipelines, cases, reference="fp32", k=5)
    assert quality["fp32"].recall.tolist() == [1.0] * len(cases)
    np.testing.assert_array_equal(quality["all"].ndcg, quality["fp32"].ndcg)  # keeps all N
    assert (quality["few"].recall <= 1.0).all() and quality["few"].recall.mean() < 1.0
    requests = [(b.batch(q), b.items) for q, b in cases[:3]]
    load = measure_load(
        pipelines, requests, rates=[500.0, 2000.0], rounds=2, queries_per_run=6, max_seconds=10.0
    )
    for per_rate in load.values():
        for cell in per_rate.values():
            assert cell.issued == 12 and cell.completed + cell.abandoned == 12
    services = service_ms(pipelines, requests)
    assert set(services) == set(pipelines) and min(services.values()) > 0
    points = pipeline_points(pipelines, quality, load, services, reference="fp32")
    by_name = {p.pipeline: p for p in points}
    assert by_name["fp32"].p95_ratio == 1.0 and by_name["fp32"].k is None
    assert by_name["all"].iso_quality and by_name["all"].ndcg_change == 0.0
    assert by_name["few"].k == 5 and not by_name["few"].iso_quality
    assert best_point(points).pipeline == "all"


def test_a_filter_on_fewer_features_scores_their_columns(make_model, cases, tiny_schema) -> None:
    subset: FeatureSchema = tiny_schema.model_copy(
        update={"categorical": tuple(c for c in tiny_schema.categorical if c.name != "hour")}
    )
    torch.manual_seed(3)
    small = DLRM.from_schema(subset, embedding_dim=2, bottom_mlp=[4, 2], top_mlp=[4])
    query, batcher = cases[0]
    batch = batcher.batch(query)
    pipeline = RankingPipeline([Stage("small", small, keep=30), Stage("fp32", make_model(), 3)])
    candidates = pipeline.start(batch, batcher.items)
    frame = pd.DataFrame({"item": ITEMS}).merge(query.context.drop(columns="item"), how="cross")
    with torch.inference_mode():
        expected = small(batch_from_frame(frame, subset)).numpy()
    np.testing.assert_array_equal(pipeline.score(0, candidates), expected)
    assert len(pipeline.rank(batch, batcher.items).items) == 3
