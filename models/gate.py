"""Promotion gate v1: which candidate variant, if any, may become the champion.

Candidates are scored on the run date's rows, the freshest day none of them trained on.
Every variant is held to every ``ThresholdRule`` of the ``GatePolicy`` (``models.gate_policy``),
overall and on each slice of rows (``models.slices``); the first variant in order of
preference (low precision first: it is what serving wants) that passes every check is
promoted. Every check is recorded with its value, limit, interval and verdict, so a decision
can be read back and argued with. A rule bounds a metric (ne | auc | log_loss | calibration)
as a value, or as its change against the fp32 parent, the champion or a baseline
(``models.baselines``) on the same rows.

Absolute quality. By default a candidate must beat the base rate (NE below 1, the upper end
of its interval too) and must not trail the logistic baseline by more than
``baseline_ne_margin_rel``. When every candidate fails one of these, the decision is a normal
rejection whose reason opens with "no model beats the baseline" and names both NEs. Without
the baselines' predictions (``decide(baselines=None)``) rules against them are recorded as
not gated, as champion rules are on the first day.

Noise rule. Every compared check gets a ``confidence`` interval of its change on these rows,
paired (both models scored on the same resampled rows). It FAILS when the change is beyond
the limit AND the interval excludes 0; when the interval contains 0 the two models cannot be
told apart here: *within noise*, it passes (``within_noise`` is recorded on every compared
check). Value rules are never noise-adjusted in the candidate's favour; a ``strict`` one must
hold for its whole interval. Intervals (``models.noise``): a paired Poisson(1) bootstrap for
ne, log_loss and calibration (single-class resamples dropped), DeLong for auc. A metric
undefined on a slice (single-class labels) is reported, not gated; on the whole day it fails.

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

from quantrec.models.gate_policy import (  # noqa: F401  (re-exported: the gate's public API)
    DEFAULT_RULES,
    DriftLevel,
    GateError,
    GatePolicy,
    ThresholdRule,
)
from quantrec.models.metrics import MetricError, calibration, log_loss, normalized_entropy
from quantrec.models.names import CHAMPION_KEY
from quantrec.models.noise import (  # noqa: F401  (re-exported: the gate's public API)
    PairedIntervals,
    auc_components,
    bootstrap_changes,
    bootstrap_sums,
    bootstrap_values,
    paired_auc_delta,
    paired_bootstrap_sums,
    percentile_interval,
)

OVERALL = "overall"
NO_MODEL_BEATS_THE_BASELINE = "no model beats the baseline"  # the reason's opening words


@dataclass(frozen=True)
class Check:
    """One gate check of one variant on one set of rows.

    ``passed`` is ``value <= threshold`` ("max") or ``>= threshold`` ("min"), or the change is
    within noise (the interval [ci_low, ci_high] contains 0), or the check is not gated (a
    slice under ``min_slice_rows``, an undefined metric on a slice, a reference not given);
    ``detail`` says which. A ``strict`` value check also needs its interval within the bound.
    ``metric_value`` is the variant's metric on these rows and ``reference_value`` the
    reference model's, so a change reads as two values; ``versus_baseline`` marks the checks
    that hold the variant to a baseline (the base rate, the logistic regression).
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
    metric_value: float | None = None
    reference_value: float | None = None
    versus_baseline: bool = False


