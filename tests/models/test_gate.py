"""Promotion gate: threshold rules, the noise rule, slices, drift levels, the v0 call."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from pydantic import ValidationError
from sklearn.metrics import roc_auc_score

from quantrec.models.gate import (
    GateError, GatePolicy, ThresholdRule, auc_components, bootstrap_sums, decide,
    reject_invalid_data, relative_change,
)
from quantrec.models.metrics import Metrics, log_loss, normalized_entropy


def day(rows: int = 20_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from the probabilities: a calibrated model, CTR about 20 %."""
    rng = np.random.default_rng(seed)
    probs = 1.0 / (1.0 + np.exp(-rng.normal(-1.6, 1.0, rows)))
    return (rng.random(rows) < probs).astype(np.float64), probs


def worse(probs: np.ndarray, noise: float, seed: int = 1) -> np.ndarray:
    """The same model with logit noise: a regression of every row."""
    logits = np.log(probs / (1 - probs)) + np.random.default_rng(seed).normal(0, noise, probs.size)
    return 1.0 / (1.0 + np.exp(-logits))


def rule(**fields) -> ThresholdRule:
    return ThresholdRule(**{"metric": "ne", "limit": 0.0, **fields})


def gate(labels, predictions, *rules, champion=None, slices=None, drift="ok",
         preference=("int8", "fp32"), **policy):
    chosen = GatePolicy(rules=rules, **policy) if rules else GatePolicy(**policy)
    return decide(labels=labels, predictions=predictions, parent="fp32", champion=champion,
                  preference=list(preference), policy=chosen, slices=slices,
                  drift_level=drift)


def only(decision, variant: str, name: str):
    return next(c for c in decision.checks[variant] if c.name == name)


# --- threshold logic -------------------------------------------------------------------

@pytest.mark.parametrize("scale, direction, limit, passed", [
    (1.5, "max", 1.25, False), (1.1, "max", 1.25, True),
    (0.5, "min", 0.8, False), (0.9, "min", 0.8, True),
])
def test_value_thresholds_bound_the_value_without_noise(scale, direction, limit, passed):
    labels, probs = day()
    scaled = np.minimum(probs * scale, 1.0)
    decision = gate(labels, {"fp32": probs, "int8": scaled},
                    rule(name="calibration_bound", metric="calibration", direction=direction,
                         limit=limit))
    check = only(decision, "int8", "calibration_bound")
    assert check.value == pytest.approx(scaled.mean() / labels.mean())
    assert check.passed is passed and check.against == "none" and check.change is None
    assert check.within_noise is None and check.ci_low is None  # never noise-adjusted


@pytest.mark.parametrize("change", ["abs", "rel"])
@pytest.mark.parametrize("against", ["parent", "champion"])
def test_changes_are_differences_or_ratios_against_parent_or_champion(change, against):
    labels, probs = day()
    variant, reference = worse(probs, 0.6), worse(probs, 0.1, seed=2)
    predictions = {"fp32": reference if against == "parent" else probs, "int8": variant}
    decision = gate(labels, predictions, rule(name="r", against=against, change=change),
                    champion=reference if against == "champion" else probs)
    a, b = normalized_entropy(labels, variant), normalized_entropy(labels, reference)
    check = only(decision, "int8", "r")
    assert check.value == pytest.approx(a - b if change == "abs" else (a - b) / b)
    assert not check.passed and check.within_noise is False  # a big, clear regression
    assert check.ci_low <= check.value <= check.ci_high and check.ci_low > 0


@pytest.mark.parametrize("direction, limit, passed", [("min", -0.05, True), ("min", -0.001, False),
                                                      ("max", 0.0, True)])
def test_min_and_max_bound_an_auc_change(direction, limit, passed):
    labels, probs = day()
    decision = gate(labels, {"fp32": probs, "int8": worse(probs, 0.6)},
                    rule(name="auc", metric="auc", against="parent", change="abs",
                         direction=direction, limit=limit))
    check = only(decision, "int8", "auc")
    expected = roc_auc_score(labels, worse(probs, 0.6)) - roc_auc_score(labels, probs)
    assert check.value == pytest.approx(expected) and check.value < -0.01
    assert check.passed is passed


def test_rules_against_the_parent_are_not_applied_to_the_parent():
    labels, probs = day(2_000)
    decision = gate(labels, {"fp32": probs, "int8": probs}, rule(name="q", against="parent"))
    assert [c.name for c in decision.checks["fp32"]] == ["data_valid"]


