"""The error-bounded codec: every decoded value within its bound, edge cases, refusals."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from quantrec.models.codec import (
    HEADER_BYTES,
    CodecError,
    decode_table,
    encode_table,
    read_header,
)
from quantrec.models.quantize import (
    apply_precision_plan,
    model_bytes,
    serving_bytes,
    uniform_plan,
)
from quantrec.models.recipes import ErrorBoundedEmbeddingBag, RowwiseEmbeddingBag


def _random_table(generator: torch.Generator, case: int) -> torch.Tensor:
    """Tables of varied shapes, distributions and magnitudes (one per ``case``)."""
    rows = int(torch.randint(1, 300, (1,), generator=generator))
    dim = int(torch.randint(1, 24, (1,), generator=generator))
    base = torch.randn(rows, dim, generator=generator)
    kind = case % 5
    if kind == 1:  # heavy tails: a few values far outside the bulk set the range
        base = base**3
    elif kind == 2:  # all positive, far from zero: codes are large, the range small
        base = 100.0 + base * 0.01
    elif kind == 3:  # tiny or huge magnitudes
        base = base * 10.0 ** float(torch.randint(-20, 20, (1,), generator=generator))
    elif kind == 4:  # trained-table-like: most rows near init, a few rows moved far
        base = base * 1e-3
        base[: max(1, rows // 20)] *= 300
    return base


def test_every_decoded_value_is_within_the_bound_on_random_tables() -> None:
    generator = torch.Generator().manual_seed(0)
    for case in range(200):
        table = _random_table(generator, case)
        rel = float(10 ** torch.empty(1).uniform_(-3.5, -0.3, generator=generator))
        data = encode_table(table, rel_bound=rel, name=f"case {case}")
        header = read_header(data)
        decoded = decode_table(data)
        assert decoded.dtype == torch.float32 and decoded.shape == table.shape
        value_range = float(table.double().max() - table.double().min())
        assert header.bound == pytest.approx(rel * value_range, rel=1e-12)
        error = (decoded.double() - table.double()).abs().max()
        assert error <= header.bound, (case, rel, float(error), header.bound)
        assert encode_table(table, rel_bound=rel) == data  # deterministic


def test_constant_rows_and_tables() -> None:
    table = torch.randn(50, 8, generator=torch.Generator().manual_seed(1))
    table[10:20] = 0.25  # constant rows inside a varied table
    data = encode_table(table, rel_bound=0.01)
    assert (decode_table(data) - table).abs().max() <= read_header(data).bound

    constant = torch.full((40, 8), -1.5)
    data = encode_table(constant, rel_bound=0.01)
    assert len(data) == HEADER_BYTES and read_header(data).bound == 0.0
    assert torch.equal(decode_table(data), constant)  # stored exactly
    assert torch.equal(
        decode_table(encode_table(torch.zeros(0, 4), rel_bound=0.1)), torch.zeros(0, 4)
    )


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_inf_are_refused_naming_the_table_and_where(bad: float) -> None:
    table = torch.randn(6, 4)
    table[3, 2] = bad
    with pytest.raises(
        CodecError, match=r"table cat_7: 1 NaN or inf values \(first at row 3, column 2"
    ):
        encode_table(table, rel_bound=0.01, name="cat_7")


def test_a_nan_table_in_a_plan_names_the_unit(make_model) -> None:
    model = make_model(seed=0)
    with torch.no_grad():
        model.sparse_arch.embedding_bags[1].weight[4, 0] = float("nan")
    plan = {**uniform_plan(model, "fp32"), "sparse_arch.embedding_bags.1": "ebc_0.01"}
    with pytest.raises(CodecError, match=r"unit 'sparse_arch.embedding_bags.1' at ebc_0.01: 1 NaN"):
        apply_precision_plan(model, plan)


@pytest.mark.parametrize("rel", [0.0, -0.1, 1.5, float("nan")])
def test_relative_bounds_outside_zero_one_are_refused(rel: float) -> None:
    with pytest.raises(CodecError, match="relative error bound must be in"):
        encode_table(torch.randn(3, 3), rel_bound=rel)


def test_a_bound_below_float32_resolution_is_refused() -> None:
    table = 1e4 + torch.rand(8, 4) * 1e-2  # range 1e-2 around 1e4, whose ulp is ~1e-3
    with pytest.raises(CodecError, match="below float32 resolution.*use a larger bound"):
        encode_table(table, rel_bound=1e-3, name="price_bucket")


def test_cut_or_foreign_bytes_are_refused() -> None:
    data = encode_table(torch.randn(64, 8), rel_bound=0.01)
    with pytest.raises(CodecError, match="frame has"):
        decode_table(data[:-3], name="t")
    with pytest.raises(CodecError, match="shorter than"):
        decode_table(data[:10])
    with pytest.raises(CodecError, match="bytes start with"):
        decode_table(b"PK" + data[2:])


def test_module_stores_encoded_bytes_and_serves_the_decoded_table() -> None:
    torch.manual_seed(2)
    bag = nn.EmbeddingBag(300, 16, mode="sum")
    nn.init.normal_(bag.weight, std=0.3)
    module = ErrorBoundedEmbeddingBag.from_float(bag, rel_bound=0.05)
    assert module.precision == "ebc_0.05" and list(module.state_dict()) == ["encoded"]
    bound = 0.05 * float(bag.weight.detach().max() - bag.weight.detach().min())
    assert (module.weight - bag.weight.detach()).abs().max() <= bound
    assert model_bytes(module) == module.stored_bytes() == module.encoded.numel()
    assert serving_bytes(nn.Sequential(module)) == 300 * 16 * 4
    # Gaussian rows at 5 % of the range: ~2.3 bits a value against row-wise int4's 6.
    assert module.stored_bytes() < 0.5 * model_bytes(RowwiseEmbeddingBag.from_float(bag, bits=4))
    values, offsets = torch.tensor([1, 2, 3, 7]), torch.tensor([0, 3, 3])
    expected = nn.functional.embedding_bag(values, module.weight, offsets, mode="sum")
    assert torch.equal(module(values, offsets), expected)

    skeleton = ErrorBoundedEmbeddingBag(num_embeddings=300, embedding_dim=16, rel_bound=0.05)
    skeleton.load_state_dict(module.state_dict())
    assert torch.equal(skeleton.weight, module.weight)
    other = ErrorBoundedEmbeddingBag(num_embeddings=300, embedding_dim=16, rel_bound=0.01)
    with pytest.raises(RuntimeError, match="encoded with relative bound 0.05"):
        other.load_state_dict(module.state_dict())
    smaller = ErrorBoundedEmbeddingBag(num_embeddings=30, embedding_dim=16, rel_bound=0.05)
    with pytest.raises(RuntimeError, match=r"encoded table is \(300, 16\)"):
        smaller.load_state_dict(module.state_dict())