@dataclass(frozen=True)
class Decision:
    """The gate's verdict on one run date; ``outcome`` is promoted | challenger | rejected.

    ``baselines``: NE of each baseline given to ``decide`` on all of the day's rows (None
    when undefined there).
    """

    promoted: str | None
    checks: dict[str, list[Check]]
    reason: str
    preference: tuple[str, ...] = field(default=())
    challenger: str | None = None
    drift_level: DriftLevel = "ok"
    quantization_ne_budget_rel: float | None = None  # the budget in force (after drift)
    baselines: dict[str, float | None] = field(default_factory=dict)

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
            "outcome": self.outcome,
            "promoted": self.promoted,
            "challenger": self.challenger,
            "reason": self.reason,
            "drift_level": self.drift_level,
            "quantization_ne_budget_rel": self.quantization_ne_budget_rel,
            "preference": list(self.preference),
            "baselines": dict(self.baselines),
            "checks": {v: [asdict(c) for c in cs] for v, cs in self.checks.items()},
        }

    def to_text(self) -> str:
        """Plain text that reads top-down: the outcome and the reason, the baselines, then a
        table of every check with its result first, failures first (then passes, then checks
        not gated), each bound with its direction (``<= 0.005``, ``>= 0.8``)."""
        head = (
            "result",
            "variant",
            "check",
            "slice",
            "rows",
            "value",
            "threshold",
            "interval",
            "noise",
        )
        ordered = sorted(
            ((variant, c) for variant, checks in self.checks.items() for c in checks),
            key=lambda row: 2 if not row[1].gated else int(row[1].passed),
        )
        rows = [head] + [
            (
                _result(c),
                variant,
                c.name,
                c.slice,
                "" if c.rows is None else str(c.rows),
                _fmt(c.value),
                ("<= " if c.direction == "max" else ">= ") + _fmt(c.threshold),
                "" if c.ci_low is None else f"[{_fmt(c.ci_low)}, {_fmt(c.ci_high)}]",
                {None: "", True: "within", False: "outside"}[c.within_noise],
            )
            for variant, c in ordered
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
        failed = sum(1 for _, c in ordered if c.gated and not c.passed)
        baselines = (
            [
                "baselines: "
                + ", ".join(f"{name} NE {_fmt(ne)}" for name, ne in self.baselines.items())
            ]
            if self.baselines
            else []
        )
        return "\n".join(
            [
                f"outcome: {self.outcome}",
                f"reason: {self.reason}",
                *baselines,
                f"checks: {len(ordered)}, failed: {failed}",
                "",
                *lines,
            ]
        )


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
    labels: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    parent: str,
    preference: Sequence[str],
    champion: np.ndarray | None = None,
    baselines: Mapping[str, np.ndarray] | None = None,
    policy: GatePolicy | None = None,
    slices: Mapping[str, np.ndarray] | None = None,
    data_valid: bool = True,
    drift_level: DriftLevel = "ok",
) -> Decision:
    """Hold every candidate to ``policy`` and pick the first passing one in ``preference``.

    Args:
        labels: float/int (B,) 0/1 clicks of the run date.
        predictions: variant name -> click probabilities (B,); must include ``parent``.
        parent: the fp32 variant the low-precision ones were quantized from.
        preference: variants eligible for promotion, most wanted first; ``parent`` is
            dropped when ``policy.allow_fp32_fallback`` is False.
        champion: the current champion's probabilities (B,) on the same rows, or None on
            the first day (champion checks then pass, recorded as not gated).
        baselines: baseline name (``models.names.Baseline``) -> its probabilities (B,) on
            the same rows (``models.baselines.Baselines.predict``), or None: rules against a
            baseline that is not given pass, recorded as not gated.
        policy: rules, budgets and noise settings (default ``GatePolicy()``).
        slices: slice name -> bool mask (B,), e.g. from ``models.slices.slice_masks``.
        data_valid: whether the run date's data passed validation.
        drift_level: "ok"; "warn" (stricter quantization budget); "severe" (no promotion,
            the first passing candidate becomes the challenger).

    Raises:
        GateError: unknown variants, mismatched shapes, labels not 0/1, a candidate named
            like the champion or a baseline.
    """
    if drift_level not in ("ok", "warn", "severe"):
        raise GateError(f"drift_level must be 'ok', 'warn' or 'severe', got {drift_level!r}")
    policy = policy or GatePolicy()
    scores = _Scores(labels, predictions, champion, baselines or {}, parent, slices or {}, policy)
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
            Check(
                "data_valid",
                float(data_valid),
                1.0,
                data_valid,
                "" if data_valid else "the run date's data failed validation",
            ),
            *(
                c
                for rule in policy.rules
                for c in scores.checks(rule, variant, policy.limit(rule, drift_level))
            ),
        ]
        for variant in names
    }
    first = next((v for v in preference if all(c.passed for c in checks[v])), None)
    # Severe drift sends the winner to review instead of serving; with no champion yet
    # there is nothing to keep serving, so the first passing candidate is promoted.
    severe = drift_level == "severe" and champion is not None
    budget = policy.quantization_budget(drift_level)
    return Decision(
        promoted=None if severe else first,
        challenger=first if severe else None,
        checks=checks,
        reason=_reason(first, checks, preference, drift_level, budget, champion is None),
        preference=tuple(preference),
        drift_level=drift_level,
        quantization_ne_budget_rel=budget,
        baselines={b: scores.metric("ne", b, OVERALL) for b in scores.baselines},
    )


