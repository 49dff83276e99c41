"""Promotion gate policy: the threshold rules and settings ``models.gate.decide`` applies.

A ``ThresholdRule`` bounds a metric (ne | auc | log_loss | calibration) either as a value
(``against="none"``, e.g. calibration <= 1.25) or as its change, absolute or relative,
against the fp32 parent or the current champion on the same rows (e.g. NE of int8 vs fp32,
relative, <= 0.0005). A ``GatePolicy`` holds the rules, the budgets they may name as limits,
the noise settings and the slice definitions; it is the ``[gate]`` section of the config file.

Drift: on a "warn" day ``GatePolicy.limit`` tightens every rule whose limit is
``quantization_ne_budget_rel`` to ``warn_quantization_ne_budget_rel``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DriftLevel = Literal["ok", "warn", "severe"]
_BUDGETS = ("quantization_ne_budget_rel", "champion_ne_epsilon_rel")


class GateError(ValueError):
    """The gate's inputs disagree (unknown variants, mismatched lengths, bad slice masks)."""


class ThresholdRule(BaseModel):
    """One bound on one metric of every candidate, overall and/or on each slice."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("", description="Check name (letters, digits, _ . -); derived if empty.")
    metric: Literal["ne", "auc", "log_loss", "calibration"] = Field(
        description="Metric bounded: normalized entropy, ROC AUC, log loss (nats), or "
        "calibration (mean prediction / click rate)."
    )
    against: Literal["none", "parent", "champion"] = Field(
        "none", description="'none' bounds the value; 'parent' / 'champion' bound the change "
        "vs the fp32 parent / the current champion on the same rows (noise-adjusted)."
    )
    change: Literal["abs", "rel"] = Field(
        "rel", description="Change as a difference or relative to the reference; ignored "
        "for value thresholds."
    )
    direction: Literal["max", "min"] = Field(
        "max", description="'max': value or change must be <= limit; 'min': >= limit."
    )
    limit: float | Literal["quantization_ne_budget_rel", "champion_ne_epsilon_rel"] = Field(
        description="The bound, or the name of the policy field that holds it."
    )
    scope: Literal["overall", "slices", "both"] = Field(
        "overall", description="Check all rows, each slice, or both."
    )

    @model_validator(mode="after")
    def _named(self) -> "ThresholdRule":
        if not self.name:
            suffix = (self.direction if self.against == "none"
                      else f"vs_{self.against}_{self.change}")
            object.__setattr__(self, "name", f"{self.metric}_{suffix}")
        if not all(ch.isalnum() or ch in "_.-" for ch in self.name):
            raise ValueError(f"rule name {self.name!r} may hold only letters, digits, _ . -")
        return self


DEFAULT_RULES = (
    ThresholdRule(name="quantization_ne_loss_rel", metric="ne", against="parent",
                  limit="quantization_ne_budget_rel"),
    ThresholdRule(name="champion_ne_regression_rel", metric="ne", against="champion",
                  limit="champion_ne_epsilon_rel"),
    # A slice may lose more than the overall budget (fewer rows, rarer ids), not 10x more.
    ThresholdRule(name="slice_quantization_ne_loss_rel", metric="ne", against="parent",
                  limit=0.005, scope="slices"),
    ThresholdRule(name="slice_champion_ne_regression_rel", metric="ne", against="champion",
                  limit=0.02, scope="slices"),
    ThresholdRule(name="quantization_auc_loss", metric="auc", against="parent", change="abs",
                  direction="min", limit=-0.002),
    # Bid prices scale with predicted CTR: a model 25 % off in either direction overbids.
    ThresholdRule(name="calibration_min", metric="calibration", direction="min", limit=0.8),
    ThresholdRule(name="calibration_max", metric="calibration", direction="max", limit=1.25),
)
LEGACY_RULES = DEFAULT_RULES[:2]  # gate v0: the two NE checks, overall


class GatePolicy(BaseModel):
    """Everything the gate decides with; the ``[gate]`` section of the config file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    quantization_ne_budget_rel: float = Field(
        0.0005, ge=0, description="Max relative NE loss of a low-precision variant vs its fp32 "
        "parent (0.0005 = 0.05 %); the precision search aims at the same budget.")
    warn_quantization_ne_budget_rel: float = Field(
        0.00025, ge=0, description="The quantization budget on days whose drift level is "
        "'warn' (stricter: at most quantization_ne_budget_rel).")
    champion_ne_epsilon_rel: float = Field(
        0.005, ge=0, description="Max relative NE by which a candidate may trail the champion "
        "on the run date (0.005 = 0.5 %).")
    allow_fp32_fallback: bool = Field(
        True, description="Promote the fp32 parent when no low-precision variant passes, so a "
        "fresher model still serves (at fp32 cost).")
    rules: tuple[ThresholdRule, ...] = Field(
        DEFAULT_RULES, description="Threshold rules; the defaults bound NE vs parent and "
        "champion (overall and per slice), AUC vs parent, and calibration in [0.8, 1.25].")
    bootstrap_samples: int = Field(200, ge=20, description="Resamples per confidence interval.")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Coverage of the intervals.")
    bootstrap_seed: int = Field(0, description="Same seed and rows, same intervals.")
    user_column: str | None = Field(None, description="Raw user id column: users=new/returning.")
    item_column: str | None = Field(None, description="Raw item id column: items=head/tail.")
    head_traffic_share: float = Field(
        0.8, gt=0, le=1, description="Items making the top share of reference traffic are head.")
    slice_columns: tuple[str, ...] = Field(
        (), description="Extra columns: one slice per value (top max_slice_values values).")
    max_slice_values: int = Field(10, ge=1, description="Slices per extra column at most.")
    min_slice_rows: int = Field(
        1000, ge=1, description="Smaller slices are reported but not gated.")

    @model_validator(mode="after")
    def _consistent(self) -> "GatePolicy":
        if self.warn_quantization_ne_budget_rel > self.quantization_ne_budget_rel:
            raise ValueError(
                f"gate.warn_quantization_ne_budget_rel={self.warn_quantization_ne_budget_rel} "
                f"must not exceed gate.quantization_ne_budget_rel="
                f"{self.quantization_ne_budget_rel} (warn days are stricter)")
        names = [r.name for r in self.rules]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"gate.rules names must be unique; repeated: {duplicates}")
        return self

    @field_validator("slice_columns")
    @classmethod
    def _columns_named(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not c for c in value):
            raise ValueError(f"gate.slice_columns holds an empty name: {list(value)}")
        return value

    def limit(self, rule: ThresholdRule, drift_level: DriftLevel = "ok") -> float:
        """The rule's bound on a day of ``drift_level`` (warn tightens the quantization budget)."""
        if rule.limit == "quantization_ne_budget_rel" and drift_level == "warn":
            return self.warn_quantization_ne_budget_rel
        return float(getattr(self, rule.limit) if isinstance(rule.limit, str) else rule.limit)
