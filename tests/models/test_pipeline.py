"""Queries and multi-stage ranking on a tiny day: candidate rows, the two-stage invariant,
and a pipeline whose filter keeps every candidate equal to single-stage ranking."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from quantrec.data_checks.schema import CategoricalFeature, FeatureSchema
from quantrec.models.batch import batch_from_frame
from quantrec.models.dlrm import DLRM
from quantrec.models.pipeline import (
    PipelineError,
    RankingPipeline,
    Stage,
    single_stage,
    two_stage,
)
from quantrec.models.quantize import build_variant
from quantrec.models.queries import (
    CandidateBatcher,
    QueryError,
    candidate_frame,
    day_queries,
    sample_queries,
)
from quantrec.models.ranking_metrics import top_k

ITEMS = [f"item-{i}" for i in range(30)]


@pytest.fixture
def day(make_frame) -> pd.DataFrame:
    return make_frame(rows=300, seed=5)


@pytest.fixture
def batcher(day, tiny_schema) -> CandidateBatcher:
    # "price" is item-derived here: a per-item value the context must not overwrite.
    catalogue = pd.DataFrame({"item": ITEMS, "price": np.linspace(5.0, 20.0, len(ITEMS))})
    return CandidateBatcher(catalogue, tiny_schema, item_column="item", template=day.iloc[[0]])


def _queries(day):
    return day_queries(day, day="d", user_column="user", item_column="item", label_column="label")


def test_queries_are_the_users_with_a_click(day) -> None:
    queries = _queries(day)
    clicked = day[day["label"] == 1]
    assert [q.user for q in queries] == sorted(clicked["user"].unique())
    first = queries[0]
    assert first.relevant == frozenset(clicked.loc[clicked["user"] == first.user, "item"])
    pd.testing.assert_frame_equal(first.context, day[day["user"] == first.user].iloc[[0]])
    assert sample_queries(queries, 5, seed=0) == sample_queries(queries, 5, seed=0)
    assert len(sample_queries(queries, 5, seed=0)) == 5
    with pytest.raises(QueryError, match="missing"):
        day_queries(day, day="d", user_column="who", item_column="item", label_column="label")


def test_candidate_batch_equals_the_candidate_frame_hashed(day, batcher, tiny_schema) -> None:
    query = _queries(day)[0]
    batch = batcher.batch(query)
    catalogue = pd.DataFrame({"item": ITEMS, "price": np.linspace(5.0, 20.0, len(ITEMS))})
    frame = candidate_frame(query.context, catalogue)
    frame["label"] = frame["item"].isin(query.relevant).astype(np.int64)
    expected = batch_from_frame(frame, tiny_schema)
    torch.testing.assert_close(batch.dense, expected.dense, rtol=0, atol=0)
    torch.testing.assert_close(batch.labels, expected.labels, rtol=0, atol=0)
    for got, want in zip(batch.sparse.values, expected.sparse.values):
        assert torch.equal(got, want)
    for got, want in zip(batch.sparse.offsets, expected.sparse.offsets):
        assert torch.equal(got, want)
    assert (frame["user"] == query.user).all() and frame["item"].tolist() == ITEMS
    assert batcher.positions(["item-3", "item-0"]).tolist() == [3, 0]
    with pytest.raises(QueryError, match="not in the catalogue"):
        batcher.positions(["item-99"])


def test_two_stage_serves_the_rankers_top_k_among_the_filters_top_keep(
    day, batcher, make_model
) -> None:
    ranker, small = make_model(seed=0), make_model(seed=1, embedding_dim=2)
    query = _queries(day)[0]
    batch = batcher.batch(query)
    with torch.inference_mode():
        ranker_logits = ranker(batch).numpy()
        filter_logits = small(batch).numpy()
    kept = top_k(filter_logits, 8)
    pipeline = two_stage(small, ranker, keep=8, k=3, filter_name="narrow")
    served = pipeline.rank(batch, batcher.items)
    expected = kept[top_k(ranker_logits[kept], 3)]
    assert served.positions.tolist() == expected.tolist()
    assert served.items.tolist() == [ITEMS[p] for p in expected]
    np.testing.assert_allclose(
        served.scores, 1 / (1 + np.exp(-ranker_logits[expected].astype(np.float64))), rtol=1e-6
    )
    assert pipeline.name == "narrow@8>fp32" and pipeline.k == 3
    frame = served.to_frame()
    assert frame.columns.tolist() == ["item", "score", "rank"] and frame["rank"].tolist() == [
        1,
        2,
        3,
    ]


def test_a_filter_keeping_every_candidate_equals_single_stage_exactly(
    day, batcher, make_model
) -> None:
    ranker = make_model(seed=0)
    int8 = build_variant(ranker, "int8")
    single = single_stage(ranker, k=10)
    full = two_stage(int8, ranker, keep=len(batcher), k=10, filter_name="int8")
    for query in _queries(day)[:5]:
        batch = batcher.batch(query)
        a, b = single.rank(batch, batcher.items), full.rank(batch, batcher.items)
        np.testing.assert_array_equal(a.items, b.items)
        np.testing.assert_array_equal(a.scores, b.scores)


def test_stage_steps_compose_to_rank(day, batcher, make_model) -> None:
    pipeline = RankingPipeline(
        [
            Stage("narrow", make_model(seed=1, embedding_dim=2), keep=20),
            Stage("int8", build_variant(make_model(seed=0), "int8"), keep=8),
            Stage("fp32", make_model(seed=0), keep=4),
        ]
    )
    batch = batcher.batch(_queries(day)[1])
    work = (batch, batcher.items)
    for step in pipeline.stage_steps():
        work = step(work)
    expected = pipeline.rank(batch, batcher.items)
    np.testing.assert_array_equal(work.items, expected.items)
    np.testing.assert_array_equal(work.scores, expected.scores)


def test_ill_formed_pipelines_are_refused(make_model, make_batch, tiny_schema) -> None:
    model = make_model(seed=0)
    with pytest.raises(PipelineError, match="no more than the stage before"):
        RankingPipeline([Stage("a", model, keep=5), Stage("b", model, keep=10)])
    other = FeatureSchema(
        dense=tiny_schema.dense,
        categorical=tuple(
            CategoricalFeature(name=c.name, hash_size=c.hash_size * 2)
            for c in tiny_schema.categorical
        ),
    )
    torch.manual_seed(0)
    wider = DLRM.from_schema(other, embedding_dim=4, bottom_mlp=[8, 4], top_mlp=[8])
    with pytest.raises(PipelineError, match="different contracts"):
        two_stage(wider, model, keep=5, k=2, filter_name="wider")
    with pytest.raises(PipelineError, match="item ids"):
        single_stage(model, k=2).rank(make_batch(rows=10), ITEMS[:3])