class _Scores:
    """Per-row scores of the candidates, the champion and the baselines: metrics on any
    slice, bootstrap and DeLong intervals of values and changes."""

    def __init__(self, labels, predictions, champion, baselines, parent, slices, policy) -> None:
        self.labels = np.asarray(labels, dtype=np.float64).reshape(-1)
        if champion is not None and CHAMPION_KEY in predictions:
            raise GateError(
                f"a candidate may not be called {CHAMPION_KEY!r}: it names the champion"
            )
        clash = sorted(set(baselines) & {*predictions, CHAMPION_KEY})
        if clash:
            raise GateError(f"baselines {clash} are named like a candidate or the champion")
        given = {
            **predictions,
            **({CHAMPION_KEY: champion} if champion is not None else {}),
            **baselines,
        }
        self.probs = {n: np.asarray(p, dtype=np.float64).reshape(-1) for n, p in given.items()}
        if not np.isin(self.labels, (0.0, 1.0)).all():
            raise GateError(f"labels must be 0/1, found {np.unique(self.labels)[:5].tolist()}")
        outside = [n for n, p in self.probs.items() if not ((p >= 0) & (p <= 1)).all()]
        if outside:
            raise GateError(f"probabilities of {outside} must lie in [0, 1] (no NaN)")
        bad = {n: p.shape[0] for n, p in self.probs.items() if p.shape != self.labels.shape}
        bad.update(
            {
                s: np.shape(m)
                for s, m in slices.items()
                if np.shape(m) != self.labels.shape or np.asarray(m).dtype != bool
            }
        )
        if bad:
            raise GateError(
                f"predictions and slice masks must be shape ({self.labels.size},) "
                f"(masks bool); these are not: {bad}"
            )
        self.slice_rows = {s: int(np.sum(m)) for s, m in slices.items()}
        self.parent, self.min_rows = parent, policy.min_slice_rows
        self.baselines = list(baselines)
        self._metrics: dict[tuple, float | None] = {}
        refs = [r for r in dict.fromkeys(map(self.reference, policy.rules)) if r in self.probs]
        groups = {OVERALL: None, **{s: np.asarray(m) for s, m in slices.items()}}
        self.intervals = PairedIntervals(  # one bootstrap for every rule, model and group
            self.labels,
            self.probs,
            groups,
            refs=refs,
            skip=[CHAMPION_KEY, *self.baselines],
            samples=policy.bootstrap_samples,
            seed=policy.bootstrap_seed,
            confidence=policy.confidence,
        )

    def reference(self, rule: ThresholdRule) -> str | None:
        """The model a rule compares against (None for a value rule)."""
        return {"none": None, "parent": self.parent, "champion": CHAMPION_KEY}.get(
            rule.against, str(rule.against)
        )

    def checks(self, rule: ThresholdRule, variant: str, limit: float) -> list[Check]:
        ref = self.reference(rule)
        if ref == variant:
            return []
        groups = ([OVERALL] if rule.scope != "slices" else []) + (
            list(self.slice_rows) if rule.scope != "overall" else []
        )
        common = dict(
            threshold=limit,
            metric=rule.metric,
            against=str(rule.against),
            change=None if ref is None else rule.change,
            direction=rule.direction,
            versus_baseline=rule.versus_baseline,
        )
        if ref is not None and ref not in self.probs:
            detail = (
                "no champion yet: the first passing candidate starts the lineage"
                if ref == CHAMPION_KEY
                else f"no {ref} predictions given: not gated"
            )
            return [
                Check(
                    rule.name,
                    None,
                    passed=True,
                    gated=False,
                    slice=rule.scope,
                    detail=detail,
                    **common,
                )
            ]
        return [self._check(rule, variant, ref, group, common) for group in groups]

    def _check(self, rule, variant, ref, group, common) -> Check:
        rows = self.slice_rows.get(group)
        name = rule.name if group == OVERALL else f"{rule.name}.{_key(group)}"
        own = self.metric(rule.metric, variant, group)
        reference = None if ref is None else self.metric(rule.metric, ref, group)
        value = own
        if ref is not None and own is not None:
            value = (
                None
                if not reference
                else (own - reference if rule.change == "abs" else relative_change(own, reference))
            )
        recorded = dict(
            slice=group, rows=rows, metric_value=own, reference_value=reference, **common
        )
        if value is None:  # a slice may be single-class; the whole day must not be
            gated = group == OVERALL
            return Check(
                name,
                None,
                passed=not gated,
                gated=gated,
                detail="undefined on these rows (single-class labels)",
                **recorded,
            )
        limit = common["threshold"]
        ok = value <= limit if rule.direction == "max" else value >= limit
        noise = None
        if ref is None:
            ci = self.intervals.value(rule.metric, variant, group) if rule.strict else None
            ok, detail = (
                _strict(ok, ci, limit, rule.direction)
                if rule.strict
                else (ok, "" if ok else "beyond the limit")
            )
        else:
            ci = self.intervals.change(rule.metric, rule.change, variant, ref, group)
            noise = None if ci is None else bool(ci[0] <= 0.0 <= ci[1])
            detail = (
                ""
                if ok
                else (
                    "beyond the limit but within noise: the interval of the change contains 0"
                    if noise
                    else "beyond the limit; the interval of the change excludes 0"
                    if noise is False
                    else "beyond the limit"
                )
            )
        gated = group == OVERALL or rows >= self.min_rows
        if not gated:
            detail = f"{rows} rows < min_slice_rows={self.min_rows}: reported, not gated"
        return Check(
            name,
            float(value),
            passed=bool(ok or noise or not gated),
            detail=detail,
            within_noise=noise,
            gated=gated,
            ci_low=None if ci is None else float(ci[0]),
            ci_high=None if ci is None else float(ci[1]),
            **recorded,
        )

    def metric(self, metric: str, model: str, group: str) -> float | None:
        """The metric of ``model`` on the group's rows; None where it is undefined."""
        key = (metric, model, group)
        if key not in self._metrics:
            if metric == "auc":
                found = self.intervals.auc(model, group)
                self._metrics[key] = None if found is None else found[0]
                return self._metrics[key]
            function = {"ne": normalized_entropy, "log_loss": log_loss, "calibration": calibration}[
                metric
            ]
            try:
                self._metrics[key] = function(*self.intervals.rows(model, group))
            except MetricError:  # no rows, or single-class labels
                self._metrics[key] = None
        return self._metrics[key]


