"""Fused table lookups give the per-table numbers bit for bit."""

from __future__ import annotations

import torch

from quantrec.models.batch import Batch, KeyedJaggedIds
from quantrec.models.fused import FusedSparseArch, fuse_lookups
from quantrec.models.quantize import apply_precision_plan, uniform_plan


def test_fused_lookups_match_per_table_lookups_for_mixed_plans(make_model, make_batch) -> None:
    model = make_model(seed=1, embedding_dim=8)
    plan = {
        **uniform_plan(model, "int8"),
        "sparse_arch.embedding_bags.0": "int4",
        "sparse_arch.embedding_bags.1": "fp16",
        "sparse_arch.embedding_bags.2": "int4_greedy",
    }
    quantized = apply_precision_plan(model, plan)
    fused = fuse_lookups(quantized)
    assert isinstance(fused.sparse_arch, FusedSparseArch)
    assert [bits for bits, _ in fused.sparse_arch.groups] == [4]
    batch = make_batch(rows=200, seed=2)
    with torch.inference_mode():
        assert torch.equal(fused(batch), quantized(batch))


def test_fused_lookups_keep_jagged_and_empty_bags(make_model, make_batch) -> None:
    model = make_model(seed=2)
    tables = {n: "int2" for n in uniform_plan(model, "fp32") if n.startswith("sparse_arch")}
    quantized = apply_precision_plan(model, {**uniform_plan(model, "fp32"), **tables})
    base = make_batch(rows=3)
    # Feature 0: bags [a, b], [], [c]; the others one id per bag.
    values = (torch.tensor([5, 7, 9]),) + base.sparse.values[1:]
    offsets = (torch.tensor([0, 2, 2]),) + base.sparse.offsets[1:]
    sparse = KeyedJaggedIds(keys=base.sparse.keys, values=values, offsets=offsets)
    batch = Batch(dense=base.dense, sparse=sparse, labels=base.labels)
    with torch.inference_mode():
        expected = quantized.sparse_arch(sparse)
        got = fuse_lookups(quantized).sparse_arch(sparse)
        assert torch.equal(got, expected) and got[1, 0].abs().sum() == 0
        assert torch.equal(fuse_lookups(quantized)(batch), quantized(batch))


def test_fp32_tables_are_fused_into_one_lookup(make_model, make_batch) -> None:
    model = make_model(seed=3, embedding_dim=8).eval()
    fused = fuse_lookups(model)
    arch = fused.sparse_arch
    assert arch.float_features == [0, 1, 2] and len(arch.others) == 0
    assert arch.weight_fp32.shape == (97 + 61 + 24, 8)
    batch = make_batch(rows=200, seed=2)
    with torch.inference_mode():
        assert torch.equal(arch(batch.sparse), model.sparse_arch(batch.sparse))
        assert torch.equal(fused(batch), model(batch))


def test_fp32_and_quantized_groups_fuse_side_by_side(make_model, make_batch) -> None:
    model = make_model(seed=4, embedding_dim=8)
    plan = {
        **uniform_plan(model, "fp32"),
        "sparse_arch.embedding_bags.1": "int8",
        "sparse_arch.embedding_bags.2": "fp16",
    }
    mixed = apply_precision_plan(model, plan)
    fused = fuse_lookups(mixed)
    assert fused.sparse_arch.float_features == [0]
    assert [bits for bits, _ in fused.sparse_arch.groups] == [8]
    assert list(fused.sparse_arch.others) == ["2"]
    base = make_batch(rows=3)
    values = (torch.tensor([5, 7, 9]),) + base.sparse.values[1:]  # jagged, one empty bag
    sparse = KeyedJaggedIds(
        keys=base.sparse.keys,
        values=values,
        offsets=(torch.tensor([0, 2, 2]),) + base.sparse.offsets[1:],
    )
    with torch.inference_mode():
        assert torch.equal(fused.sparse_arch(sparse), mixed.sparse_arch(sparse))
        assert torch.equal(fused(make_batch(rows=100)), mixed(make_batch(rows=100)))
