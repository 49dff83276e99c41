"""Fused training tables: lookups, gradients, row-wise Adagrad and write-back match per-table."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from quantrec.models.batch import Batch, KeyedJaggedIds
from quantrec.models.fused import FusedTables, RowSparseAdam, RowwiseAdagrad, fuse_ids
from quantrec.models.quantize import apply_precision_plan, uniform_plan


def _jagged(base: Batch) -> KeyedJaggedIds:
    """``base``'s ids with feature 1 multi-valued: bags [a, b, a], [], [c], ... (duplicates)."""
    rows = base.sparse.batch_size
    lengths = torch.tensor([3, 0, 1] * (rows // 3) + [2] * (rows % 3))
    values = torch.randint(0, 61, (int(lengths.sum()),), generator=torch.Generator().manual_seed(0))
    values[2] = values[0]  # a repeated id inside one bag
    offsets = torch.cumsum(lengths, 0) - lengths
    return KeyedJaggedIds(
        keys=base.sparse.keys,
        values=(base.sparse.values[0], values, base.sparse.values[2]),
        offsets=(base.sparse.offsets[0], offsets, base.sparse.offsets[2]),
    )


@pytest.mark.parametrize("jagged", [False, True])
def test_fused_lookup_and_gradients_equal_per_table(make_model, make_batch, jagged) -> None:
    model = make_model(seed=3, embedding_dim=8)
    base = make_batch(rows=50, seed=4)
    ids = _jagged(base) if jagged else base.sparse
    tables = FusedTables(model.sparse_arch)
    fused = fuse_ids(ids, first_row=tables.first_row, table_sizes=tables.table_sizes)
    assert (fused.bag_of_value is None) == (not jagged)

    pooled = tables.pooled(fused).requires_grad_()
    expected = model.sparse_arch(ids)
    assert torch.equal(pooled, expected.detach())

    # The same upstream gradient through both paths.
    upstream = torch.randn(expected.shape, generator=torch.Generator().manual_seed(1))
    (expected * upstream).sum().backward()
    (pooled * upstream).sum().backward()
    rows_grad = tables.row_gradients(fused, pooled.grad)
    for f, bag in enumerate(model.sparse_arch.embedding_bags):
        dense_grad = bag.weight.grad.to_dense()
        lo = int(tables.first_row[f])
        mine = torch.zeros_like(dense_grad)
        in_table = (fused.rows >= lo) & (fused.rows < lo + bag.num_embeddings)
        mine[fused.rows[in_table] - lo] = rows_grad[in_table]
        torch.testing.assert_close(mine, dense_grad, rtol=1e-6, atol=1e-6)


def test_fused_ids_are_distinct_sorted_rows_with_an_inverse(make_batch) -> None:
    ids = _jagged(make_batch(rows=30))
    fused = fuse_ids(
        ids, first_row=torch.tensor([0, 97, 158]), table_sizes=torch.tensor([97, 61, 24])
    )
    assert torch.equal(fused.rows[fused.inverse], fused.values)
    assert torch.equal(fused.rows, torch.unique(fused.values))
    assert fused.offsets.shape == (30 * 3,) and fused.batch_size == 30


def _slow_rowwise_adagrad(weight, state, steps, lr, eps):
    """Per-row Python: sum each step's duplicates, then update every touched row."""
    weight, state = weight.clone().double(), state.clone().double()
    for rows, grads in steps:
        summed: dict[int, torch.Tensor] = {}
        for row, grad in zip(rows.tolist(), grads.double()):
            summed[row] = summed.get(row, 0) + grad
        for row, grad in summed.items():
            state[row] += float((grad * grad).mean())
            weight[row] -= lr * grad / (state[row].sqrt() + eps)
    return weight, state


def test_rowwise_adagrad_matches_a_slow_reference_with_duplicate_ids() -> None:
    torch.manual_seed(0)
    weight = torch.randn(10, 4)
    steps = [
        (torch.tensor([3, 1, 3, 3, 7]), torch.randn(5, 4)),  # row 3 three times
        (torch.tensor([7, 0, 7]), torch.randn(3, 4)),
        (torch.tensor([3]), torch.randn(1, 4)),
    ]
    optimizer = RowwiseAdagrad(num_rows=10, lr=0.1, eps=1e-8)
    fast = weight.clone()
    for rows, grads in steps:
        unique, inverse = torch.unique(rows, return_inverse=True)
        summed = torch.zeros(len(unique), 4).index_add_(0, inverse, grads)
        optimizer.step(fast, unique, summed)
    expected_weight, expected_state = _slow_rowwise_adagrad(
        weight, torch.zeros(10), steps, 0.1, 1e-8
    )
    torch.testing.assert_close(fast, expected_weight.float(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(optimizer.state, expected_state.float(), rtol=1e-6, atol=0)
    untouched = torch.tensor([2, 4, 5, 6, 8, 9])
    assert torch.equal(fast[untouched], weight[untouched])
    assert optimizer.state[untouched].abs().sum() == 0


def test_rowwise_adagrad_rejects_a_bad_learning_rate() -> None:
    with pytest.raises(ValueError, match="lr > 0, got -1"):
        RowwiseAdagrad(num_rows=3, lr=-1.0)


def test_write_back_restores_the_per_table_layout(make_model) -> None:
    model = make_model(seed=1)
    names = {n: (t.shape, t.dtype) for n, t in model.state_dict().items()}
    tables = FusedTables(model.sparse_arch)
    assert tables.weight.shape == (97 + 61 + 24, 4)
    with torch.no_grad():
        tables.weight.copy_(torch.arange(tables.weight.numel()).view_as(tables.weight))
    params_before = [id(p) for p in model.parameters()]
    tables.write_back(model.sparse_arch)
    assert {n: (t.shape, t.dtype) for n, t in model.state_dict().items()} == names
    assert [id(p) for p in model.parameters()] == params_before  # same Parameters, new values
    hour = model.sparse_arch.embedding_bags[2].weight
    assert torch.equal(hour, tables.weight[158:])
    bags = model.sparse_arch.embedding_bags
    assert all(isinstance(b, nn.EmbeddingBag) and b.sparse for b in bags)


def test_fused_tables_refuse_quantized_tables(make_model) -> None:
    model = make_model()
    quantized = apply_precision_plan(copy.deepcopy(model), uniform_plan(model, "int8"))
    with pytest.raises(TypeError, match=r"tables \[0, 1, 2\].*fused=False"):
        FusedTables(quantized.sparse_arch)


def test_row_sparse_adam_matches_torch_sparse_adam() -> None:
    torch.manual_seed(1)
    weight = torch.randn(12, 4)
    reference = nn.Parameter(weight.clone())
    torch_adam = torch.optim.SparseAdam([reference], lr=0.05)
    mine = RowSparseAdam(num_rows=12, dim=4, lr=0.05)
    fast = weight.clone()
    for rows in ([3, 1, 3, 9], [1, 1, 0], [3, 11]):  # duplicates summed, rows skipped
        rows = torch.tensor(rows)
        grads = torch.randn(len(rows), 4)
        reference.grad = torch.sparse_coo_tensor(
            rows.unsqueeze(0), grads, (12, 4), check_invariants=True
        )
        torch_adam.step()
        unique, inverse = torch.unique(rows, return_inverse=True)
        mine.step(fast, unique, torch.zeros(len(unique), 4).index_add_(0, inverse, grads))
    torch.testing.assert_close(fast, reference.detach(), rtol=1e-6, atol=1e-7)
    assert torch.equal(fast[[2, 4, 5]], weight[[2, 4, 5]])


def test_ids_outside_their_table_are_rejected(make_batch) -> None:
    ids = make_batch(rows=4).sparse
    bad = KeyedJaggedIds(
        keys=ids.keys,
        values=(ids.values[0], ids.values[1] + 61, ids.values[2]),
        offsets=ids.offsets,
    )
    with pytest.raises(ValueError, match="feature 'item' has ids in .* table of 61 rows"):
        fuse_ids(bad, first_row=torch.tensor([0, 97, 158]), table_sizes=torch.tensor([97, 61, 24]))


def test_rowwise_adagrad_initial_accumulator_damps_a_rows_first_step() -> None:
    grad = torch.full((1, 4), 1e-3)
    plain, damped = torch.zeros(3, 4), torch.zeros(3, 4)
    RowwiseAdagrad(num_rows=3, lr=0.1).step(plain, torch.tensor([1]), grad.clone())
    RowwiseAdagrad(num_rows=3, lr=0.1, initial_accumulator=3e-6).step(
        damped, torch.tensor([1]), grad.clone()
    )
    torch.testing.assert_close(plain[1], torch.full((4,), -0.1), rtol=1e-4, atol=0)
    torch.testing.assert_close(damped[1], torch.full((4,), -0.1 * 1e-3 / 2e-3), rtol=1e-4, atol=0)
    with pytest.raises(ValueError, match="initial_accumulator >= 0"):
        RowwiseAdagrad(num_rows=3, lr=0.1, initial_accumulator=-1.0)


def _eager_decayed_adagrad(weight, steps, *, lr, decay, eps=1e-8):
    """Every row every step: skipped rows shrink by lr * decay / root, touched ones get the
    L2 gradient added. What the lazy optimizer must reproduce."""
    state = torch.zeros(weight.shape[0])
    for rows, grad in steps:
        touched = torch.zeros(weight.shape[0], dtype=torch.bool)
        touched[rows] = True
        shrink = 1 - lr * decay / (state.sqrt() + eps)
        weight[~touched] *= shrink.clamp(min=0)[~touched].unsqueeze(1)
        g = grad + decay * weight[rows]
        state[rows] += g.square().mean(1)
        weight[rows] -= lr * g / (state[rows].sqrt() + eps).unsqueeze(1)
    return weight


def test_lazy_weight_decay_equals_decaying_every_row_every_step() -> None:
    generator = torch.Generator().manual_seed(0)
    start = torch.randn(6, 4, generator=generator)
    steps = []
    for rows in ([0, 1, 2], [1, 3], [0, 1], [4], [1, 2, 5]):
        rows = torch.tensor(rows)
        steps.append((rows, torch.randn(len(rows), 4, generator=generator)))
    eager = _eager_decayed_adagrad(start.clone(), steps, lr=0.1, decay=0.5)
    lazy, optimizer = start.clone(), RowwiseAdagrad(num_rows=6, lr=0.1, weight_decay=0.5)
    for rows, grad in steps:
        optimizer.step(lazy, rows, grad.clone())
    assert not torch.allclose(lazy, eager)  # rows 0, 2, 3, 4 still owe decay
    optimizer.catch_up(lazy)
    torch.testing.assert_close(lazy, eager, rtol=1e-5, atol=1e-6)
    optimizer.catch_up(lazy)  # idempotent
    torch.testing.assert_close(lazy, eager, rtol=1e-5, atol=1e-6)
