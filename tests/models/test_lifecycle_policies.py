"""The lifecycle's policies between stages: when to search, when to stop, what to prefer,
and the run date's record round trip."""

from datetime import date

import numpy as np

from quantrec.models.gate import reject_invalid_data
from quantrec.models.lifecycle import (
    DayOutcome,
    Partitions,
    PreviousPlan,
    Validation,
    promotion_preference,
    training_window,
    why_search,
    why_stop,
)
from quantrec.models.names import DriftLevel
from quantrec.models.plan import PrecisionPlan
from quantrec.models.stream import holdout_mask

PLAN = PrecisionPlan.from_precisions({"over_arch.mlp.0": "int8"})


def previous(verdict: str | None) -> PreviousPlan:
    return PreviousPlan(plan=PLAN, run_date="2026-01-03", verdict=verdict)


def test_reuse_a_plan_whose_variant_passed():
    assert why_search(previous("promoted"), reuse=True, force=False) is None
    assert why_search(previous("passed"), reuse=True, force=False) is None
    assert why_search(previous(None), reuse=True, force=False) is None


def test_search_again_when_forced_missing_off_failed_or_severely_drifted():
    assert why_search(previous("passed"), reuse=True, force=True) == "search forced"
    assert why_search(None, reuse=True, force=False) == "no earlier plan"
    assert "reuse_plan is off" in why_search(previous("passed"), reuse=False, force=False)
    assert "2026-01-03" in why_search(previous("rejected"), reuse=True, force=False)
    assert (
        why_search(previous("passed"), reuse=True, force=False, drift_level=DriftLevel.SEVERE)
        == "severe drift"
    )
    assert (
        why_search(previous("passed"), reuse=True, force=False, drift_level=DriftLevel.WARN) is None
    )


def test_holdout_mask_holds_out_a_seeded_share_of_the_last_day():
    held = holdout_mask(100, fraction=0.2, seed=0)
    assert held.dtype == bool and held.sum() == 20
    assert np.array_equal(held, holdout_mask(100, fraction=0.2, seed=0))
    assert not np.array_equal(held, holdout_mask(100, fraction=0.2, seed=1))


def test_stop_before_training_on_a_bad_day_or_an_empty_window():
    partitions = Partitions(
        run_date=date(2026, 1, 4), window=(date(2026, 1, 3),), digests={}, schema=None, skipped={}
    )
    passed = Validation(passed=True, summary="ok", report={})
    assert why_stop(partitions, passed, 3) is None
    assert why_stop(partitions, Validation(False, "label has 2", {}), 3) == "label has 2"
    empty = Partitions(run_date=date(2026, 1, 4), window=(), digests={}, schema=None, skipped={})
    assert "no usable day in the 3-day training window" == why_stop(empty, passed, 3)
    assert training_window(date(2026, 1, 4), 2) == (date(2026, 1, 2), date(2026, 1, 3))


def test_low_precision_first_smallest_first_fp32_last():
    sizes = {"fp32": 100, "fp16": 50, "int8": 25, "searched": 12}
    assert promotion_preference(sizes) == ["searched", "int8", "fp16", "fp32"]


def test_a_day_outcome_round_trips_through_its_record():
    decision = reject_invalid_data("no rows", check="data_available")
    outcome = DayOutcome.of_decision(
        decision,
        run_date=date(2026, 1, 4),
        model_name="m",
        run_id="r",
        window=(date(2026, 1, 3),),
        metrics={"fp32": {"ne": 0.9}},
    )
    again = DayOutcome.from_record(outcome.to_record())
    assert again == outcome
    assert outcome.to_record()["date"] == "2026-01-04"
    assert outcome.verdict("fp32") == "rejected"


def test_continual_training_continues_the_parent_on_the_new_days_only():
    from quantrec.models.lifecycle import Lineage, plan_training

    run_date = date(2026, 1, 10)
    window = training_window(run_date, 3)  # 01-07, 01-08, 01-09
    parent = Lineage(
        version="7", trained_through=date(2026, 1, 8), full_retrain_date=date(2026, 1, 5)
    )
    plan = plan_training(run_date, window, mode="continual", full_retrain_days=7, parent=parent)
    assert (plan.mode, plan.days, plan.warm_from) == ("continual", (date(2026, 1, 9),), "7")
    assert plan.full_retrain_date == date(2026, 1, 5)


def test_a_full_retrain_when_due_impossible_or_unwise():
    from quantrec.models.lifecycle import Lineage, plan_training

    run_date = date(2026, 1, 10)
    window = training_window(run_date, 3)

    def plan(parent, **kw):
        options = {"mode": "continual", "full_retrain_days": 7, "parent": parent, **kw}
        return plan_training(run_date, window, **options)

    fresh = Lineage("7", date(2026, 1, 8), date(2026, 1, 5))
    assert plan(None).mode == "full" and plan(None).days == window
    assert plan(fresh, mode="window").mode == "full"
    assert plan(fresh, drift_level=DriftLevel.SEVERE).mode == "full"
    old = Lineage("7", date(2026, 1, 8), date(2026, 1, 3))
    assert "7 days old" in plan(old).reason and plan(old).full_retrain_date == run_date
    gap = Lineage("7", date(2026, 1, 8), date(2026, 1, 5))
    holed = plan_training(
        run_date,
        (date(2026, 1, 7), date(2026, 1, 8)),
        mode="continual",
        full_retrain_days=7,
        parent=gap,
    )
    assert holed.mode == "full" and "not all in the window" in holed.reason
