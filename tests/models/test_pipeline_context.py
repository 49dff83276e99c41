"""Scoring a query's candidates with the user-side work done once gives the model's logits
(up to float rounding) for fp32, int8 and fused models, with and without shared dense
values; a batch with nothing shared goes through the model unchanged."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from quantrec.models.fused import fuse_lookups
from quantrec.models.pipeline import two_stage
from quantrec.models.pipeline_context import SharedContext
from quantrec.models.quantize import build_variant
from quantrec.models.queries import CandidateBatcher, day_queries

ITEMS = [f"item-{i}" for i in range(30)]


@pytest.fixture
def model(make_model, make_batch):
    model = make_model(seed=0)
    model.dense_arch.transform.fit([make_batch(rows=256, seed=1).dense])
    return model.eval()


def _candidates(make_frame, tiny_schema, *, item_side_dense: bool):
    day = make_frame(rows=300, seed=5)
    catalogue = pd.DataFrame({"item": ITEMS})
    if item_side_dense:
        catalogue["price"] = np.linspace(5.0, 20.0, len(ITEMS))
    batcher = CandidateBatcher(catalogue, tiny_schema, item_column="item", template=day.iloc[[0]])
    queries = day_queries(
        day, day="d", user_column="user", item_column="item", label_column="label"
    )
    return batcher, queries[:4]


@pytest.mark.parametrize("item_side_dense", [False, True])
@pytest.mark.parametrize("variant", ["fp32", "int8", "fp32_fused", "int8_fused"])
def test_shared_context_gives_the_models_logits(
    model, make_frame, tiny_schema, variant, item_side_dense
) -> None:
    scorer = model if variant.startswith("fp32") else build_variant(model, "int8")
    scorer = fuse_lookups(scorer) if variant.endswith("fused") else scorer
    batcher, queries = _candidates(make_frame, tiny_schema, item_side_dense=item_side_dense)
    shared = SharedContext(scorer)
    with torch.inference_mode():
        for query in queries:
            batch = batcher.batch(query)
            torch.testing.assert_close(shared(batch), scorer(batch), rtol=1e-6, atol=1e-6)


def test_nothing_shared_is_the_model_exactly(model, make_batch) -> None:
    batch = make_batch(rows=64, seed=3)
    with torch.inference_mode():
        assert torch.equal(SharedContext(model)(batch), model(batch))
        one = batch.slice(0, 1)
        assert torch.equal(SharedContext(model)(one), model(one))


def test_a_pipeline_of_shared_context_stages_serves_the_same_lists(
    model, make_frame, tiny_schema
) -> None:
    int8 = build_variant(model, "int8")
    plain = two_stage(int8, model, keep=10, k=3, filter_name="int8")
    shared = two_stage(SharedContext(int8), SharedContext(model), keep=10, k=3, filter_name="int8")
    batcher, queries = _candidates(make_frame, tiny_schema, item_side_dense=False)
    for query in queries:
        batch = batcher.batch(query)
        a, b = plain.rank(batch, batcher.items), shared.rank(batch, batcher.items)
        assert a.items.tolist() == b.items.tolist()
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5)
