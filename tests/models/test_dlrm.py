"""DLRM parts: shapes, the interaction layout, argument checks, rebuild from architecture()."""

from __future__ import annotations

import json

import pytest
import torch

from quantrec.models.batch import Batch, KeyedJaggedIds
from quantrec.models.dlrm import DLRM, DenseArch, InteractionArch, OverArch, SparseArch

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
