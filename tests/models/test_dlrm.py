"""DLRM parts: shapes, the interaction layout, argument checks, rebuild from architecture()."""

from __future__ import annotations

import json

import pytest
import torch

from quantrec.models.batch import Batch, KeyedJaggedIds
from quantrec.models.dlrm import (
    DLRM,
    DenseArch,
    DenseTransform,
    InteractionArch,
    OverArch,
    SparseArch,
)

ARGS = dict(
    num_dense=3,
    table_sizes=[10, 20],
    embedding_dim=4,
    bottom_mlp=[8, 4],
    top_mlp=[6],
    feature_names=["a", "b"],
)


def _batch(rows: int = 5) -> Batch:
    return Batch(
        dense=torch.rand(rows, 3),
        sparse=KeyedJaggedIds(
            keys=("a", "b"),
            values=(torch.arange(rows) % 10, torch.arange(rows) % 20),
            offsets=(torch.arange(rows), torch.arange(rows)),
        ),
        labels=torch.zeros(rows),
    )


def test_arch_output_shapes() -> None:
    B, N, D, F = 5, 3, 4, 2
    assert DenseArch(in_features=N, layer_sizes=[8, D])(torch.rand(B, N)).shape == (B, D)
    pooled = SparseArch(table_sizes=[10, 20], embedding_dim=D)(_batch(B).sparse)
    assert pooled.shape == (B, F, D)
    assert InteractionArch(num_sparse_features=F)(torch.rand(B, D), pooled).shape == (B, D + 3)
    assert InteractionArch.output_size(num_sparse_features=26, embedding_dim=16) == 16 + 351
    assert OverArch(in_features=7, layer_sizes=[6, 1])(torch.rand(B, 7)).shape == (B, 1)


def test_interaction_is_dense_then_upper_triangle_of_dot_products() -> None:
    dense = torch.tensor([[1.0, 2.0]])
    sparse = torch.tensor([[[3.0, 0.0], [1.0, 1.0]]])
    out = InteractionArch(num_sparse_features=2)(dense, sparse)
    # pairs (dense, s0), (dense, s1), (s0, s1)
    assert out.tolist() == [[1.0, 2.0, 3.0, 3.0, 3.0]]


def test_sparse_arch_sums_bags_and_empty_bag_is_zero() -> None:
    arch = SparseArch(table_sizes=[10], embedding_dim=3)
    ids = KeyedJaggedIds(
        keys=("g",), values=(torch.tensor([1, 2, 4]),), offsets=(torch.tensor([0, 2, 2]),)
    )
    pooled = arch(ids)
    table = arch.embedding_bags[0].weight
    torch.testing.assert_close(pooled[0, 0], table[1] + table[2])
    assert pooled[1, 0].abs().sum() == 0
    torch.testing.assert_close(pooled[2, 0], table[4])


def test_dlrm_forward_gives_one_logit_per_sample() -> None:
    torch.manual_seed(0)
    model = DLRM(**ARGS)
    logits = model(_batch(5))
    assert logits.shape == (5,) and logits.dtype == torch.float32
    assert model.architecture()["top_mlp"] == [6, 1]  # the final logit layer is added
    assert model.over_arch.mlp[-1].out_features == 1
    assert model.sparse_arch.embedding_bags[0].sparse


def test_architecture_is_json_and_rebuilds_the_same_module() -> None:
    torch.manual_seed(3)
    model = DLRM(**ARGS)
    arch = json.loads(json.dumps(model.architecture()))
    torch.manual_seed(3)
    twin = DLRM(**arch)
    assert twin.architecture() == arch
    for (name, a), (_, b) in zip(model.state_dict().items(), twin.state_dict().items()):
        assert torch.equal(a, b), name


