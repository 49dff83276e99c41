"""Quantization staleness: out-of-range inputs, table row errors, the NE gap."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

from quantrec.models.batch import Batch
from quantrec.models.quantize import apply_precision_plan, assemble_variant, uniform_plan
from quantrec.models.recipes import Int8StaticLinear
from quantrec.models.scorer import score
from quantrec.models.staleness import StalenessError, quantization_staleness, representable_range


def with_dense(batch: Batch, dense: torch.Tensor) -> Batch:
    return Batch(dense=dense, sparse=batch.sparse, labels=batch.labels)


def test_fraction_outside_a_known_range_is_k_over_n(make_model, make_batch) -> None:
    model, batch = make_model(), make_batch(rows=64)
    first = model.dense_arch.mlp[0]  # its input is the batch's dense matrix, untouched
    unit = Int8StaticLinear.from_float(first, calibration="minmax", input_range=(0.0, 1.0))
    assert representable_range(unit) == pytest.approx((0.0, 1.0))
    low = assemble_variant(model, {"dense_arch.mlp.0": unit})
    dense = torch.full((64, 2), 0.5)
    dense[[0, 5, 9], [0, 1, 1]] = torch.tensor([1.5, -0.25, 2.0])  # k = 3 of n = 128
    staleness = quantization_staleness(low, model, with_dense(batch, dense), batch_size=16)
    assert staleness.out_of_range == {"dense_arch.mlp.0": pytest.approx(3 / 128)}
    assert staleness.out_of_range_overall == pytest.approx(3 / 128)
    assert staleness.elements == {"dense_arch.mlp.0": 128}


def test_smooth_units_are_measured_after_the_smoothing_division(make_model, make_batch) -> None:
    model, batch = make_model(), make_batch(rows=32)
    unit = Int8StaticLinear.from_float(
        model.dense_arch.mlp[0],
        calibration="smooth",
        input_range=(0.0, 1.0),
        smoothing=torch.tensor([2.0, 1.0]),
    )
    low = assemble_variant(model, {"dense_arch.mlp.0": unit})
    dense = torch.full((32, 2), 1.5)  # column 0 becomes 0.75 (inside), column 1 stays outside
    staleness = quantization_staleness(low, model, with_dense(batch, dense))
    assert staleness.out_of_range["dense_arch.mlp.0"] == pytest.approx(0.5)


def test_fp16_exact_table_has_zero_error(make_model, make_batch) -> None:
    model, batch = make_model(), make_batch()
    with torch.no_grad():  # weights fp16 can hold exactly: the fp16 table is fp32-identical
        model.sparse_arch.embedding_bags[1].weight.copy_(
            model.sparse_arch.embedding_bags[1].weight.half().float()
        )
    plan = dict.fromkeys(uniform_plan(model, "fp32"), "fp32")
    plan["sparse_arch.embedding_bags.1"] = "fp16"
    staleness = quantization_staleness(apply_precision_plan(model, plan), model, batch)
    assert staleness.embedding_error == {"sparse_arch.embedding_bags.1": 0.0}
    assert staleness.embedding_error_max == {"sparse_arch.embedding_bags.1": 0.0}
    active = torch.unique(batch.sparse.values[1]).numel()  # hashed item ids the day uses
    assert staleness.active_rows["sparse_arch.embedding_bags.1"] == active
    assert staleness.ne_gap_rel == pytest.approx(0.0, abs=1e-12)


def test_int8_table_error_matches_a_hand_computation(make_model, make_batch) -> None:
    model, batch = make_model(), make_batch()
    plan = dict.fromkeys(uniform_plan(model, "fp32"), "fp32")
    plan["sparse_arch.embedding_bags.0"] = "int8"
    low = apply_precision_plan(model, plan)
    active = torch.unique(batch.sparse.values[0])
    exact = model.sparse_arch.embedding_bags[0].weight.detach()[active].double()
    approx = low.sparse_arch.embedding_bags[0].dequantized_weight()[active].double()
    per_row = ((approx - exact).norm(dim=1) / exact.norm(dim=1)).numpy()
    staleness = quantization_staleness(low, model, batch)
    table = "sparse_arch.embedding_bags.0"
    assert staleness.embedding_error[table] == pytest.approx(per_row.mean(), rel=1e-6)
    assert staleness.embedding_error_max[table] == pytest.approx(per_row.max(), rel=1e-6)
    assert 0 < staleness.embedding_error[table] < 0.01  # 8-bit rows: well under 1 %
    assert staleness.embedding_error_overall == pytest.approx(per_row.mean(), rel=1e-6)
    assert staleness.out_of_range_overall is None  # no static linear in this plan


def test_ne_gap_has_the_sign_and_size_of_the_scored_ne_change(make_model, make_batch) -> None:
    model, batch, calibration = make_model(), make_batch(rows=256, seed=1), make_batch(rows=256)
    plan = {
        n: "int2" if "embedding" in n else "int8_static_histogram"
        for n in uniform_plan(model, "fp32")
    }
    low = apply_precision_plan(model, plan, calibration=calibration)
    staleness = quantization_staleness(low, model, batch)
    expected = (score(low, batch).ne - score(model, batch).ne) / score(model, batch).ne
    assert staleness.ne_gap_rel == pytest.approx(expected, rel=1e-9)
    assert np.sign(staleness.ne_gap_rel) == np.sign(expected) != 0
    assert set(staleness.out_of_range) == {n for n in plan if "mlp" in n}


def test_metrics_are_flat_and_valid_mlflow_keys(make_model, make_batch) -> None:
    model, batch = make_model(), make_batch()
    plan = {
        n: "int8" if "embedding" in n else "int8_static_minmax" for n in uniform_plan(model, "fp32")
    }
    low = apply_precision_plan(model, plan, calibration=make_batch(seed=3))
    metrics = quantization_staleness(low, model, batch).to_metrics()
    assert {
        "staleness.out_of_range",
        "staleness.embedding_error",
        "staleness.ne_gap_rel",
        "staleness.out_of_range.over_arch.mlp.0",
        "staleness.embedding_error.sparse_arch.embedding_bags.2",
    } <= set(metrics)
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-/ ]+", key) for key in metrics)
    assert all(isinstance(v, float) and np.isfinite(v) for v in metrics.values())


def test_a_parent_of_another_shape_is_refused(make_model, make_batch) -> None:
    model, batch = make_model(), make_batch()
    plan = {n: "int8" for n in uniform_plan(model, "fp32")}
    low = apply_precision_plan(model, plan)
    other = make_model(embedding_dim=8)
    other.sparse_arch.embedding_bags[0] = nn.EmbeddingBag(97, 8, mode="sum")
    with pytest.raises(StalenessError, match="embedding_bags.0"):
        quantization_staleness(low, other, batch)