def _strict(
    ok: bool, ci: tuple[float, float] | None, limit: float, direction: str
) -> tuple[bool, str]:
    """A strict value check's verdict and detail: the value and its interval within the bound."""
    if not ok:
        return False, "beyond the limit"
    if ci is None:
        return (
            False,
            "no interval on these rows (too few clicks or non-clicks): not shown within the limit",
        )
    inside = ci[1] < limit if direction == "max" else ci[0] > limit
    return inside, "" if inside else (
        f"the interval [{_fmt(ci[0])}, {_fmt(ci[1])}] reaches the limit {_fmt(limit)}: "
        "not shown within it on these rows"
    )


def _key(slice_name: str) -> str:
    """A slice name as a check-name suffix MLflow accepts (``users=new`` -> ``users_new``)."""
    return "".join(ch if ch.isalnum() or ch in "_.-" else "_" for ch in slice_name)


def _reason(first, checks, preference, drift_level, budget, first_day=False) -> str:
    failures = [_failure(v, c) for v in preference if v != first for c in checks[v] if not c.passed]
    skipped = f" (preferred over: {'; '.join(failures)})" if failures and first else ""
    warn = (
        f"drift is 'warn', so the quantization budget is {budget:.6g}; "
        if (drift_level == "warn")
        else ""
    )
    if first is None:
        lost = {v: [c for c in checks[v] if _lost_to_baseline(c)] for v in preference}
        if preference and all(lost.values()):
            others = [
                _failure(v, c)
                for v in preference
                for c in checks[v]
                if not c.passed and not _lost_to_baseline(c)
            ]
            also = f" (also: {'; '.join(others)})" if others else ""
            return (
                f"{warn}{NO_MODEL_BEATS_THE_BASELINE}: "
                + "; ".join(_baseline_failure(v, c) for v, cs in lost.items() for c in cs)
                + also
            )
        return f"{warn}no candidate passed the gate: " + "; ".join(failures or ["none eligible"])
    if drift_level == "severe" and first_day:
        return (
            f"drift is 'severe' against the training window, but no champion serves yet: "
            f"{first} passed every check and is promoted{skipped}"
        )
    if drift_level == "severe":
        return (
            f"drift is 'severe', so nothing is promoted automatically: {first} passed "
            f"every check and is registered as the challenger for human review{skipped}"
        )
    return f"{warn}{first} passed every check and is promoted{skipped}"