@pytest.mark.parametrize("scope, names", [
    ("overall", ["r"]), ("slices", ["r.users_new", "r.users_returning"]),
    ("both", ["r", "r.users_new", "r.users_returning"]),
])
def test_scope_gives_checks_overall_per_slice_or_both(scope, names):
    labels, probs = day(4_000)
    new = np.arange(labels.size) < 1_500
    decision = gate(labels, {"fp32": probs, "int8": worse(probs, 0.1)},
                    rule(name="r", against="parent", limit=1.0, scope=scope),
                    slices={"users=new": new, "users=returning": ~new}, min_slice_rows=100)
    checks = [c for c in decision.checks["int8"] if c.name != "data_valid"]
    assert [c.name for c in checks] == names
    slice_checks = [c for c in checks if c.slice != "overall"]
    assert [c.rows for c in slice_checks] == [1_500, 2_500][:len(slice_checks)]
    for check in slice_checks:
        rows = new if check.slice == "users=new" else ~new
        a = normalized_entropy(labels[rows], worse(probs, 0.1)[rows])
        assert check.value == pytest.approx(relative_change(a, normalized_entropy(
            labels[rows], probs[rows])))


# --- the noise rule --------------------------------------------------------------------

def test_a_regression_on_many_rows_fails_and_on_a_tiny_slice_is_within_noise():
    labels, probs = day(40_000)
    variant = worse(probs, 0.15)
    tiny = np.arange(labels.size) < 150
    decision = gate(labels, {"fp32": probs, "int8": variant},
                    rule(name="q", against="parent", limit=0.0, scope="both"),
                    slices={"tiny": tiny}, min_slice_rows=100)
    overall, small = only(decision, "int8", "q"), only(decision, "int8", "q.tiny")
    assert overall.value > 0 and overall.within_noise is False and not overall.passed
    assert small.value > 0  # beyond the limit too, but on 150 rows...
    assert small.ci_low < 0 < small.ci_high and small.within_noise is True and small.passed
    assert "within noise" in small.detail
    assert decision.promoted == "fp32"


def test_every_compared_check_records_its_interval_even_when_passing():
    labels, probs = day()
    decision = gate(labels, {"fp32": probs, "int8": worse(probs, 0.05)}, champion=probs)
    compared = [c for cs in decision.checks.values() for c in cs
                if c.against in ("parent", "champion")]
    assert compared and all(c.passed for c in compared)
    assert all(c.within_noise is not None and c.ci_low <= c.ci_high for c in compared)


def test_identical_predictions_give_a_zero_width_interval_at_zero():
    labels, probs = day(5_000)
    rules = [rule(name=m, metric=m, against="parent", change="abs")
             for m in ("ne", "log_loss", "calibration", "auc")]
    decision = gate(labels, {"fp32": probs, "int8": probs.copy()}, *rules)
    for name in ("ne", "log_loss", "calibration", "auc"):
        check = only(decision, "int8", name)
        assert (check.value, check.ci_low, check.ci_high) == (0.0, 0.0, 0.0)
        assert check.within_noise is True and check.passed


def test_a_constant_shift_gives_its_known_change_in_every_resample():
    labels = np.tile([1.0, 0.0], 2_000)
    parent = np.full(labels.size, 0.5)
    variant = np.where(labels == 1, 0.25, 0.75)  # every row loses exactly log 2 nats
    decision = gate(labels, {"fp32": parent, "int8": variant},
                    rule(name="loss", metric="log_loss", against="parent", change="abs"),
                    rule(name="cal", metric="calibration", against="parent", limit=1.0))
    loss = only(decision, "int8", "loss")
    assert loss.value == pytest.approx(math.log(2))
    assert loss.ci_low == pytest.approx(math.log(2), rel=1e-5)
    assert loss.ci_high == pytest.approx(math.log(2), rel=1e-5)
    scaled = gate(labels, {"fp32": parent * 0.8, "int8": parent * 0.88},
                  rule(name="cal", metric="calibration", against="parent", limit=1.0))
    cal = only(scaled, "int8", "cal")  # 10 % more predicted clicks on every row
    assert (cal.value, cal.ci_low, cal.ci_high) == pytest.approx((0.1, 0.1, 0.1), rel=1e-5)