def test_from_schema_follows_the_schema(tiny_schema) -> None:
    model = DLRM.from_schema(tiny_schema, embedding_dim=4, bottom_mlp=[4], top_mlp=[3, 1])
    arch = model.architecture()
    assert arch["num_dense"] == 2
    assert arch["table_sizes"] == [97, 61, 24]
    assert arch["feature_names"] == ["user", "item", "hour"]
    assert arch["top_mlp"] == [3, 1]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"bottom_mlp": [8, 5]}, r"last size \(5\) must equal embedding_dim \(4\)"),
        ({"feature_names": ["a"]}, "table_sizes has 2 entries but feature_names has 1"),
        ({"num_dense": 0}, "num_dense must be at least 1, got 0"),
        ({"table_sizes": [], "feature_names": []}, "at least one categorical"),
        ({"feature_names": ["a", "a"]}, "unique"),
        ({"top_mlp": [0]}, "positive"),
    ],
)
def test_constructor_rejects_bad_arguments(change, message) -> None:
    with pytest.raises(ValueError, match=message):
        DLRM(**{**ARGS, **change})


def test_arguments_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        DLRM(3, [10, 20], 4, [8, 4], [6], ["a", "b"])  # type: ignore[misc]


def test_forward_rejects_a_batch_of_another_schema() -> None:
    model = DLRM(**ARGS)
    batch = _batch(2)
    wrong_keys = Batch(
        dense=batch.dense,
        sparse=KeyedJaggedIds(
            keys=("b", "a"), values=batch.sparse.values, offsets=batch.sparse.offsets
        ),
        labels=batch.labels,
    )
    with pytest.raises(
        ValueError, match=r"\['b', 'a'\] differ from the model's feature_names \['a', 'b'\]"
    ):
        model(wrong_keys)
    with pytest.raises(ValueError, match="4 dense features, the model expects 3"):
        model(Batch(dense=torch.rand(2, 4), sparse=batch.sparse, labels=batch.labels))


def test_forward_equals_the_composed_arches_bit_for_bit(make_model, make_batch) -> None:
    """DLRM.forward stacks once instead of stack-then-cat; the numbers must not change."""
    model, batch = make_model(seed=3).eval(), make_batch(rows=64)
    with torch.inference_mode():
        dense = model.dense_arch(batch.dense)
        composed = model.over_arch(model.inter_arch(dense, model.sparse_arch(batch.sparse)))
        assert torch.equal(model(batch), composed.squeeze(1))


def test_dense_transform_is_the_identity_until_fitted() -> None:
    transform = DenseTransform(3)
    x = torch.randn(7, 3)
    assert torch.equal(transform(x), x)


def test_dense_transform_standardises_and_logs_non_negative_columns() -> None:
    generator = torch.Generator().manual_seed(0)
    counts = torch.poisson(torch.full((400, 1), 20.0), generator=generator)
    signed = torch.randn(400, 1, generator=generator) * 3 + 1
    constant = torch.full((400, 1), 5.0)
    x = torch.cat((counts, signed, constant), dim=1)
    transform = DenseTransform(3, log1p_nonnegative=True)
    transform.fit([x[:150], x[150:]])  # parts: one pass, any split

    assert transform.log1p.tolist() == [True, False, True]  # the negative column stays linear
    out = transform(x)
    torch.testing.assert_close(out[:, :2].mean(0), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[:, :2].std(0, unbiased=False), torch.ones(2), atol=1e-4, rtol=0)
    assert torch.equal(out[:, 2], torch.zeros(400))  # a constant column carries nothing
    torch.testing.assert_close(transform.shift[0], torch.log1p(counts).mean(), rtol=1e-6, atol=0)

    plain = DenseTransform(3)  # batches already log1p-transformed: standardise only
    plain.fit([x])
    assert not plain.log1p.any()
    with pytest.raises(ValueError, match="0 rows"):
        plain.fit([x[:0]])
    with pytest.raises(ValueError, match=r"B X 3"):
        plain.fit([torch.rand(4, 2)])


