"""int8 recipes on torch's quantized kernels: error bounds, state, bytes, precision plans."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from quantrec.models.dlrm import DLRM
from quantrec.models.quantize import (
    Int8DynamicLinear,
    apply_precision_plan,
    build_variant,
    model_bytes,
    precision_plan,
    quantize_int8,
    uniform_plan,
)
from quantrec.models.recipes import RowwiseEmbeddingBag


@pytest.mark.parametrize("per_channel", [True, False])
def test_int8_linear_is_close_to_fp32(per_channel: bool) -> None:
    torch.manual_seed(0)
    linear = nn.Linear(32, 16)
    x = torch.randn(64, 32)
    module = Int8DynamicLinear.from_float(linear, per_channel=per_channel)
    expected = linear(x).detach()
    error = (module(x) - expected).abs().max()
    # 8-bit weights and 7-bit activations: about 1% of the output's range.
    assert error <= 0.02 * expected.abs().max(), error
    assert module.weight_scale.numel() == (16 if per_channel else 1)
    # The dequantized weight is within half a step of the float weight.
    step = module.weight_scale[:, None] if per_channel else module.weight_scale
    assert ((module.dequantized_weight() - linear.weight).abs() <= step / 2 + 1e-7).all()


def test_int8_linear_state_is_plain_tensors_and_reload_repacks() -> None:
    torch.manual_seed(1)
    source = Int8DynamicLinear.from_float(nn.Linear(8, 4))
    state = source.state_dict()
    assert {k: v.dtype for k, v in state.items()} == {
        "weight_int8": torch.int8,
        "weight_scale": torch.float64,
        "weight_zero_point": torch.int64,
        "bias": torch.float32,
    }
    target = Int8DynamicLinear(in_features=8, out_features=4)
    target.load_state_dict(state)
    x = torch.randn(3, 8)
    assert torch.equal(target(x), source(x))


def test_rowwise_int8_lookup_error_is_within_row_range_over_255() -> None:
    torch.manual_seed(2)
    bag = nn.EmbeddingBag(50, 16, mode="sum")
    nn.init.normal_(bag.weight, std=0.3)
    module = RowwiseEmbeddingBag.from_float(bag, bits=8)
    assert module.packed_weight.dtype == torch.uint8 and module.packed_weight.shape == (50, 24)
    assert list(module.state_dict()) == ["packed_weight"]

    weight = bag.weight.detach()
    row_range = weight.amax(dim=1) - weight.amin(dim=1)
    ids = torch.arange(50)
    single = module(ids, ids)  # one id per bag
    assert ((single - weight).abs() <= row_range[:, None] / 255).all()
    # Round to nearest: actually within half a step (plus float32 rounding of scale and bias).
    assert ((single - weight).abs() <= row_range[:, None] / 510 + 1e-6).all()


def test_rowwise_int8_pools_jagged_bags_like_fp32() -> None:
    torch.manual_seed(3)
    bag = nn.EmbeddingBag(20, 8, mode="sum")
    module = RowwiseEmbeddingBag.from_float(bag, bits=8)
    values, offsets = torch.tensor([1, 2, 3, 5, 5]), torch.tensor([0, 3, 3])
    expected = bag(values, offsets).detach()
    got = module(values, offsets)
    assert got.shape == (3, 8)
    assert got[1].abs().sum() == 0  # empty bag
    torch.testing.assert_close(got, expected, atol=0.02, rtol=0)


def test_rowwise_rejects_mean_bags() -> None:
    with pytest.raises(ValueError, match="mode='mean'"):
        RowwiseEmbeddingBag.from_float(nn.EmbeddingBag(4, 2, mode="mean"), bits=8)


def test_quantize_int8_replaces_every_unit_and_leaves_the_original(make_model, make_batch) -> None:
    model = make_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quantized = quantize_int8(model)

    assert not quantized.training
    assert set(precision_plan(quantized).values()) == {"int8"}
    assert set(precision_plan(model).values()) == {"fp32"}
    assert not any(isinstance(m, (nn.Linear, nn.EmbeddingBag)) for m in quantized.modules())
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name

    batch = make_batch(rows=256)
    with torch.inference_mode():
        fp32, int8 = torch.sigmoid(model.eval()(batch)), torch.sigmoid(quantized(batch))
    assert (fp32 - int8).abs().max() < 0.02


def test_int8_bytes_are_a_quarter_for_embedding_dominated_models() -> None:
    torch.manual_seed(4)
    model = DLRM(
        num_dense=4,
        table_sizes=[5000, 3000, 2000],
        embedding_dim=16,
        bottom_mlp=[16],
        top_mlp=[8],
        feature_names=["a", "b", "c"],
    )
    ratio = model_bytes(model) / model_bytes(quantize_int8(model))
    # Rows shrink from 16 * 4 = 64 to 16 + 8 = 24 bytes: 2.67x; the 1/3.5..1/4 figure needs D >= 64.
    assert 2.6 < ratio < 2.7, ratio

    torch.manual_seed(4)
    wide = DLRM(
        num_dense=4,
        table_sizes=[5000, 3000],
        embedding_dim=64,
        bottom_mlp=[64],
        top_mlp=[8],
        feature_names=["a", "b"],
    )
    wide_ratio = model_bytes(wide) / model_bytes(quantize_int8(wide))
    assert 3.5 < wide_ratio < 4.0, wide_ratio


def test_plans_must_name_every_unit_with_a_known_precision(make_model) -> None:
    model = make_model()
    plan = uniform_plan(model, "int8")
    assert "sparse_arch.embedding_bags.0" in plan and "over_arch.mlp.0" in plan
    with pytest.raises(ValueError, match=r"missing \['over_arch.mlp.0'\]"):
        apply_precision_plan(model, {k: v for k, v in plan.items() if k != "over_arch.mlp.0"})
    with pytest.raises(ValueError, match="unknown precision 'int3'"):
        build_variant(model, "int3")


def test_mixed_plan_quantizes_only_the_named_units(make_model) -> None:
    model = make_model()
    plan = {**uniform_plan(model, "fp32"), "sparse_arch.embedding_bags.1": "int8"}
    mixed = apply_precision_plan(model, plan)
    assert precision_plan(mixed) == plan
    assert isinstance(mixed.sparse_arch.embedding_bags[1], RowwiseEmbeddingBag)
    assert mixed.sparse_arch.embedding_bags[1].precision == "int8"


def test_fp32_variant_is_an_eval_copy(make_model, make_batch) -> None:
    model = make_model()
    variant = build_variant(model, "fp32")
    assert variant is not model and not variant.training
    batch = make_batch(rows=16)
    assert torch.equal(variant(batch), model.eval()(batch))