def test_bootstrap_sums_are_paired_across_groups_and_poisson_weighted():
    rng = np.random.default_rng(0)
    table = np.stack([np.ones(10_000), rng.random(10_000)], axis=1)
    half = np.arange(10_000) < 3_000
    sums = bootstrap_sums(table, np.stack([np.ones(10_000, bool), half, ~half]),
                          samples=300, seed=4)
    assert sums.shape == (300, 3, 2)
    np.testing.assert_allclose(sums[:, 0], sums[:, 1] + sums[:, 2], rtol=1e-6)
    weights = sums[:, 0, 0]  # total Poisson(1) weight: mean and variance 10 000
    assert abs(weights.mean() - 10_000) < 4 * 100 / math.sqrt(300)
    assert 0.7 < weights.var() / 10_000 < 1.4
    again = bootstrap_sums(table, np.ones((1, 10_000), bool), samples=300, seed=4)
    np.testing.assert_allclose(again[:, 0], sums[:, 0])  # same seed and rows: same weights


def test_auc_components_match_sklearn_with_ties():
    labels = np.array([0, 0, 1, 1, 0, 1, 0, 1], dtype=float)
    probs = np.array([0.1, 0.4, 0.4, 0.8, 0.2, 0.2, 0.9, 0.7])
    auc, v10, v01 = auc_components(labels, probs)
    assert auc == pytest.approx(roc_auc_score(labels, probs)) == pytest.approx(v01.mean())


# --- slices too small, first day, drift ------------------------------------------------

def test_slices_under_min_slice_rows_are_reported_but_not_gated():
    labels, probs = day()
    small = np.arange(labels.size) < 5_000
    decision = gate(labels, {"fp32": probs, "int8": worse(probs, 0.6)},
                    rule(name="q", against="parent", limit=0.01, scope="slices"),
                    slices={"items=tail": small}, min_slice_rows=10_000)
    check = only(decision, "int8", "q.items_tail")
    assert check.value > 0.01 and check.within_noise is False  # would fail if gated
    assert check.passed and not check.gated and "min_slice_rows=10000" in check.detail
    assert decision.promoted == "int8"
    assert "not gated" in decision.to_text()


def test_first_day_without_champion_passes_champion_checks_and_says_so():
    labels, probs = day(5_000)
    decision = gate(labels, {"fp32": probs, "int8": probs})
    check = only(decision, "int8", "champion_ne_regression_rel")
    assert check.passed and check.value is None and not check.gated
    assert "no champion yet" in check.detail
    assert decision.promoted == "int8" and decision.outcome == "promoted"


def quantized(labels, probs):
    """An int8 variant whose NE loss vs fp32 is clear of noise, and that loss."""
    variant = 1.0 / (1.0 + np.exp(-(np.log(probs / (1 - probs)) + 0.1)))  # overpredicts
    loss = relative_change(normalized_entropy(labels, variant), normalized_entropy(labels, probs))
    return variant, loss


def test_warn_drift_tightens_the_quantization_budget():
    labels, probs = day(40_000)
    variant, loss = quantized(labels, probs)
    budgets = dict(quantization_ne_budget_rel=2 * loss, warn_quantization_ne_budget_rel=loss / 2)
    calm = gate(labels, {"fp32": probs, "int8": variant}, **budgets)
    assert calm.promoted == "int8"
    warned = gate(labels, {"fp32": probs, "int8": variant}, drift="warn", **budgets)
    check = only(warned, "int8", "quantization_ne_loss_rel")
    assert check.threshold == pytest.approx(loss / 2) and check.within_noise is False
    assert warned.promoted == "fp32" and warned.drift_level == "warn"
    assert warned.quantization_ne_budget_rel == pytest.approx(loss / 2)
    assert "drift is 'warn'" in warned.reason


def test_severe_drift_promotes_nothing_and_names_a_challenger():
    labels, probs = day(5_000)
    decision = gate(labels, {"fp32": probs, "int8": probs}, champion=probs, drift="severe")
    assert decision.promoted is None and decision.challenger == "int8"
    assert decision.outcome == "challenger" and decision.verdict("int8") == "challenger"
    assert decision.verdict("fp32") == "passed"
    assert "human review" in decision.reason


def test_no_fallback_and_invalid_data():
    labels, probs = day(5_000)
    strict = gate(labels, {"fp32": probs, "int8": worse(probs, 0.6)}, allow_fp32_fallback=False)
    assert strict.promoted is None and strict.preference == ("int8",)
    invalid = decide(labels=labels, predictions={"fp32": probs, "int8": probs}, parent="fp32",
                     preference=["int8"], data_valid=False)
    assert invalid.outcome == "rejected" and "data_valid" in invalid.reason


