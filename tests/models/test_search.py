"""Precision search on a small trained model: it respects its budget, prefers small plans, and
skips (with a reason) held-out rows it cannot score."""

from __future__ import annotations

import pytest
import torch

from quantrec.models.batch import Batch
from quantrec.models.plan import PrecisionPlan
from quantrec.models.quantize import (
    apply_precision_plan,
    model_bytes,
    quantizable_units,
    serving_bytes,
)
from quantrec.models.recipes import EBC_PRECISIONS
from quantrec.models.scorer import score
from quantrec.models.search import Budget, SearchResult, search_precision_plan
from quantrec.models.train import train_dlrm

# Without the greedy table recipes, whose clipping happens to improve this toy model's NE,
# the most aggressive plan (2-bit tables) costs ~1 % NE, so a 0.05 % budget must revert units.
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


def _check_within(result: SearchResult, model, held_out, calibration, limit: float) -> None:
    """Re-apply the chosen plan from scratch and score it independently."""
    variant = apply_precision_plan(model, result.chosen.precisions(), calibration=calibration)
    fp32 = score(model, held_out).ne
    delta = (score(variant, held_out).ne - fp32) / fp32
    assert delta <= limit, delta
    assert delta == pytest.approx(result.chosen.ne_delta_rel, abs=1e-12)
    assert model_bytes(variant) == result.chosen.bytes


def test_search_respects_a_relative_budget_and_prefers_fewer_bytes(trained, make_batch) -> None:
    held_out, calibration = make_batch(rows=4096, seed=1), make_batch(rows=512, seed=2)
    result = search_precision_plan(
        trained, held_out, calibration=calibration, table_candidates=PLAIN_TABLES
    )
    assert result.budget == Budget(limit=0.0005, kind="relative")
    aggressive = next(c for c in result.evaluated if c.label == "ranked")
    assert not aggressive.within_budget  # the search had to revert something
    for plan in (result.ranked, result.greedy):
        assert plan.ne_delta_rel <= 0.0005
    assert result.chosen.bytes == min(result.ranked.bytes, result.greedy.bytes)
    assert result.chosen.bytes < 0.6 * result.fp32_bytes
    assert result.chosen_by in result.reason
    _check_within(result, trained, held_out, calibration, 0.0005)

    loose = search_precision_plan(
        trained, held_out, calibration=calibration, table_candidates=PLAIN_TABLES, budget=1.0
    )
    assert loose.chosen.bytes < result.chosen.bytes
    assert loose.chosen.bytes == aggressive.bytes  # nothing needed reverting


def test_search_records_sensitivity_candidates_and_a_reusable_plan(trained, make_batch) -> None:
    held_out, calibration = make_batch(rows=2048, seed=3), make_batch(rows=512, seed=4)
    result = search_precision_plan(
        trained, held_out, calibration=calibration, budget=Budget(0.001, "absolute")
    )
    units = quantizable_units(trained)
    assert {(r["unit"], r["precision"]) for r in result.sensitivity} >= {
        (name, "fp16") for name in units
    }
    assert len(result.sensitivity) == 8 * 4 + 7 * 3  # (candidates + fp32) per unit
    static = [r for r in result.sensitivity if r["precision"].startswith("int8_static")]
    assert static and all(r["bytes"] > 0 for r in static)
    assert all(c.ne_delta_rel * result.ne_fp32 <= 0.001 for c in (result.ranked, result.greedy))
    assert PrecisionPlan.from_json(result.chosen.to_json()) == result.chosen
    assert result.chosen.latency_ms > 0 and result.chosen.latency_batch == 2048
    assert result.to_dict()["chosen_by"] == result.chosen_by


def test_budget_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="kind='percent'"):
        Budget(limit=0.1, kind="percent")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit=-1"):
        Budget(limit=-1)


