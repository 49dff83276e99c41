"""Predicted against realised: the reuse rule that searches again when a plan drifts towards
the faithfulness bound, the reuse check on real quantized variants, and the day's record."""

from __future__ import annotations

from datetime import date

import pytest

from quantrec.models.lifecycle import (
    DayOutcome,
    PreviousPlan,
    Trained,
    reuse_plan,
    reuse_refused,
    why_search,
)
from quantrec.models.names import Variant
from quantrec.models.plan import PrecisionPlan
from quantrec.models.plan_record import plan_record, predicted_vs_realised, realised_delta
from quantrec.models.quantize import uniform_plan
from quantrec.models.search import Faithfulness
from quantrec.models.search_accept import DeltaInterval
from quantrec.models.train import train_dlrm

PLAN = PrecisionPlan.from_precisions({"over_arch.mlp.0": "int8"})


def _previous(realised: float | None) -> PreviousPlan:
    return PreviousPlan(
        plan=PLAN, run_date="2026-01-03", verdict="promoted", realised_delta=realised
    )


def test_a_reused_plan_drifting_towards_the_bound_is_searched_again() -> None:
    kept = dict(reuse=True, force=False, faithfulness=0.0005, drift_share=0.75)
    assert why_search(_previous(0.0003), **kept) is None
    assert why_search(_previous(-0.0003), **kept) is None
    assert why_search(_previous(None), **kept) is None  # nothing recorded: no evidence
    for realised in (0.0004, -0.0004, 0.002):  # both ways: a faithful copy stays close
        reason = why_search(_previous(realised), **kept)
        assert "2026-01-03" in reason and "75%" in reason and "faithfulness" in reason
    assert why_search(_previous(0.002), reuse=True, force=False) is None  # no bound given


@pytest.fixture
def trained(make_model, make_batch, tiny_schema) -> Trained:
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
    model.eval()
    holdout = make_batch(rows=2048, seed=41)
    return Trained(model=model, report=None, holdout=holdout, sample=None, schema=tiny_schema)


def test_the_reuse_check_predicts_and_refuses_a_plan_crossing_the_bound(trained) -> None:
    aggressive = PrecisionPlan.from_precisions(
        {n: "int2" if "embedding" in n else "int8" for n in uniform_plan(trained.model, "fp32")}
    )
    previous = PreviousPlan(plan=aggressive, run_date="2026-01-03", verdict="promoted")
    tight, loose = Faithfulness(bound=0.0005), Faithfulness(bound=0.5)
    choice = reuse_plan(previous, trained, faithfulness=tight)
    assert choice.source == "reused" and choice.predicted is not None
    assert choice.predicted.rows == len(trained.holdout)
    assert choice.predicted.low <= choice.predicted.delta <= choice.predicted.high
    assert not choice.predicted.holds(0.0005)  # 2-bit tables: far from fp32
    assert "crosses the faithfulness bound" in reuse_refused(choice, tight)
    assert reuse_refused(choice, loose) is None
    assert reuse_refused(reuse_plan(previous), tight) is None  # unchecked: nothing to refuse

    faithful = PrecisionPlan.from_precisions(uniform_plan(trained.model, "fp16"))
    kept = reuse_plan(
        PreviousPlan(plan=faithful, run_date="2026-01-03"), trained, faithfulness=tight
    )
    assert kept.predicted.holds(0.0005) and reuse_refused(kept, tight) is None


def test_the_record_fields_round_trip_and_old_records_still_load() -> None:
    interval = DeltaInterval(delta=0.0002, low=-0.0001, high=0.0006, rows=4000)
    metrics = {"fp32": {"ne": 0.80}, "searched": {"ne": 0.8002}, "int8": {"ne": 0.81}}
    fields = plan_record(interval, metrics)
    assert fields["predicted_delta"] == 0.0002 and fields["predicted_delta_high"] == 0.0006
    assert fields["realised_delta"] == pytest.approx(0.00025)
    outcome = DayOutcome(
        date=date(2026, 1, 4),
        model_name="m",
        mlflow_run_id="r",
        decision="promoted",
        reason="ok",
        promoted_variant="searched",
        metrics=metrics,
        bytes={"fp32": 1000, "searched": 125},
        plan_source="searched",
        **fields,
    )
    record = outcome.to_record()
    assert (
        record["predicted_delta_low"] == -0.0001
        and record["realised_delta"] == fields["realised_delta"]
    )
    assert DayOutcome.from_record(record) == outcome
    old = {k: v for k, v in record.items() if "_delta" not in k}
    loaded = DayOutcome.from_record(old)
    assert loaded.predicted_delta is None and loaded.realised_delta is None
    assert plan_record(None, {"fp32": {"ne": 0.8}})["realised_delta"] is None
    assert realised_delta({Variant.FP32: 0.8}) is None

    table = predicted_vs_realised([outcome, loaded.replace(date=date(2026, 1, 3))], bound=0.0005)
    assert list(table["date"]) == ["2026-01-03", "2026-01-04"]  # oldest first
    newest = table.iloc[1]
    assert newest["predicted %"] == "+0.020" and newest["interval %"] == "[-0.010, +0.060]"
    assert newest["realised %"] == "+0.025" and newest["realised within bound"] == "yes"
    assert newest["searched bytes / fp32"] == "0.125" and newest["served"] == "searched"
    # An old record: realised from its metrics, nothing predicted.
    assert table.iloc[0]["predicted %"] == "" and table.iloc[0]["realised %"] == "+0.025"
