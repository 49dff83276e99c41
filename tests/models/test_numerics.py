"""The numeric debugger on real quantized kernels: it names the unit a wrong scale broke."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from quantrec.models.numerics import (
    DEFAULT_THRESHOLD_DB,
    OUTPUT,
    NumericsError,
    compare_numerics,
)
from quantrec.models.quantize import apply_precision_plan, build_variant, uniform_plan
from quantrec.models.train import train_dlrm

FORWARD_ORDER = [
    "dense_arch.mlp.0",
    "dense_arch.mlp.2",
    "sparse_arch.embedding_bags.0",
    "sparse_arch.embedding_bags.1",
    "sparse_arch.embedding_bags.2",
    "over_arch.mlp.0",
    "over_arch.mlp.2",
    OUTPUT,
]


@pytest.fixture
def trained(make_model, make_batch):
    model = make_model(seed=3, embedding_dim=8)
    train_dlrm(model, make_batch(rows=2048, seed=1), seed=0, epochs=2, batch_size=256)
    return model.eval()


@pytest.fixture
def rows(make_batch):
    return make_batch(rows=1024, seed=2)


def _with_wrong_linear_scale(variant, name: str, factor: float = 10.0):
    """The variant as if its artifact carried ``name``'s weight scales times ``factor``."""
    state = variant.state_dict()
    state[f"{name}.weight_scale"] = state[f"{name}.weight_scale"] * factor
    variant.load_state_dict(state)  # the kernels repack from the plain tensors
    return variant


def _with_wrong_row_scales(variant, name: str, factor: float = 10.0):
    """8-bit row-wise rows are D codes, then a float32 scale and a float32 bias: scale x10."""
    state = variant.state_dict()
    packed = state[f"{name}.packed_weight"].clone()
    dim = packed.shape[1] - 8
    scales = packed[:, dim : dim + 4].contiguous().view(torch.float32) * factor
    packed[:, dim : dim + 4] = scales.view(torch.uint8)
    state[f"{name}.packed_weight"] = packed
    variant.load_state_dict(state)
    return variant


def test_a_model_against_itself_is_exact(trained, rows) -> None:
    report = compare_numerics(trained, trained, rows)
    assert report.names() == FORWARD_ORDER
    assert all(u.sqnr_db == math.inf and u.cosine == pytest.approx(1.0) for u in report.units)
    assert all(u.max_rel_error == 0.0 for u in report.units)
    assert report.first_divergence is None


def test_int8_everywhere_stays_above_the_threshold_in_forward_order(trained, rows) -> None:
    report = compare_numerics(trained, build_variant(trained, "int8"), rows, batch_size=256)
    assert report.names() == FORWARD_ORDER
    assert report.first_divergence is None, report.table()
    for unit in report.units:
        assert DEFAULT_THRESHOLD_DB < unit.sqnr_db < math.inf, report.table()
        assert unit.cosine > 0.99 and unit.max_rel_error < 0.2, report.table()
    tables = [u for u in report.units if u.kind == "table"]
    # A table's input is the ids: its own error is all the error it has.
    assert all(u.local_sqnr_db == u.sqnr_db for u in tables)
    assert {u.precision for u in report.units if u.kind != "output"} == {"int8"}


@pytest.mark.parametrize("unit", ["dense_arch.mlp.2", "over_arch.mlp.0"])
def test_a_wrong_linear_scale_is_the_first_divergence(trained, rows, unit: str) -> None:
    broken = _with_wrong_linear_scale(build_variant(trained, "int8"), unit)
    report = compare_numerics(trained, broken, rows, batch_size=256)
    assert report.first_divergence == unit, report.table()
    before = FORWARD_ORDER[: FORWARD_ORDER.index(unit)]
    assert not any(report.unit(name).diverged for name in before)
    # Its own error, not one inherited: x10 outputs are about -19 dB.
    assert report.unit(unit).local_sqnr_db < 0.0
    assert report.unit(OUTPUT).diverged
    assert [u.unit for u in report.units if u.first] == [unit]


def test_wrong_row_scales_of_one_table_are_the_first_divergence(trained, rows) -> None:
    unit = "sparse_arch.embedding_bags.1"
    broken = _with_wrong_row_scales(build_variant(trained, "int8"), unit)
    report = compare_numerics(trained, broken, rows, batch_size=256)
    assert report.first_divergence == unit, report.table()
    assert not report.unit("sparse_arch.embedding_bags.0").diverged
    assert not report.unit("dense_arch.mlp.2").diverged
    assert report.unit(unit).sqnr_db < 0.0


def test_a_mixed_plan_reports_each_units_precision(trained, rows) -> None:
    plan = uniform_plan(trained, "fp32") | {
        "sparse_arch.embedding_bags.0": "int2",
        "over_arch.mlp.0": "int8_static_minmax",
    }
    variant = apply_precision_plan(trained, plan, calibration=rows)
    report = compare_numerics(trained, variant, rows)
    assert report.unit("sparse_arch.embedding_bags.0").precision == "int2"
    assert report.unit("over_arch.mlp.0").precision == "int8_static_minmax"
    assert report.unit("dense_arch.mlp.0").sqnr_db == math.inf  # fp32 in both
    # 2-bit rows: far noisier than 8-bit ones.
    int8 = compare_numerics(trained, build_variant(trained, "int8"), rows)
    table = "sparse_arch.embedding_bags.0"
    assert report.unit(table).sqnr_db < int8.unit(table).sqnr_db - 20.0


def test_the_csv_and_the_table_carry_the_first_divergence(trained, rows) -> None:
    unit = "dense_arch.mlp.0"
    broken = _with_wrong_linear_scale(build_variant(trained, "int8"), unit)
    report = compare_numerics(trained, broken, rows)
    frame = pd.read_csv(pd.io.common.StringIO(report.to_csv()))
    assert list(frame["unit"]) == FORWARD_ORDER
    assert list(frame.loc[frame["first"], "unit"]) == [unit]
    assert {"sqnr_db", "local_sqnr_db", "cosine", "max_rel_error"} <= set(frame.columns)
    text = report.table(reference="fp32 v1", compared="int8 v3")
    assert f"first divergence (SQNR below {DEFAULT_THRESHOLD_DB:g} dB): {unit}" in text
    assert "fp32 v1" in text and "<- first divergence" in text


def test_models_of_other_architectures_are_refused(trained, rows, make_model) -> None:
    other = make_model(seed=0, embedding_dim=8)
    del other.over_arch.mlp[2]
    with pytest.raises(NumericsError, match="different units"):
        compare_numerics(trained, other, rows)
    with pytest.raises(NumericsError, match="0 rows"):
        compare_numerics(trained, trained, rows.slice(0, 0))
