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


def _day(day: int, *, promoted: str | None, searched_ne: float, predicted=None) -> DayOutcome:
    return DayOutcome(
        date=date(2026, 1, day),
        model_name="m",
        mlflow_run_id=f"r{day}",
        decision="promoted" if promoted else "rejected",
        reason="",
        promoted_variant=promoted,
        metrics={"fp32": {"ne": 0.80}, "searched": {"ne": searched_ne}},
        bytes={"fp32": 1000, "int8": 375, "searched": 125},
        plan_source="searched",
        **plan_record(predicted, {"fp32": {"ne": 0.80}, "searched": {"ne": searched_ne}}),
    )


def test_the_plan_frame_follows_what_served_and_the_report_shows_it(tmp_path) -> None:
    import pandas as pd

    from quantrec.models.lifecycle_report import write_lifecycle_report
    from quantrec.models.plan_record import plan_frame, plan_sentences

    interval = DeltaInterval(delta=0.0001, low=-0.0002, high=0.0004, rows=4000)
    days = [
        _day(3, promoted=None, searched_ne=0.8001, predicted=interval),  # no champion yet
        _day(4, promoted="searched", searched_ne=0.8002, predicted=interval),
        _day(5, promoted=None, searched_ne=0.8040),  # kept: the searched of day 4 serves
        _day(6, promoted="int8", searched_ne=0.8001),
    ]
    frame = plan_frame(reversed(days))  # any order in, oldest first out

    assert list(frame.served_variant) == ["", "searched", "searched", "int8"]
    assert frame.served_ratio.tolist()[1:] == [0.125, 0.125, 0.375]
    assert frame.realised.tolist() == pytest.approx([0.000125, 0.00025, 0.005, 0.000125])
    said = plan_sentences(frame, bound=0.0005)
    assert "within the faithfulness bound (±0.05 %) on 3 of 4 run dates" in said[0]
    assert "at most 0.15x fp32 bytes on 2 of 3 run dates; mean 0.208x" in said[1]

    lifecycle = pd.DataFrame(
        {
            "date": [d.date for d in days],
            "frozen_ne": [0.81] * 4,
            "fp32_ne": [0.80] * 4,
            "champion_ne": [0.80] * 4,
            "drift_level": ["ok"] * 4,
            "promoted": [False, True, False, True],
            "outcome": [d.decision for d in days],
        }
    )
    _, html = write_lifecycle_report(
        lifecycle, tmp_path, budget_rel=0.0005, plan=frame, faithfulness_bound=0.0005
    )
    page = html.read_text()
    assert "Precision plan: predicted against realised" in page and "+0.500" in page
    assert (tmp_path / "plan.png").stat().st_size > 1000
