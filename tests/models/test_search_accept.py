"""Faithfulness by interval: the search refuses a plan whose paired bootstrap interval of
its NE change crosses the bound, backs off until it holds, and accepts one within it."""

from __future__ import annotations

import pytest

from quantrec.models.noise import PairedIntervals
from quantrec.models.quantize import apply_precision_plan, model_bytes, uniform_plan
from quantrec.models.scorer import predict_proba
from quantrec.models.search import Faithfulness, search_precision_plan
from quantrec.models.search_accept import DeltaInterval, DeltaMeter
from quantrec.models.train import train_dlrm

PLAIN_TABLES = ("int8", "int4", "int2")


@pytest.fixture
def trained(make_model, make_batch):
    model = make_model(seed=0, embedding_dim=8)
    train_dlrm(
        model,
        make_batch(rows=2048),
        epochs=3,
        batch_size=64,
        learning_rate=0.02,
        seed=0,
        sparse_optimizer="sparse_adam",
        fused=False,
    )
    return model


def _interval(model, precisions, rows, calibration) -> DeltaInterval:
    """The plan rebuilt from scratch and measured on ``rows`` by a fresh meter."""
    variant = apply_precision_plan(model, precisions, calibration=calibration)
    return DeltaMeter(model, rows, Faithfulness()).measure(variant)


def test_the_meter_is_the_gates_paired_bootstrap(trained, make_batch) -> None:
    rows, calibration = make_batch(rows=2048, seed=21), make_batch(rows=512, seed=22)
    meter = DeltaMeter(trained, rows, Faithfulness())
    assert meter.measure(trained) == DeltaInterval(delta=0.0, low=0.0, high=0.0, rows=2048)
    plan = {**uniform_plan(trained, "fp32"), "sparse_arch.embedding_bags.0": "int2"}
    variant = apply_precision_plan(trained, plan, calibration=calibration)
    interval = meter.measure(variant)
    labels = rows.labels.double().numpy()
    gate = PairedIntervals(
        labels,
        {"p": predict_proba(trained, rows), "v": predict_proba(variant, rows)},
        {"all": None},
        refs=["p"],
        skip=[],
        samples=200,
        seed=0,
        confidence=0.95,
    ).change("ne", "rel", "v", "p", "all")
    assert (interval.low, interval.high) == gate
    assert interval.low < interval.delta < interval.high
    assert interval.farthest == max(abs(gate[0]), abs(gate[1]))


def test_search_refuses_a_plan_whose_interval_crosses_the_bound(trained, make_batch) -> None:
    """A loose budget lets the search pick the most aggressive plan; a tiny faithfulness
    bound refuses it, and the search backs off until the interval holds."""
    held_out, confirmation = make_batch(rows=2048, seed=1), make_batch(rows=2048, seed=31)
    calibration = make_batch(rows=512, seed=2)
    common = dict(
        calibration=calibration,
        table_candidates=PLAIN_TABLES,
        linear_candidates=("int8",),
        budget=1.0,
        confirmation=confirmation,
    )
    bound = 0.002
    plain = search_precision_plan(trained, held_out, **common)
    crossing = _interval(trained, plain.chosen.precisions(), confirmation, calibration)
    assert not crossing.holds(bound), crossing  # the case: the unchecked plan crosses

    result = search_precision_plan(
        trained, held_out, **common, faithfulness=Faithfulness(bound=bound)
    )
    assert result.chosen_by in ("backed_off", "uniform_int8", "uniform_fp16"), result.reason
    assert "crossed the faithfulness bound" in result.reason
    assert result.chosen.precisions() != plain.chosen.precisions()
    assert result.chosen.bytes > plain.chosen.bytes
    assert result.predicted is not None and result.predicted.holds(bound)
    # Independently: the accepted plan rebuilt from its JSON holds on the same rows.
    again = _interval(trained, result.chosen.precisions(), confirmation, calibration)
    assert again == result.predicted
    assert (
        model_bytes(
            apply_precision_plan(trained, result.chosen.precisions(), calibration=calibration)
        )
        == result.chosen.bytes
    )
    assert result.chosen.extra["predicted_delta_rel"]["high"] == result.predicted.high
    assert result.to_dict()["predicted"]["low"] == result.predicted.low


def test_search_accepts_a_plan_whose_interval_is_within_the_bound(trained, make_batch) -> None:
    held_out, confirmation = make_batch(rows=2048, seed=1), make_batch(rows=2048, seed=31)
    calibration = make_batch(rows=512, seed=2)
    common = dict(
        calibration=calibration,
        table_candidates=PLAIN_TABLES,
        linear_candidates=("int8",),
        budget=1.0,
        confirmation=confirmation,
    )
    plain = search_precision_plan(trained, held_out, **common)
    finalists = [plain.ranked.precisions(), plain.greedy.precisions()]
    bound = 2 * max(_interval(trained, p, confirmation, calibration).farthest for p in finalists)
    result = search_precision_plan(
        trained, held_out, **common, faithfulness=Faithfulness(bound=bound)
    )
    assert result.chosen_by in ("ranked", "greedy") and "faithful:" in result.reason
    assert result.chosen.precisions() in finalists  # the searched plan itself, no back-off
    assert result.predicted.holds(bound) and not result.predicted.holds(bound / 4)


def test_faithfulness_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="bound=-0.1"):
        Faithfulness(bound=-0.1)
    with pytest.raises(ValueError, match="samples=5"):
        Faithfulness(samples=5)
