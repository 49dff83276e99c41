"""Promotion gate v1: which candidate variant, if any, may become the champion.

Candidates are scored on the run date's rows, the freshest day none of them trained on.
Every variant is held to every ``ThresholdRule`` of the ``GatePolicy``, overall and on each
slice of rows (``models.slices``); the first variant in order of preference (low precision
first: it is what serving wants) that passes every check is promoted. Every check is
recorded with its value, limit, confidence interval and verdict, pass or fail, so a decision
can be read back and argued with.

A rule bounds a metric (ne | auc | log_loss | calibration) either as a value
(``against="none"``, e.g. calibration <= 1.25) or as its change, absolute or relative,
against the fp32 parent or the current champion on the same rows (e.g. NE of int8 vs fp32,
relative, <= 0.0005). Rules and policy live in ``models.gate_policy``.

Noise rule. Every compared check (against parent or champion) gets a ``confidence``
interval of its change on these rows, paired (both models scored on the same resampled
rows). A check FAILS when its observed change is beyond the limit AND that interval excludes
0; when the interval contains 0 (``ci_low <= 0 <= ci_high``: on these rows the two models
cannot be told apart) the check is *within noise* and passes. ``within_noise`` is recorded
on every compared check, passing ones too; value thresholds are never noise-adjusted.

Intervals (how they are computed: ``models.noise``): a paired Poisson(1) bootstrap percentile
interval for ne, log_loss and calibration; DeLong's paired normal interval for auc.

Drift: "warn" tightens every rule whose limit is ``quantization_ne_budget_rel`` to
``warn_quantization_ne_budget_rel``; "severe" promotes nothing: the first passing candidate
becomes the ``challenger``, registered for human review.

The policy names (``GatePolicy``, ``ThresholdRule``, ``GateError``, ...) and the noise functions
(``bootstrap_sums``, ``auc_components``, ``paired_auc_delta``) are re-exported from here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.stats import norm

from quantrec.models.gate_policy import (  # noqa: F401  (re-exported: the gate's public API)
    DEFAULT_RULES, LEGACY_RULES, DriftLevel, GateError, GatePolicy, ThresholdRule,
)
from quantrec.models.metrics import Metrics, MetricError, calibration, log_loss, normalized_entropy
from quantrec.models.noise import (  # noqa: F401  (re-exported: the gate's public API)
    auc_components, bootstrap_changes, bootstrap_sums, paired_auc_delta,
    paired_bootstrap_sums,
)

OVERALL = "overall"
_CHAMPION = "champion"  # the champion's key among the scored models


@dataclass(frozen=True)
class Check:
    """One gate check of one variant on one set of rows.

    ``passed`` is ``value <= threshold`` ("max") or ``>= threshold`` ("min"), or the change is
    within noise (the interval [ci_low, ci_high] contains 0), or the check is not gated (a
    slice under ``min_slice_rows`` or an undefined metric); ``detail`` says which.
    """

    name: str
    value: float | None
    threshold: float | None
    passed: bool
    detail: str = ""
    metric: str | None = None
    against: str = "none"
    change: str | None = None
    direction: str = "max"
    slice: str = OVERALL
    rows: int | None = None
    within_noise: bool | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    gated: bool = True

    @property
    def limit(self) -> float | None:
        return self.threshold


@dataclass(frozen=True)
class Decision:
    """The gate's verdict on one run date; ``outcome`` is promoted | challenger | rejected."""

    promoted: str | None
    checks: dict[str, list[Check]]
    reason: str
    preference: tuple[str, ...] = field(default=())
    challenger: str | None = None
    drift_level: DriftLevel = "ok"
    quantization_ne_budget_rel: float | None = None  # the budget in force (after drift)

    @property
    def outcome(self) -> str:
        return "promoted" if self.promoted else "challenger" if self.challenger else "rejected"

    def verdict(self, variant: str) -> str:
        """``promoted``, ``challenger``, ``passed`` (eligible but another preferred) or
        ``rejected``."""
        if variant in (self.promoted, self.challenger):
            return "promoted" if variant == self.promoted else "challenger"
        return "passed" if all(c.passed for c in self.checks[variant]) else "rejected"

    def to_dict(self) -> dict:
        return {
            "outcome": self.outcome, "promoted": self.promoted, "challenger": self.challenger,
            "reason": self.reason, "drift_level": self.drift_level,
            "quantization_ne_budget_rel": self.quantization_ne_budget_rel,
            "preference": list(self.preference),
            "checks": {v: [asdict(c) for c in cs] for v, cs in self.checks.items()},
        }

    def to_text(self) -> str:
        """A plain-text table of every check, then the outcome and the reason."""
        head = ("variant", "check", "slice", "rows", "value", "threshold", "interval", "noise",
                "result")
        rows = [head] + [
            (variant, c.name, c.slice, "" if c.rows is None else str(c.rows), _fmt(c.value),
             ("<= " if c.direction == "max" else ">= ") + _fmt(c.threshold),
             "" if c.ci_low is None else f"[{_fmt(c.ci_low)}, {_fmt(c.ci_high)}]",
             {None: "", True: "within", False: "outside"}[c.within_noise], _result(c))
            for variant, checks in self.checks.items() for c in checks
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
        return "\n".join([*lines, "", f"outcome: {self.outcome}", f"reason: {self.reason}"])


def _result(check: Check) -> str:
    if not check.gated:
        return "not gated"
    beyond = check.detail.startswith("beyond")
    return "FAIL" if not check.passed else "pass (noise)" if beyond else "pass"


def relative_change(value: float, reference: float) -> float:
    """``(value - reference) / reference``: positive means the metric grew."""
    if reference == 0 or not math.isfinite(reference):
        raise ValueError(f"cannot take a relative change against reference={reference}")
    return (value - reference) / reference


def decide(
    *,
    labels: np.ndarray | None = None,
    predictions: Mapping[str, np.ndarray] | None = None,
    parent: str,
    champion: np.ndarray | Metrics | None = None,
    preference: Sequence[str],
    policy: GatePolicy | None = None,
    slices: Mapping[str, np.ndarray] | None = None,
    data_valid: bool = True,
    drift_level: DriftLevel = "ok",
    candidates: Mapping[str, Metrics] | None = None,
    quantization_ne_budget_rel: float | None = None,
    champion_ne_epsilon_rel: float | None = None,
) -> Decision:
    """Hold every candidate to ``policy`` and pick the first passing one in ``preference``.

    Args:
        labels: float/int (B,) 0/1 clicks of the run date.
        predictions: variant name -> click probabilities (B,); must include ``parent``.
        parent: the fp32 variant the low-precision ones were quantized from.
        champion: the current champion's probabilities (B,) on the same rows, or None on
            the first day (champion checks then pass, recorded as not gated).
        preference: variants eligible for promotion, most wanted first; ``parent`` is
            dropped when ``policy.allow_fp32_fallback`` is False.
        policy: rules, budgets and noise settings (default ``GatePolicy()``).
        slices: slice name -> bool mask (B,), e.g. from ``models.slices.slice_masks``.
        data_valid: whether the run date's data passed validation.
        drift_level: "ok"; "warn" (stricter quantization budget); "severe" (no promotion,
            the first passing candidate becomes the challenger).
        candidates, quantization_ne_budget_rel, champion_ne_epsilon_rel: the v0 call, with
            ``champion`` as ``Metrics``: the two overall NE rules, values only, no noise.
    """
    if drift_level not in ("ok", "warn", "severe"):
        raise GateError(f"drift_level must be 'ok', 'warn' or 'severe', got {drift_level!r}")
    if candidates is not None:  # gate v0 call (tasks/evaluate.py until it passes predictions)
        policy = GatePolicy(
            quantization_ne_budget_rel=quantization_ne_budget_rel,
            warn_quantization_ne_budget_rel=quantization_ne_budget_rel,
            champion_ne_epsilon_rel=champion_ne_epsilon_rel, rules=LEGACY_RULES)
        scores: _Scores = _MetricScores(candidates, champion, parent)
        names = list(candidates)
    else:
        policy = policy or GatePolicy()
        if labels is None or predictions is None:
            raise GateError("decide needs labels and predictions (or the v0 candidates=...)")
        scores = _RowScores(labels, predictions, champion, parent, slices or {}, policy)
        names = list(predictions)
        if not policy.allow_fp32_fallback:
            preference = [v for v in preference if v != parent]
    if parent not in names:
        raise GateError(f"parent variant {parent!r} is not among candidates {names}")
    unknown = [v for v in preference if v not in names]
    if unknown:
        raise GateError(f"preference names variants {unknown} not among {names}")

    checks = {
        variant: [
            Check("data_valid", float(data_valid), 1.0, data_valid,
                  "" if data_valid else "the run date's data failed validation"),
            *(c for rule in policy.rules
              for c in scores.checks(rule, variant, policy.limit(rule, drift_level))),
        ]
        for variant in names
    }
    first = next((v for v in preference if all(c.passed for c in checks[v])), None)
    severe = drift_level == "severe"
    budget = policy.limit(LEGACY_RULES[0], drift_level)
    return Decision(
        promoted=None if severe else first, challenger=first if severe else None,
        checks=checks, reason=_reason(first, checks, preference, drift_level, budget),
        preference=tuple(preference), drift_level=drift_level,
        quantization_ne_budget_rel=budget,
    )


class _Scores:
    """Values and intervals of the rules' quantities; subclasses say where they come from.

    Subclasses set ``parent``, ``has_champion``, ``slice_rows`` (slice -> rows) and
    ``min_rows`` (slices with fewer rows are not gated).
    """

    parent: str
    has_champion: bool
    slice_rows: dict[str, int]
    min_rows: int

    def metric(self, metric: str, model: str, group: str) -> float | None:
        raise NotImplementedError

    def interval(self, rule: ThresholdRule, variant: str, ref: str, group: str
                 ) -> tuple[float, float] | None:
        return None

    def checks(self, rule: ThresholdRule, variant: str, limit: float) -> list[Check]:
        ref = {"none": None, "parent": self.parent, "champion": _CHAMPION}[rule.against]
        if ref == variant:
            return []
        groups = ([OVERALL] if rule.scope != "slices" else []) + (
            list(self.slice_rows) if rule.scope != "overall" else [])
        common = dict(threshold=limit, metric=rule.metric, against=rule.against,
                      change=None if ref is None else rule.change, direction=rule.direction)
        if rule.against == "champion" and not self.has_champion:
            return [Check(rule.name, None, passed=True, gated=False, slice=rule.scope, **common,
                          detail="no champion yet: the first passing candidate starts the lineage")]
        return [self._check(rule, variant, ref, group, common) for group in groups]

    def _check(self, rule, variant, ref, group, common) -> Check:
        rows = self.slice_rows.get(group)
        name = rule.name if group == OVERALL else f"{rule.name}.{_key(group)}"
        value = self.metric(rule.metric, variant, group)
        if ref is not None and value is not None:
            reference = self.metric(rule.metric, ref, group)
            value = None if not reference else (
                value - reference if rule.change == "abs" else relative_change(value, reference))
        if value is None:  # a slice may be single-class; the whole day must not be
            gated = group == OVERALL
            return Check(name, None, passed=not gated, gated=gated, slice=group, rows=rows,
                         detail="undefined on these rows (single-class labels)", **common)
        ci = None if ref is None else self.interval(rule, variant, ref, group)
        noise = None if ci is None else bool(ci[0] <= 0.0 <= ci[1])
        limit = common["threshold"]
        ok = value <= limit if rule.direction == "max" else value >= limit
        gated = group == OVERALL or rows >= self.min_rows
        detail = "" if ok else (
            "beyond the limit but within noise: the interval of the change contains 0" if noise
            else "beyond the limit; the interval of the change excludes 0" if noise is False
            else "beyond the limit")
        if not gated:
            detail = f"{rows} rows < min_slice_rows={self.min_rows}: reported, not gated"
        return Check(name, float(value), passed=bool(ok or noise or not gated), detail=detail,
                     slice=group, rows=rows, within_noise=noise, gated=gated,
                     ci_low=None if ci is None else float(ci[0]),
                     ci_high=None if ci is None else float(ci[1]), **common)


class _MetricScores(_Scores):
    """Gate v0: whole-day ``Metrics`` only, so no slices and no intervals."""

    def __init__(self, candidates: Mapping[str, Metrics], champion, parent: str) -> None:
        self.models = {**candidates, **({_CHAMPION: champion} if champion is not None else {})}
        self.parent, self.has_champion = parent, champion is not None
        self.slice_rows, self.min_rows = {}, 1

    def metric(self, metric: str, model: str, group: str) -> float | None:
        return getattr(self.models[model], metric)


class _RowScores(_Scores):
    """Per-row scores: metrics on any slice, bootstrap and DeLong intervals of changes."""

    def __init__(self, labels, predictions, champion, parent, slices, policy) -> None:
        self.labels = np.asarray(labels, dtype=np.float64).reshape(-1)
        self.probs = {n: np.asarray(p, dtype=np.float64).reshape(-1)
                      for n, p in {**predictions, **(
                          {_CHAMPION: champion} if champion is not None else {})}.items()}
        if champion is not None and _CHAMPION in predictions:
            raise GateError(f"a candidate may not be called {_CHAMPION!r}: it names the champion")
        if not np.isin(self.labels, (0.0, 1.0)).all():
            raise GateError(f"labels must be 0/1, found {np.unique(self.labels)[:5].tolist()}")
        outside = [n for n, p in self.probs.items() if not ((p >= 0) & (p <= 1)).all()]
        if outside:
            raise GateError(f"probabilities of {outside} must lie in [0, 1] (no NaN)")
        bad = {n: p.shape[0] for n, p in self.probs.items() if p.shape != self.labels.shape}
        bad.update({s: np.shape(m) for s, m in slices.items()
                    if np.shape(m) != self.labels.shape or np.asarray(m).dtype != bool})
        if bad:
            raise GateError(f"predictions and slice masks must be shape ({self.labels.size},) "
                            f"(masks bool); these are not: {bad}")
        self.masks = {OVERALL: None, **{s: np.asarray(m) for s, m in slices.items()}}
        self.slice_rows = {s: int(m.sum()) for s, m in slices.items()}
        self.parent, self.has_champion, self.policy = parent, champion is not None, policy
        self.min_rows = policy.min_slice_rows
        self._metrics: dict[tuple, float | None] = {}
        self._sums: tuple[np.ndarray, dict] | None = None

    def _rows(self, model: str, group: str) -> tuple[np.ndarray, np.ndarray]:
        mask = self.masks[group]
        probs = self.probs[model]
        return (self.labels, probs) if mask is None else (self.labels[mask], probs[mask])

    def metric(self, metric: str, model: str, group: str) -> float | None:
        key = (metric, model, group)
        if key not in self._metrics:
            if metric == "auc":
                found = self._metrics[("auc_components", model, group)] = auc_components(
                    *self._rows(model, group))
                self._metrics[key] = None if found is None else found[0]
                return self._metrics[key]
            function = {"ne": normalized_entropy, "log_loss": log_loss,
                        "calibration": calibration}[metric]
            try:
                self._metrics[key] = function(*self._rows(model, group))
            except MetricError:
                self._metrics[key] = None
        return self._metrics[key]

    def interval(self, rule, variant, ref, group) -> tuple[float, float] | None:
        alpha = 1.0 - self.policy.confidence
        if rule.metric == "auc":  # values were computed first, so components are cached
            a, b = (self._metrics[("auc_components", m, group)] for m in (variant, ref))
            if a is None or b is None:
                return None
            delta, se = paired_auc_delta(a, b)
            scale = 1.0 if rule.change == "abs" else 1.0 / b[0]
            z = float(norm.ppf(1.0 - alpha / 2))
            return (delta - z * se) * scale, (delta + z * se) * scale
        if self._sums is None:
            refs = [r for r in (self.parent, _CHAMPION) if r in self.probs]
            groups = np.stack([np.ones(self.labels.size, bool) if m is None else m
                               for m in self.masks.values()])
            self._sums = paired_bootstrap_sums(
                self.labels, self.probs, groups, refs=refs, skip=_CHAMPION,
                samples=self.policy.bootstrap_samples, seed=self.policy.bootstrap_seed)
        sums, column = self._sums
        deltas = bootstrap_changes(sums[:, list(self.masks).index(group), :], column,
                                   metric=rule.metric, change=rule.change,
                                   variant=variant, ref=ref)
        if np.isfinite(deltas).mean() < 0.5:  # most resamples single-class: no interval
            return None
        low, high = np.nanquantile(deltas, [alpha / 2, 1.0 - alpha / 2])
        return float(low), float(high)


def _key(slice_name: str) -> str:
    """A slice name as a check-name suffix MLflow accepts (``users=new`` -> ``users_new``)."""
    return "".join(ch if ch.isalnum() or ch in "_.-" else "_" for ch in slice_name)


def _reason(first, checks, preference, drift_level, budget) -> str:
    failures = [_failure(v, c) for v in preference if v != first
                for c in checks[v] if not c.passed]
    skipped = f" (preferred over: {'; '.join(failures)})" if failures and first else ""
    warn = f"drift is 'warn', so the quantization budget is {budget:.6g}; " if (
        drift_level == "warn") else ""
    if first is None:
        return f"{warn}no candidate passed the gate: " + "; ".join(failures or ["none eligible"])
    if drift_level == "severe":
        return (f"drift is 'severe', so nothing is promoted automatically: {first} passed "
                f"every check and is registered as the challenger for human review{skipped}")
    return f"{warn}{first} passed every check and is promoted{skipped}"


def _failure(variant: str, check: Check) -> str:
    if check.value is None:
        return f"{variant} failed {check.name} ({check.detail})"
    interval = ("" if check.ci_low is None
                else f", interval [{_fmt(check.ci_low)}, {_fmt(check.ci_high)}]")
    return (f"{variant} failed {check.name} ({_fmt(check.value)} vs limit "
            f"{_fmt(check.threshold)}{interval})")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.6g}"


def reject_invalid_data(summary: str, *, check: str = "data_valid") -> Decision:
    """The decision of a day that stops before training (its data failed validation, or
    there is no usable data): nothing trained, nothing moves."""
    failed = Check(check, 0.0, 1.0, False, summary)
    return Decision(promoted=None, checks={"run_date": [failed]},
                    reason=f"the run stopped before training: {summary}")