def test_a_state_dict_from_before_dense_transforms_loads_as_the_identity() -> None:
    torch.manual_seed(0)
    model = DLRM(**ARGS)
    model.dense_arch.transform.fit([torch.rand(20, 3) * 4])
    old = {k: v for k, v in model.state_dict().items() if ".transform." not in k}
    model.load_state_dict(old)  # strict: the missing buffers are not an error
    assert torch.equal(model.dense_arch.transform(torch.ones(2, 3)), torch.ones(2, 3))


def test_first_order_joins_a_learned_constant_to_the_interaction() -> None:
    torch.manual_seed(1)
    model = DLRM(**ARGS, first_order=True)
    assert model.architecture()["first_order"] is True
    assert "first_order" not in DLRM(**ARGS).architecture()  # older architectures unchanged
    constant = model.inter_arch.constant
    assert constant.shape == (4,) and constant.requires_grad
    assert model.over_arch.mlp[0].in_features == 4 + 6  # D + (F + 2 choose 2)
    assert (
        InteractionArch.output_size(num_sparse_features=26, embedding_dim=16, first_order=True)
        == 16 + 378
    )
    dense, sparse = torch.rand(3, 4), torch.rand(3, 2, 4)
    out = model.inter_arch(dense, sparse)
    # Pairs after the D dense values: (d,s0) (d,s1) (d,c) (s0,s1) (s0,c) (s1,c); the products
    # with the constant are the per-id first-order scalars.
    torch.testing.assert_close(out[:, -1], sparse[:, 1] @ constant)
    torch.testing.assert_close(out[:, -2], sparse[:, 0] @ constant)
    torch.testing.assert_close(out[:, 4 + 3], (sparse[:, 0] * sparse[:, 1]).sum(1))
    torch.manual_seed(1)
    twin = DLRM(**json.loads(json.dumps(model.architecture())))
    for (name, a), (_, b) in zip(model.state_dict().items(), twin.state_dict().items()):
        assert torch.equal(a, b), name


def test_from_schema_turns_first_order_on_and_logs_raw_dense(tiny_schema) -> None:
    model = DLRM.from_schema(tiny_schema, embedding_dim=4, bottom_mlp=[4], top_mlp=[3, 1])
    assert model.inter_arch.constant is not None
    assert not model.dense_arch.transform.log1p_nonnegative  # the batch applies log1p
    raw = tiny_schema.model_copy(update={"dense_transform": "none"})
    assert DLRM.from_schema(
        raw, embedding_dim=4, bottom_mlp=[4], top_mlp=[1]
    ).dense_arch.transform.log1p_nonnegative


@pytest.mark.parametrize("tables", ["fp16", "int8", "int4_greedy"])
def test_constant_and_dense_transform_survive_quantization_and_artifacts(
    make_model, make_batch, tiny_schema, tmp_path, tables
) -> None:
    from quantrec.models.artifact import load_model, save_model
    from quantrec.models.quantize import apply_precision_plan, float_state_dict, quantizable_units

    model = make_model(seed=2)
    batch = make_batch(rows=64)
    model.dense_arch.transform.fit([batch.dense])
    plan = {
        name: tables if isinstance(unit, torch.nn.EmbeddingBag) else "int8"
        for name, unit in quantizable_units(model).items()
    }
    variant = apply_precision_plan(model, plan)
    names = (
        "inter_arch.constant",
        "dense_arch.transform.shift",
        "dense_arch.transform.scale",
        "dense_arch.transform.log1p",
    )
    for name in names:
        assert torch.equal(variant.state_dict()[name], model.state_dict()[name]), name
        assert torch.equal(float_state_dict(variant)[name], model.state_dict()[name]), name
    loaded = load_model(
        save_model(variant, tmp_path / tables, schema=tiny_schema, precision="searched")
    ).model
    with torch.inference_mode():
        assert torch.equal(loaded(batch), variant(batch))
