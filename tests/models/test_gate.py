import pytest

from models.gate import decide, reject_invalid_data, relative_change
from models.metrics import Metrics


def metrics(ne: float) -> Metrics:
    return Metrics(ne=ne, auc=0.7, log_loss=0.1, calibration=1.0, rows=1000, click_rate=0.03)


def gate(candidates, champion=None, data_valid=True, budget=0.0005, epsilon=0.005,
         preference=("int8", "fp32")):
    return decide(
        data_valid=data_valid, candidates=candidates, parent="fp32", champion=champion,
        quantization_ne_budget_rel=budget, champion_ne_epsilon_rel=epsilon,
        preference=list(preference),
    )


def test_int8_within_budget_is_promoted_on_the_first_day():
    decision = gate({"fp32": metrics(0.9000), "int8": metrics(0.90040)})
    assert decision.promoted == "int8"
    loss = next(c for c in decision.checks["int8"] if c.name == "quantization_ne_loss_rel")
    assert loss.value == pytest.approx(0.0004 / 0.9) and loss.passed
    assert decision.verdict("fp32") == "passed"


def test_int8_over_budget_falls_back_to_fp32():
    decision = gate({"fp32": metrics(0.9000), "int8": metrics(0.9009)})
    assert decision.promoted == "fp32"
    assert decision.verdict("int8") == "rejected"
    assert "quantization_ne_loss_rel" in decision.reason


def test_without_fallback_nothing_is_promoted():
    decision = gate({"fp32": metrics(0.9000), "int8": metrics(0.9009)}, preference=("int8",))
    assert decision.promoted is None and decision.outcome == "rejected"


def test_candidate_worse_than_champion_by_more_than_epsilon_is_rejected():
    decision = gate({"fp32": metrics(0.9100), "int8": metrics(0.9100)}, champion=metrics(0.9000))
    assert decision.promoted is None
    regression = next(c for c in decision.checks["int8"] if c.name == "champion_ne_regression_rel")
    assert regression.value == pytest.approx(0.01 / 0.9) and not regression.passed


def test_candidate_within_epsilon_of_champion_passes():
    decision = gate({"fp32": metrics(0.9040), "int8": metrics(0.9040)}, champion=metrics(0.9000))
    assert decision.promoted == "int8"


def test_invalid_data_blocks_every_variant():
    decision = gate({"fp32": metrics(0.9), "int8": metrics(0.9)}, data_valid=False)
    assert decision.promoted is None
    assert all(not c.passed for v in decision.checks.values() for c in v if c.name == "data_valid")


def test_reject_invalid_data_records_the_summary():
    decision = reject_invalid_data("day=2026-01-01/part-0.parquet: label has value 2")
    record = decision.to_dict()
    assert record["outcome"] == "rejected"
    assert "label has value 2" in record["checks"]["run_date"][0]["detail"]


def test_relative_change_refuses_zero_reference():
    with pytest.raises(ValueError):
        relative_change(1.0, 0.0)


def test_preference_must_name_candidates():
    with pytest.raises(ValueError, match="int4"):
        gate({"fp32": metrics(0.9), "int8": metrics(0.9)}, preference=("int4",))