def test_records_are_json_and_readable_text():
    labels, probs = day(5_000)
    new = np.arange(labels.size) < 2_000
    decision = gate(labels, {"fp32": probs, "int8": worse(probs, 0.05)}, champion=probs,
                    slices={"users=new": new, "users=returning": ~new})
    record = json.loads(json.dumps(decision.to_dict()))
    assert record["outcome"] == decision.outcome and record["drift_level"] == "ok"
    assert {"within_noise", "ci_low", "ci_high", "threshold", "slice"} <= set(
        record["checks"]["int8"][1])
    text = decision.to_text()
    for check in decision.checks["int8"]:
        assert check.name in text
    assert f"outcome: {decision.outcome}" in text and decision.reason in text


# --- policy validation and input errors ------------------------------------------------

def test_policy_defaults_and_validation_name_the_field():
    policy = GatePolicy()
    assert (policy.quantization_ne_budget_rel, policy.champion_ne_epsilon_rel,
            policy.allow_fp32_fallback) == (0.0005, 0.005, True)
    budget = policy.rules[0]
    assert policy.limit(budget) == 0.0005 and policy.limit(budget, "warn") == 0.00025
    with pytest.raises(ValidationError, match="warn_quantization_ne_budget_rel"):
        GatePolicy(warn_quantization_ne_budget_rel=0.01)
    with pytest.raises(ValidationError, match="metric"):
        GatePolicy.model_validate({"rules": [{"metric": "ctr", "limit": 1.0}]})
    with pytest.raises(ValidationError, match="unique"):
        GatePolicy(rules=[rule(name="a"), rule(name="a")])
    loaded = GatePolicy.model_validate({"rules": [{"metric": "ne", "against": "champion",
                                                   "limit": "champion_ne_epsilon_rel"}]})
    assert loaded.rules[0].name == "ne_vs_champion_rel" and loaded.limit(loaded.rules[0]) == 0.005


def test_bad_inputs_raise_gate_errors():
    labels, probs = day(1_000)
    with pytest.raises(GateError, match="int4"):
        gate(labels, {"fp32": probs, "int8": probs}, preference=("int4",))
    with pytest.raises(GateError, match="shape"):
        gate(labels, {"fp32": probs, "int8": probs[:10]})
    with pytest.raises(GateError, match="drift_level"):
        gate(labels, {"fp32": probs, "int8": probs}, drift="high")


# --- the v0 call (tasks/evaluate.py until it passes predictions) ----------------------

def metrics(ne: float) -> Metrics:
    return Metrics(ne=ne, auc=0.7, log_loss=0.1, calibration=1.0, rows=1000, click_rate=0.03)


def gate_v0(candidates, champion=None, data_valid=True, preference=("int8", "fp32")):
    return decide(data_valid=data_valid, candidates=candidates, parent="fp32", champion=champion,
                  quantization_ne_budget_rel=0.0005, champion_ne_epsilon_rel=0.005,
                  preference=list(preference))


def test_v0_int8_within_budget_is_promoted_and_over_budget_falls_back():
    decision = gate_v0({"fp32": metrics(0.9000), "int8": metrics(0.90040)})
    assert decision.promoted == "int8" and decision.verdict("fp32") == "passed"
    loss = only(decision, "int8", "quantization_ne_loss_rel")
    assert loss.value == pytest.approx(0.0004 / 0.9) and loss.passed and loss.within_noise is None
    over = gate_v0({"fp32": metrics(0.9000), "int8": metrics(0.9009)})
    assert over.promoted == "fp32" and "quantization_ne_loss_rel" in over.reason


def test_v0_champion_epsilon_and_invalid_data():
    behind = gate_v0({"fp32": metrics(0.91), "int8": metrics(0.91)}, champion=metrics(0.9))
    assert behind.promoted is None
    assert only(behind, "int8", "champion_ne_regression_rel").value == pytest.approx(0.01 / 0.9)
    close = gate_v0({"fp32": metrics(0.904), "int8": metrics(0.904)}, champion=metrics(0.9))
    assert close.promoted == "int8"
    invalid = gate_v0({"fp32": metrics(0.9), "int8": metrics(0.9)}, data_valid=False)
    assert invalid.promoted is None


def test_reject_invalid_data_and_relative_change():
    record = reject_invalid_data("day=2026-01-01/part-0.parquet: label has value 2").to_dict()
    assert record["outcome"] == "rejected"
    assert "label has value 2" in record["checks"]["run_date"][0]["detail"]
    with pytest.raises(ValueError):
        relative_change(1.0, 0.0)
    assert log_loss(np.array([1.0]), np.array([0.5])) == pytest.approx(math.log(2))
