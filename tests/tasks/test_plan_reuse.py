import pandas as pd

from quantrec.models.plan import PrecisionPlan
from quantrec.tasks.search import RUN_DATE_TAG, SEARCHED_VERDICT_TAG, why_search
from quantrec.tasks.train import split_holdout

PLAN = PrecisionPlan.from_precisions({"over_arch.mlp.0": "int8"})


def previous(verdict: str | None):
    tags = {RUN_DATE_TAG: "2026-01-03"}
    if verdict:
        tags[SEARCHED_VERDICT_TAG] = verdict
    return PLAN, tags


def test_reuse_a_plan_whose_variant_passed():
    assert why_search(previous("promoted"), reuse=True, force=False) is None
    assert why_search(previous("passed"), reuse=True, force=False) is None


def test_search_again_when_forced_missing_off_or_failed():
    assert why_search(previous("passed"), reuse=True, force=True) == "search forced"
    assert why_search(None, reuse=True, force=False) == "no earlier plan"
    assert "reuse_plan is off" in why_search(previous("passed"), reuse=False, force=False)
    assert "2026-01-03" in why_search(previous("rejected"), reuse=True, force=False)


def test_split_holdout_keeps_every_row_once_and_holds_out_the_last_day_only():
    days = [pd.DataFrame({"day": [d] * 100, "row": range(100)}) for d in range(3)]
    training, held = split_holdout(days, fraction=0.2, seed=0)
    assert len(held) == 20 and set(held["day"]) == {2}
    assert len(training) + len(held) == 300
    assert not set(zip(training["day"], training["row"])) & set(zip(held["day"], held["row"]))
    again, held_again = split_holdout(days, fraction=0.2, seed=0)
    assert held_again.equals(held) and again.equals(training)
