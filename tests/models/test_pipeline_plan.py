"""The daily pipeline plan on a tiny day: the catalogue, the filter choice, the pipeline's
rules, and a sweep that chooses a faithful filter and refuses a random one."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from quantrec.models.pipeline_eval import PipelinePoint
from quantrec.models.pipeline_plan import (
    choose_filter,
    day_cases,
    day_catalogue,
    pipeline_checks,
    plan_pipeline,
)
from quantrec.models.quantize import build_variant
from quantrec.tasks.config import PipelineConfig

FAST = PipelineConfig(
    enabled=True,
    k=3,
    keeps=(8, 20, 500),
    queries=12,
    timing_queries=4,
    load_queries=4,
    load_seconds=0.5,
)


def test_catalogue_is_the_windows_items_with_their_last_item_side_values() -> None:
    old = pd.DataFrame({"item": ["b", "a"], "price": [1.0, 2.0], "user": [1, 2]})
    new = pd.DataFrame({"item": ["a", "c"], "price": [3.0, 4.0], "user": [3, 4]})
    catalogue = day_catalogue([old, new], item_column="item", item_columns=["price"])
    assert catalogue.columns.tolist() == ["item", "price"]
    assert catalogue["item"].tolist() == ["a", "b", "c"]
    assert catalogue["price"].tolist() == [3.0, 1.0, 4.0]
    with pytest.raises(ValueError, match="no window day"):
        day_catalogue([], item_column="item")


def test_the_filter_is_the_smallest_passing_low_precision_variant() -> None:
    sizes = {"fp32": 100, "fp16": 50, "int8": 30, "searched": 10}
    verdicts = {"fp32": "passed", "fp16": "passed", "int8": "promoted", "searched": "rejected"}
    assert choose_filter(verdicts, sizes) == "int8"
    assert choose_filter({**verdicts, "searched": "challenger"}, sizes) == "searched"
    assert choose_filter({"fp32": "promoted", "int8": "rejected"}, sizes) is None


def _point(recall: float, change: tuple[float, float, float]) -> PipelinePoint:
    nan = float("nan")
    return PipelinePoint(
        pipeline="int8@8>fp32",
        filter="int8",
        k=8,
        queries=10,
        recall_at_10=recall,
        recall_low=nan,
        recall_high=nan,
        ndcg_at_10=0.5,
        ndcg_low=nan,
        ndcg_high=nan,
        ndcg_change=change[0],
        ndcg_change_low=change[1],
        ndcg_change_high=change[2],
        hr_at_10=0.5,
        service_ms=1.0,
        p50_ms=1.0,
        p95_ms=2.0,
        p99_ms=3.0,
        rate_qps=10.0,
        queries_per_s=10.0,
        p95_ratio=1.0,
        throughput_ratio=1.0,
        iso_quality=True,
    )


def test_pipeline_rules_bound_recall_and_an_ndcg_drop_beyond_noise() -> None:
    passed = [
        c["passed"] for c in pipeline_checks(_point(0.99, (-0.01, -0.03, 0.01)), min_recall=0.99)
    ]
    assert passed == [True, True]
    passed = [
        c["passed"] for c in pipeline_checks(_point(0.98, (-0.02, -0.04, -0.001)), min_recall=0.99)
    ]
    assert passed == [False, False]
    # Better beyond noise is no drop.
    assert all(
        c["passed"] for c in pipeline_checks(_point(1.0, (0.02, 0.01, 0.03)), min_recall=0.99)
    )


@pytest.fixture
def cases(make_frame, tiny_schema):
    day, window = make_frame(rows=400, seed=5), [make_frame(rows=400, seed=s) for s in (1, 2)]
    catalogue = day_catalogue(window, item_column="item", item_columns=["price"])
    found = day_cases(
        day,
        catalogue,
        tiny_schema,
        day="d",
        user_column="user",
        item_column="item",
        count=FAST.queries,
        seed=0,
    )
    assert len(found) == FAST.queries and len(found[0][1]) == 30
    return found


def test_a_faithful_filter_is_chosen_and_a_random_one_refused(cases, make_model) -> None:
    ranker = make_model(seed=0)
    plan = plan_pipeline(
        build_variant(ranker, "int8"), ranker, cases, filter_name="int8", settings=FAST
    )
    # K = 500 is not below the 30 candidates: swept are 8 and 20.
    assert [p.k for p in plan.points] == [None, 8, 20]
    assert plan.passed and plan.chosen.k in (8, 20), plan.reason
    assert all(c["passed"] for c in plan.checks)
    assert plan.to_dict()["chosen"] == plan.chosen.pipeline
    metrics = plan.metrics()
    assert metrics["pipeline.recall_at_10"] == plan.chosen.recall_at_10 >= 0.99
    assert plan.sweep_frame()["chosen"].sum() == 1

    stranger = make_model(seed=9, embedding_dim=2)
    refused = plan_pipeline(
        stranger,
        ranker,
        cases,
        filter_name="narrow",
        settings=FAST.model_copy(update={"keeps": (3,)}),
    )
    assert not refused.passed and refused.chosen is None
    assert "no (filter, K) passes" in refused.reason
    assert not all(c["passed"] for c in refused.checks)
    assert np.isfinite(refused.metrics()["pipeline.single.p95_ms"])