def _lost_to_baseline(check: Check) -> bool:
    return check.versus_baseline and not check.passed and check.value is not None


def _baseline_failure(variant: str, check: Check) -> str:
    """Both NEs (or values) of a failed baseline check, e.g. ``fp32 NE 0.873 vs
    baseline.logistic NE 0.861 (+1.39 % relative, margin 0 %, interval [...])``."""
    where = "" if check.slice == OVERALL else f" on {check.slice}"
    interval = (
        "" if check.ci_low is None else f", interval [{_fmt(check.ci_low)}, {_fmt(check.ci_high)}]"
    )
    metric = (check.metric or "").upper() if check.metric in ("ne", "auc") else check.metric
    if check.against == "none":
        return (
            f"{variant} {metric} {_fmt(check.metric_value)}{where} is not shown below "
            f"{_fmt(check.threshold)}, the {metric} of predicting the click rate "
            f"(the base rate){interval}"
        )
    change = (
        f"{check.value:+.3%} relative, margin {check.threshold:.3%}"
        if check.change == "rel"
        else f"{check.value:+.6g}, margin {_fmt(check.threshold)}"
    )
    return (
        f"{variant} {metric} {_fmt(check.metric_value)}{where} vs {check.against} {metric} "
        f"{_fmt(check.reference_value)} ({change}{interval})"
    )


def _failure(variant: str, check: Check) -> str:
    if check.value is None:
        return f"{variant} failed {check.name} ({check.detail})"
    interval = (
        "" if check.ci_low is None else f", interval [{_fmt(check.ci_low)}, {_fmt(check.ci_high)}]"
    )
    return (
        f"{variant} failed {check.name} ({_fmt(check.value)} vs limit "
        f"{_fmt(check.threshold)}{interval})"
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.6g}"


def reject_invalid_data(summary: str, *, check: str = "data_valid") -> Decision:
    """The decision of a day that stops before training (its data failed validation, or
    there is no usable data): nothing trained, nothing moves."""
    failed = Check(check, 0.0, 1.0, False, summary)
    return Decision(
        promoted=None,
        checks={"run_date": [failed]},
        reason=f"the run stopped before training: {summary}",
    )
