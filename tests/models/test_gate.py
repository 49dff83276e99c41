"""Promotion gate: threshold rules, the noise rule, slices, drift levels, baselines."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from pydantic import ValidationError
from sklearn.metrics import roc_auc_score

from quantrec.models.gate import (
    GateError,
    GatePolicy,
    ThresholdRule,
    auc_components,
    bootstrap_sums,
    bootstrap_values,
    decide,
    paired_bootstrap_sums,
    percentile_interval,
    reject_invalid_data,
    relative_change,
)
from quantrec.models.metrics import log_loss, normalized_entropy


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


def gate(
    labels,
    predictions,
    *rules,
    champion=None,
    baselines=None,
    slices=None,
    drift="ok",
    preference=("int8", "fp32"),
    **policy,
):
    chosen = GatePolicy(rules=rules, **policy) if rules else GatePolicy(**policy)
    return decide(
        labels=labels,
        predictions=predictions,
        parent="fp32",
        champion=champion,
        baselines=baselines,
        preference=list(preference),
        policy=chosen,
        slices=slices,
        drift_level=drift,
    )


def only(decision, variant: str, name: str):
    return next(c for c in decision.checks[variant] if c.name == name)


# --- threshold logic -------------------------------------------------------------------


@pytest.mark.parametrize(
    "scale, direction, limit, passed",
    [
        (1.5, "max", 1.25, False),
        (1.1, "max", 1.25, True),
        (0.5, "min", 0.8, False),
        (0.9, "min", 0.8, True),
    ],
)
def test_value_thresholds_bound_the_value_without_noise(scale, direction, limit, passed):
    labels, probs = day()
    scaled = np.minimum(probs * scale, 1.0)
    decision = gate(
        labels,
        {"fp32": probs, "int8": scaled},
        rule(name="calibration_bound", metric="calibration", direction=direction, limit=limit),
    )
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
    decision = gate(
        labels,
        predictions,
        rule(name="r", against=against, change=change),
        champion=reference if against == "champion" else probs,
    )
    a, b = normalized_entropy(labels, variant), normalized_entropy(labels, reference)
    check = only(decision, "int8", "r")
    assert check.value == pytest.approx(a - b if change == "abs" else (a - b) / b)
    assert not check.passed and check.within_noise is False  # a big, clear regression
    assert check.ci_low <= check.value <= check.ci_high and check.ci_low > 0


@pytest.mark.parametrize(
    "direction, limit, passed", [("min", -0.05, True), ("min", -0.001, False), ("max", 0.0, True)]
)
def test_min_and_max_bound_an_auc_change(direction, limit, passed):
    labels, probs = day()
    decision = gate(
        labels,
        {"fp32": probs, "int8": worse(probs, 0.6)},
        rule(
            name="auc",
            metric="auc",
            against="parent",
            change="abs",
            direction=direction,
            limit=limit,
        ),
    )
    check = only(decision, "int8", "auc")
    expected = roc_auc_score(labels, worse(probs, 0.6)) - roc_auc_score(labels, probs)
    assert check.value == pytest.approx(expected) and check.value < -0.01
    assert check.passed is passed


def test_rules_against_the_parent_are_not_applied_to_the_parent():
    labels, probs = day(2_000)
    decision = gate(labels, {"fp32": probs, "int8": probs}, rule(name="q", against="parent"))
    assert [c.name for c in decision.checks["fp32"]] == ["data_valid"]


@pytest.mark.parametrize(
    "scope, names",
    [
        ("overall", ["r"]),
        ("slices", ["r.users_new", "r.users_returning"]),
        ("both", ["r", "r.users_new", "r.users_returning"]),
    ],
)
def test_scope_gives_checks_overall_per_slice_or_both(scope, names):
    labels, probs = day(4_000)
    new = np.arange(labels.size) < 1_500
    decision = gate(
        labels,
        {"fp32": probs, "int8": worse(probs, 0.1)},
        rule(name="r", against="parent", limit=1.0, scope=scope),
        slices={"users=new": new, "users=returning": ~new},
        min_slice_rows=100,
    )
    checks = [c for c in decision.checks["int8"] if c.name != "data_valid"]
    assert [c.name for c in checks] == names
    slice_checks = [c for c in checks if c.slice != "overall"]
    assert [c.rows for c in slice_checks] == [1_500, 2_500][: len(slice_checks)]
    for check in slice_checks:
        rows = new if check.slice == "users=new" else ~new
        a = normalized_entropy(labels[rows], worse(probs, 0.1)[rows])
        assert check.value == pytest.approx(
            relative_change(a, normalized_entropy(labels[rows], probs[rows]))
        )


# --- the noise rule --------------------------------------------------------------------


def test_a_regression_on_many_rows_fails_and_on_a_tiny_slice_is_within_noise():
    labels, probs = day(40_000)
    variant = worse(probs, 0.15)
    tiny = np.arange(labels.size) < 150
    decision = gate(
        labels,
        {"fp32": probs, "int8": variant},
        rule(name="q", against="parent", limit=0.0, scope="both"),
        slices={"tiny": tiny},
        min_slice_rows=100,
    )
    overall, small = only(decision, "int8", "q"), only(decision, "int8", "q.tiny")
    assert overall.value > 0 and overall.within_noise is False and not overall.passed
    assert small.value > 0  # beyond the limit too, but on 150 rows...
    assert small.ci_low < 0 < small.ci_high and small.within_noise is True and small.passed
    assert "within noise" in small.detail
    assert decision.promoted == "fp32"


def test_every_compared_check_records_its_interval_even_when_passing():
    labels, probs = day()
    decision = gate(labels, {"fp32": probs, "int8": worse(probs, 0.05)}, champion=probs)
    compared = [
        c for cs in decision.checks.values() for c in cs if c.against in ("parent", "champion")
    ]
    assert compared and all(c.passed for c in compared)
    assert all(c.within_noise is not None and c.ci_low <= c.ci_high for c in compared)


def test_identical_predictions_give_a_zero_width_interval_at_zero():
    labels, probs = day(5_000)
    rules = [
        rule(name=m, metric=m, against="parent", change="abs")
        for m in ("ne", "log_loss", "calibration", "auc")
    ]
    decision = gate(labels, {"fp32": probs, "int8": probs.copy()}, *rules)
    for name in ("ne", "log_loss", "calibration", "auc"):
        check = only(decision, "int8", name)
        assert (check.value, check.ci_low, check.ci_high) == (0.0, 0.0, 0.0)
        assert check.within_noise is True and check.passed


def test_a_constant_shift_gives_its_known_change_in_every_resample():
    labels = np.tile([1.0, 0.0], 2_000)
    parent = np.full(labels.size, 0.5)
    variant = np.where(labels == 1, 0.25, 0.75)  # every row loses exactly log 2 nats
    decision = gate(
        labels,
        {"fp32": parent, "int8": variant},
        rule(name="loss", metric="log_loss", against="parent", change="abs"),
        rule(name="cal", metric="calibration", against="parent", limit=1.0),
    )
    loss = only(decision, "int8", "loss")
    assert loss.value == pytest.approx(math.log(2))
    assert loss.ci_low == pytest.approx(math.log(2), rel=1e-5)
    assert loss.ci_high == pytest.approx(math.log(2), rel=1e-5)
    scaled = gate(
        labels,
        {"fp32": parent * 0.8, "int8": parent * 0.88},
        rule(name="cal", metric="calibration", against="parent", limit=1.0),
    )
    cal = only(scaled, "int8", "cal")  # 10 % more predicted clicks on every row
    assert (cal.value, cal.ci_low, cal.ci_high) == pytest.approx((0.1, 0.1, 0.1), rel=1e-5)


def test_bootstrap_sums_are_paired_across_groups_and_poisson_weighted():
    rng = np.random.default_rng(0)
    table = np.stack([np.ones(10_000), rng.random(10_000)], axis=1)
    half = np.arange(10_000) < 3_000
    sums = bootstrap_sums(
        table, np.stack([np.ones(10_000, bool), half, ~half]), samples=300, seed=4
    )
    assert sums.shape == (300, 3, 2)
    np.testing.assert_allclose(sums[:, 0], sums[:, 1] + sums[:, 2], rtol=1e-6)
    weights = sums[:, 0, 0]  # total Poisson(1) weight: mean and variance 10 000
    assert abs(weights.mean() - 10_000) < 4 * 100 / math.sqrt(300)
    assert 0.7 < weights.var() / 10_000 < 1.4
    again = bootstrap_sums(table, np.ones((1, 10_000), bool), samples=300, seed=4)
    # Same seed and rows: the same weights, so the same total weight exactly (integers), and
    # the same weighted sums to float32 accuracy (one cell here, two cells added there).
    np.testing.assert_array_equal(again[:, 0, 0], sums[:, 0, 0])
    np.testing.assert_allclose(again[:, 0, 1], sums[:, 0, 1], rtol=1e-6)


def test_auc_components_match_sklearn_with_ties():
    labels = np.array([0, 0, 1, 1, 0, 1, 0, 1], dtype=float)
    probs = np.array([0.1, 0.4, 0.4, 0.8, 0.2, 0.2, 0.9, 0.7])
    auc, v10, v01 = auc_components(labels, probs)
    assert auc == pytest.approx(roc_auc_score(labels, probs)) == pytest.approx(v01.mean())


# --- slices too small, first day, drift ------------------------------------------------


def test_slices_under_min_slice_rows_are_reported_but_not_gated():
    labels, probs = day()
    small = np.arange(labels.size) < 5_000
    decision = gate(
        labels,
        {"fp32": probs, "int8": worse(probs, 0.6)},
        rule(name="q", against="parent", limit=0.01, scope="slices"),
        slices={"items=tail": small},
        min_slice_rows=10_000,
    )
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


def test_severe_drift_on_the_first_day_promotes_the_first_passing_candidate():
    """No champion serves yet: holding the winner back for review would leave nothing
    serving, so it is promoted and the reason says why."""
    labels, probs = day(5_000)
    decision = gate(labels, {"fp32": probs, "int8": probs}, champion=None, drift="severe")
    assert decision.promoted == "int8" and decision.challenger is None
    assert decision.drift_level == "severe"
    assert "no champion serves yet" in decision.reason and "promoted" in decision.reason


def test_no_fallback_and_invalid_data():
    labels, probs = day(5_000)
    strict = gate(labels, {"fp32": probs, "int8": worse(probs, 0.6)}, allow_fp32_fallback=False)
    assert strict.promoted is None and strict.preference == ("int8",)
    invalid = decide(
        labels=labels,
        predictions={"fp32": probs, "int8": probs},
        parent="fp32",
        preference=["int8"],
        data_valid=False,
    )
    assert invalid.outcome == "rejected" and "data_valid" in invalid.reason


def test_records_are_json_and_readable_text():
    labels, probs = day(5_000)
    new = np.arange(labels.size) < 2_000
    decision = gate(
        labels,
        {"fp32": probs, "int8": worse(probs, 0.05)},
        champion=probs,
        slices={"users=new": new, "users=returning": ~new},
    )
    record = json.loads(json.dumps(decision.to_dict()))
    assert record["outcome"] == decision.outcome and record["drift_level"] == "ok"
    assert {"within_noise", "ci_low", "ci_high", "threshold", "slice"} <= set(
        record["checks"]["int8"][1]
    )
    text = decision.to_text()
    for check in decision.checks["int8"]:
        assert check.name in text
    assert f"outcome: {decision.outcome}" in text and decision.reason in text


# --- policy validation and input errors ------------------------------------------------


def test_policy_defaults_and_validation_name_the_field():
    policy = GatePolicy()
    assert (
        policy.quantization_ne_budget_rel,
        policy.champion_ne_epsilon_rel,
        policy.allow_fp32_fallback,
    ) == (0.0005, 0.005, True)
    budget = policy.rules[0]
    assert policy.limit(budget) == 0.0005 and policy.limit(budget, "warn") == 0.00025
    with pytest.raises(ValidationError, match="warn_quantization_ne_budget_rel"):
        GatePolicy(warn_quantization_ne_budget_rel=0.01)
    with pytest.raises(ValidationError, match="metric"):
        GatePolicy.model_validate({"rules": [{"metric": "ctr", "limit": 1.0}]})
    with pytest.raises(ValidationError, match="unique"):
        GatePolicy(rules=[rule(name="a"), rule(name="a")])
    loaded = GatePolicy.model_validate(
        {"rules": [{"metric": "ne", "against": "champion", "limit": "champion_ne_epsilon_rel"}]}
    )
    assert loaded.rules[0].name == "ne_vs_champion_rel" and loaded.limit(loaded.rules[0]) == 0.005


def test_the_absolute_quality_rules_are_on_by_default_and_load_from_a_config():
    policy = GatePolicy()
    rules = {r.name: r for r in policy.rules}
    base_rate, logistic = rules["ne_beats_base_rate"], rules["ne_vs_logistic_baseline_rel"]
    assert base_rate.strict and base_rate.limit == 1.0 and base_rate.versus_baseline
    assert logistic.against == "baseline.logistic" and logistic.versus_baseline
    assert policy.baseline_ne_margin_rel == 0.0 and policy.limit(logistic) == 0.0
    assert not rules["quantization_ne_loss_rel"].versus_baseline
    assert GatePolicy.model_validate_json(policy.model_dump_json()) == policy
    loaded = GatePolicy.model_validate(
        {
            "baseline_ne_margin_rel": 0.01,
            "rules": [
                {"metric": "ne", "against": "baseline.constant", "limit": "baseline_ne_margin_rel"}
            ],
        }
    )
    assert loaded.rules[0].name == "ne_vs_baseline.constant_rel"
    assert loaded.limit(loaded.rules[0]) == 0.01
    with pytest.raises(ValidationError, match="strict applies to value rules"):
        rule(name="s", against="parent", strict=True)
    with pytest.raises(ValidationError, match="against"):
        rule(name="b", against="baseline.forest")
    with pytest.raises(ValidationError, match="baseline_ne_margin_rel"):
        GatePolicy(baseline_ne_margin_rel=-0.1)


def test_bad_inputs_raise_gate_errors():
    labels, probs = day(1_000)
    with pytest.raises(GateError, match="int4"):
        gate(labels, {"fp32": probs, "int8": probs}, preference=("int4",))
    with pytest.raises(GateError, match="shape"):
        gate(labels, {"fp32": probs, "int8": probs[:10]})
    with pytest.raises(GateError, match="drift_level"):
        gate(labels, {"fp32": probs, "int8": probs}, drift="high")


# --- budgets vs the parent and the champion --------------------------------------------


def test_int8_within_the_quantization_budget_is_promoted_and_over_it_falls_back():
    labels, probs = day(40_000)
    variant, loss = quantized(labels, probs)
    within = gate(
        labels,
        {"fp32": probs, "int8": variant},
        quantization_ne_budget_rel=2 * loss,
        warn_quantization_ne_budget_rel=loss,
    )
    assert within.promoted == "int8" and within.verdict("fp32") == "passed"
    check = only(within, "int8", "quantization_ne_loss_rel")
    assert check.value == pytest.approx(loss) and check.passed and check.within_noise is False
    assert check.metric_value == pytest.approx(normalized_entropy(labels, variant))
    assert check.reference_value == pytest.approx(normalized_entropy(labels, probs))
    over = gate(
        labels,
        {"fp32": probs, "int8": variant},
        quantization_ne_budget_rel=loss / 2,
        warn_quantization_ne_budget_rel=loss / 4,
    )
    assert over.promoted == "fp32" and "quantization_ne_loss_rel" in over.reason


def test_champion_epsilon_bounds_how_far_a_candidate_may_trail_the_champion():
    labels, probs = day(40_000)
    behind = worse(probs, 0.3)
    regression = relative_change(
        normalized_entropy(labels, behind), normalized_entropy(labels, probs)
    )
    assert regression > 0.005  # more than the default epsilon, clear of noise on 40k rows
    trailing = gate(labels, {"fp32": behind, "int8": behind}, champion=probs)
    assert trailing.promoted is None
    check = only(trailing, "int8", "champion_ne_regression_rel")
    assert check.value == pytest.approx(regression) and check.within_noise is False
    close = gate(
        labels,
        {"fp32": behind, "int8": behind},
        champion=probs,
        champion_ne_epsilon_rel=2 * regression,
    )
    assert close.promoted == "int8"
    invalid = decide(
        labels=labels,
        predictions={"fp32": probs, "int8": probs},
        parent="fp32",
        champion=probs,
        preference=["int8", "fp32"],
        data_valid=False,
    )
    assert invalid.promoted is None


# --- absolute quality: the base rate and the logistic baseline ----------------------------


def shuffled(probs: np.ndarray, seed: int = 5) -> np.ndarray:
    """Probabilities of other rows: the click rate is right, the ranking is noise (NE > 1)."""
    return np.random.default_rng(seed).permutation(probs)


def test_a_model_worse_than_the_base_rate_is_refused_and_the_reason_names_its_ne():
    labels, probs = day(5_000)
    noise = shuffled(probs)
    decision = gate(labels, {"fp32": noise, "int8": noise})
    check = only(decision, "int8", "ne_beats_base_rate")
    assert check.value == pytest.approx(normalized_entropy(labels, noise)) and check.value > 1
    assert not check.passed and check.versus_baseline and check.ci_high > 1
    assert decision.outcome == "rejected" and decision.promoted is None
    assert decision.reason.startswith("no model beats the baseline")
    assert f"NE {check.value:.6g}" in decision.reason and "base rate" in decision.reason


def test_an_ne_below_one_whose_interval_reaches_one_is_not_shown_to_beat_the_base_rate():
    rng = np.random.default_rng(0)
    weak = 1.0 / (1.0 + np.exp(-rng.normal(-1.6, 0.3, 400)))  # a weak signal on 400 rows
    labels = (rng.random(400) < weak).astype(float)
    decision = gate(labels, {"fp32": weak, "int8": weak})
    check = only(decision, "int8", "ne_beats_base_rate")
    assert check.value < 1 <= check.ci_high and not check.passed
    assert "reaches the limit" in check.detail
    labels, probs = day(5_000)
    clear = only(gate(labels, {"fp32": probs, "int8": probs}), "int8", "ne_beats_base_rate")
    assert clear.passed and clear.ci_high < 1 and clear.within_noise is None


def test_a_model_worse_than_the_logistic_baseline_is_refused_naming_both_nes():
    labels, probs = day(20_000)
    model = worse(probs, 0.6)
    decision = gate(labels, {"fp32": model, "int8": model}, baselines={"baseline.logistic": probs})
    check = only(decision, "fp32", "ne_vs_logistic_baseline_rel")
    ne_model, ne_logistic = (normalized_entropy(labels, p) for p in (model, probs))
    assert check.value == pytest.approx(relative_change(ne_model, ne_logistic))
    assert not check.passed and check.within_noise is False and check.versus_baseline
    assert (check.metric_value, check.reference_value) == pytest.approx((ne_model, ne_logistic))
    assert decision.outcome == "rejected"
    assert decision.reason.startswith("no model beats the baseline")
    assert f"NE {ne_model:.6g}" in decision.reason
    assert f"baseline.logistic NE {ne_logistic:.6g}" in decision.reason
    assert decision.baselines == {"baseline.logistic": pytest.approx(ne_logistic)}
    assert "baselines: baseline.logistic NE" in decision.to_text()


def test_a_model_better_than_the_baselines_passes_and_a_margin_forgives_a_small_loss():
    labels, probs = day(20_000)
    baselines = {
        "baseline.logistic": worse(probs, 0.6),
        "baseline.constant": np.full(labels.size, labels.mean()),
    }
    better = gate(labels, {"fp32": probs, "int8": probs}, baselines=baselines)
    check = only(better, "int8", "ne_vs_logistic_baseline_rel")
    assert check.passed and check.value < 0 and better.promoted == "int8"
    assert better.baselines["baseline.constant"] == pytest.approx(1.0)
    behind = worse(probs, 0.3)
    loss = relative_change(normalized_entropy(labels, behind), normalized_entropy(labels, probs))
    strict = gate(labels, {"fp32": behind, "int8": behind}, baselines={"baseline.logistic": probs})
    forgiving = gate(
        labels,
        {"fp32": behind, "int8": behind},
        baselines={"baseline.logistic": probs},
        baseline_ne_margin_rel=2 * loss,
    )
    assert strict.promoted is None and forgiving.promoted == "int8"


def test_missing_baselines_are_recorded_as_not_gated():
    labels, probs = day(5_000)
    decision = gate(labels, {"fp32": probs, "int8": probs})
    check = only(decision, "int8", "ne_vs_logistic_baseline_rel")
    assert check.passed and not check.gated and check.value is None
    assert "no baseline.logistic predictions" in check.detail
    assert decision.promoted == "int8" and decision.baselines == {}
    other = gate(
        labels,
        {"fp32": probs, "int8": probs},
        baselines={"baseline.constant": np.full(labels.size, 0.2)},
    )
    assert not only(other, "int8", "ne_vs_logistic_baseline_rel").gated


def test_other_failures_do_not_blame_the_baseline():
    labels, probs = day(40_000)
    variant, loss = quantized(labels, probs)
    decision = gate(
        labels,
        {"fp32": probs, "int8": variant},
        allow_fp32_fallback=False,
        quantization_ne_budget_rel=loss / 2,
        warn_quantization_ne_budget_rel=0.0,
        baselines={"baseline.logistic": worse(probs, 0.6)},
    )
    assert decision.promoted is None
    assert decision.reason.startswith("no candidate passed the gate")


def test_baselines_may_not_be_named_like_a_candidate():
    labels, probs = day(1_000)
    with pytest.raises(GateError, match="baselines"):
        gate(labels, {"fp32": probs, "int8": probs}, baselines={"int8": probs})


# --- small and one-class rows ------------------------------------------------------------


def test_a_one_class_slice_is_reported_not_gated_and_nothing_raises():
    labels, probs = day(20_000)
    no_click = labels == 0
    few = np.zeros(labels.size, bool)
    few[np.flatnonzero(labels == 1)[:2]] = True
    few[np.flatnonzero(labels == 0)[:3_000]] = True  # 2 clicks in 3 002 rows
    rules = [
        rule(name=m, metric=m, against="parent", scope="both", limit=0.01)
        for m in ("ne", "log_loss", "calibration", "auc")
    ]
    decision = gate(
        labels,
        {"fp32": probs, "int8": worse(probs, 0.05)},
        *rules,
        rule(name="strict_ne", metric="ne", limit=100.0, strict=True, scope="both"),
        slices={"clicks=none": no_click, "clicks=few": few},
        min_slice_rows=100,
    )
    for name in ("ne", "calibration", "auc", "strict_ne"):
        check = only(decision, "int8", f"{name}.clicks_none")
        assert check.value is None and check.passed and not check.gated
        assert "single-class" in check.detail
    assert only(decision, "int8", "log_loss.clicks_none").value is not None
    for name in ("ne", "calibration", "strict_ne"):
        check = only(decision, "int8", f"{name}.clicks_few")
        assert check.ci_low is None or np.isfinite([check.ci_low, check.ci_high]).all()
    assert decision.promoted == "int8"


def test_a_one_class_day_is_a_rejection_not_an_error():
    labels, probs = day(2_000)
    decision = gate(np.zeros_like(labels), {"fp32": probs, "int8": probs})
    assert decision.outcome == "rejected"
    assert "single-class" in decision.reason


def test_bootstrap_resamples_without_a_click_are_dropped():
    labels = np.r_[1.0, np.zeros(49)]
    probs = {"a": np.full(50, 0.02), "b": np.full(50, 0.03)}
    sums, column = paired_bootstrap_sums(
        labels, probs, np.ones((1, 50), bool), refs=["a"], skip=[], samples=400, seed=0
    )
    values = bootstrap_values(sums[:, 0], column, metric="ne", model="b")
    no_click = sums[:, 0, column["y"]] == 0
    assert 0.2 < no_click.mean() < 0.5  # P(the one click draws weight 0) = 1/e
    assert np.isnan(values[no_click]).all() and np.isfinite(values[~no_click]).all()
    low, high = percentile_interval(values, 0.95)
    assert np.isfinite([low, high]).all() and low <= high
    assert percentile_interval(np.full(10, np.nan), 0.95) is None


def test_reject_invalid_data_and_relative_change():
    record = reject_invalid_data("day=2026-01-01/part-0.parquet: label has value 2").to_dict()
    assert record["outcome"] == "rejected"
    assert "label has value 2" in record["checks"]["run_date"][0]["detail"]
    with pytest.raises(ValueError):
        relative_change(1.0, 0.0)
    assert log_loss(np.array([1.0]), np.array([0.5])) == pytest.approx(math.log(2))