def test_confirmation_rows_rescore_the_finalists_and_revert_when_both_fail(
    trained, make_batch
) -> None:
    """Seed 1: both finalists pass on the search rows but fail on the confirmation rows."""
    confirmation = make_batch(rows=1024, seed=101)
    result = search_precision_plan(
        trained,
        make_batch(rows=1024, seed=1),
        calibration=make_batch(rows=512, seed=6),
        table_candidates=PLAIN_TABLES,
        linear_candidates=("int8",),
        confirmation=confirmation,
    )
    for plan in (result.ranked, result.greedy):
        assert plan.extra["confirmation_ne_delta_rel"] > 0.0005
    assert result.chosen_by == "confirmed" and "reverted" in result.reason
    assert result.chosen.extra["confirmation_ne_delta_rel"] <= 0.0005
    assert result.chosen.bytes >= min(result.ranked.bytes, result.greedy.bytes)
    _check_within(result, trained, confirmation, make_batch(rows=512, seed=6), 0.0005)
    assert PrecisionPlan.from_json(result.chosen.to_json()) == result.chosen


def _one_class(batch, label: float):
    """``batch`` with every label set to ``label``: a held-out half of a sparse day."""
    return Batch(
        dense=batch.dense, sparse=batch.sparse, labels=torch.full_like(batch.labels, label)
    )


@pytest.mark.parametrize("label", [0.0, 1.0])
def test_held_out_rows_of_one_class_skip_the_search_and_keep_the_fp32_plan(
    trained, make_batch, label
) -> None:
    held_out = _one_class(make_batch(rows=512, seed=11), label)
    result = search_precision_plan(trained, held_out, confirmation=make_batch(rows=256, seed=12))
    assert result.skipped and result.chosen_by == "skipped"
    assert f"every label is {int(label)}" in result.reason and "search skipped" in result.reason
    assert set(result.chosen.precisions().values()) == {"fp32"}
    assert result.chosen.bytes == result.fp32_bytes == model_bytes(trained)
    assert result.evaluated == [] and result.sensitivity == [] and result.ne_fp32 is None
    record = result.to_dict()
    assert record["chosen_by"] == "skipped" and record["ne_fp32"] is None
    assert PrecisionPlan.from_json(result.chosen.to_json()) == result.chosen


def test_no_held_out_rows_skip_the_search(trained, make_batch) -> None:
    result = search_precision_plan(trained, make_batch(rows=64, seed=13).slice(0, 0))
    assert result.skipped and "no rows" in result.reason


def test_confirmation_rows_without_a_click_skip_only_the_confirmation(trained, make_batch) -> None:
    result = search_precision_plan(
        trained,
        make_batch(rows=1024, seed=14),
        calibration=make_batch(rows=512, seed=15),
        table_candidates=PLAIN_TABLES,
        linear_candidates=("int8",),
        confirmation=_one_class(make_batch(rows=256, seed=16), 0.0),
    )
    assert not result.skipped and result.chosen_by in ("ranked", "greedy")
    assert "confirmation skipped" in result.reason and "every label is 0" in result.reason
    assert "confirmation_ne_delta_rel" not in result.chosen.extra


def test_search_can_choose_error_bounded_tables_counting_their_stored_bytes(
    trained, make_batch
) -> None:
    held_out, calibration = make_batch(rows=4096, seed=1), make_batch(rows=512, seed=2)
    result = search_precision_plan(
        trained,
        held_out,
        calibration=calibration,
        linear_candidates=("int8",),
        table_candidates=PLAIN_TABLES + EBC_PRECISIONS,
    )
    chosen = result.chosen.precisions()
    compressed = [name for name, p in chosen.items() if p in EBC_PRECISIONS]
    assert compressed, chosen
    _check_within(result, trained, held_out, calibration, 0.0005)
    variant = apply_precision_plan(trained, chosen)
    for name in compressed:
        unit = variant.get_submodule(name)
        # The search counts what is stored and shipped, not the decoded fp32 table served.
        assert result.chosen.units[name].bytes == unit.stored_bytes() < unit.serving_bytes()
    assert serving_bytes(variant) > model_bytes(variant) == result.chosen.bytes
    assert PrecisionPlan.from_json(result.chosen.to_json()).apply(trained).state_dict().keys() == (
        variant.state_dict().keys()
    )
