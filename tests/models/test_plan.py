"""Precision plans: every precision applies and reloads bit for bit; JSON round-trips."""

from __future__ import annotations

import json

import pytest
import torch

from quantrec.models.artifact import ArtifactError, load_model, save_model
from quantrec.models.plan import PlanError, PrecisionPlan, UnitPlan
from quantrec.models.quantize import apply_precision_plan, precision_plan, quantizable_units
from quantrec.models.recipes import LINEAR_PRECISIONS, RECIPES, TABLE_PRECISIONS
from quantrec.models.train import train_dlrm

EVERY_PRECISION = sorted(set(LINEAR_PRECISIONS + TABLE_PRECISIONS) - {"fp32"})


@pytest.fixture
def trained(make_model, make_batch):
    model = make_model(seed=7)
    train_dlrm(model, make_batch(rows=256), epochs=1, batch_size=64, learning_rate=0.02, seed=0)
    return model


def _plan_using(model, precision: str) -> dict[str, str]:
    """``precision`` on every unit it applies to, fp32 elsewhere."""
    return {
        name: precision if (type(unit), precision) in RECIPES else "fp32"
        for name, unit in quantizable_units(model).items()
    }


@pytest.mark.parametrize("precision", EVERY_PRECISION)
def test_every_precision_reloads_bit_for_bit(
    trained, make_batch, tiny_schema, tmp_path, precision
) -> None:
    plan = PrecisionPlan.from_precisions(_plan_using(trained, precision), bytes=123)
    variant = plan.apply(trained, calibration=make_batch(rows=256, seed=2))
    assert precision in precision_plan(variant).values()
    path = save_model(variant, tmp_path, schema=tiny_schema, precision="searched", plan=plan)

    weights = torch.load(path / "weights.pt", weights_only=True)
    assert all(type(t) is torch.Tensor for t in weights.values())
    loaded = load_model(path)
    assert loaded.plan == plan and loaded.precision == "searched"
    batch = make_batch(rows=300, seed=3)
    with torch.inference_mode():
        assert torch.equal(loaded.model(batch), variant(batch))
        torch.testing.assert_close(loaded.model(batch), trained(batch), atol=0.5, rtol=0)


def test_plan_json_round_trips_with_measurements() -> None:
    plan = PrecisionPlan(
        units={
            "over_arch.mlp.0": UnitPlan.of("int8_static_histogram", ne_delta_rel=1.25e-4, bytes=7),
            "sparse_arch.embedding_bags.0": UnitPlan.of("int4_greedy", ne_delta_rel=-3e-5),
        },
        ne_delta_rel=0.000431,
        bytes=123456,
        latency_ms=1.5,
        latency_batch=2048,
        notes="ranked: smallest within budget",
    )
    text = plan.to_json()
    assert PrecisionPlan.from_json(text) == plan
    body = json.loads(text)
    assert body["units"]["over_arch.mlp.0"]["calibration"] == "histogram"
    assert list(body["units"]) == ["over_arch.mlp.0", "sparse_arch.embedding_bags.0"]


def test_plan_json_errors_name_the_problem() -> None:
    good = json.loads(PrecisionPlan.from_precisions({"a": "int8"}).to_json())
    with pytest.raises(PlanError, match="format_version 7"):
        PrecisionPlan.from_json(json.dumps({**good, "format_version": 7}))
    with pytest.raises(PlanError, match="unknown precision 'int3'"):
        UnitPlan.of("int3")
    with pytest.raises(PlanError, match="calibrates with 'minmax'"):
        UnitPlan(precision="int8_static_minmax", calibration="histogram")


def test_reused_plan_recalibrates_static_units_on_fresh_rows(trained, make_batch) -> None:
    plan = PrecisionPlan.from_precisions(
        {**_plan_using(trained, "int4"), "over_arch.mlp.0": "int8_static_minmax"}
    )
    assert plan.needs_calibration()
    with pytest.raises(PlanError, match="calibration=<Batch>"):
        plan.apply(trained)
    day_one = plan.apply(trained, calibration=make_batch(rows=256, seed=4))
    day_two = plan.apply(trained, calibration=make_batch(rows=256, seed=5))
    first = day_one.over_arch.mlp[0].input_range
    assert not torch.equal(first, day_two.over_arch.mlp[0].input_range)
    direct = apply_precision_plan(
        trained, plan.precisions(), calibration=make_batch(rows=256, seed=4)
    )
    assert torch.equal(direct.over_arch.mlp[0].input_range, first)


def test_plan_must_describe_the_saved_model(trained, tiny_schema, tmp_path) -> None:
    plan = PrecisionPlan.from_precisions(_plan_using(trained, "int8"))
    with pytest.raises(ArtifactError, match="plan does not describe the model"):
        save_model(trained, tmp_path, schema=tiny_schema, precision="fp32", plan=plan)
    with pytest.raises(ArtifactError, match="'int4' does not describe the model"):
        save_model(trained, tmp_path, schema=tiny_schema, precision="int4")
