"""Promotion gate v0: which candidate variant, if any, may become the champion.

Candidates are scored on the run date's rows, the freshest day none of them trained on.
Each variant is held to every check below; the first passing variant in order of
preference (low precision first: it is what serving wants) is promoted. Every check is
recorded with its value and threshold whether it passed or not, so a decision can be read
back and argued with.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

from models.metrics import Metrics


@dataclass(frozen=True)
class Check:
    """One gate check: ``passed`` is ``value <= threshold`` unless ``detail`` says why not."""

    name: str
    value: float | None
    threshold: float | None
    passed: bool
    detail: str = ""


@dataclass(frozen=True)
class Decision:
    """The gate's verdict on one run date."""

    promoted: str | None
    checks: dict[str, list[Check]]
    reason: str
    preference: tuple[str, ...] = field(default=())

    @property
    def outcome(self) -> str:
        return "promoted" if self.promoted else "rejected"

    def verdict(self, variant: str) -> str:
        """``promoted``, ``passed`` (eligible but another was preferred) or ``rejected``."""
        if variant == self.promoted:
            return "promoted"
        return "passed" if all(c.passed for c in self.checks[variant]) else "rejected"

    def to_dict(self) -> dict:
        return {
            "outcome": self.outcome,
            "promoted": self.promoted,
            "reason": self.reason,
            "preference": list(self.preference),
            "checks": {v: [asdict(c) for c in cs] for v, cs in self.checks.items()},
        }


def relative_change(value: float, reference: float) -> float:
    """``(value - reference) / reference``: positive means NE grew, i.e. got worse."""
    if reference == 0 or not math.isfinite(reference):
        raise ValueError(f"cannot take a relative change against reference={reference}")
    return (value - reference) / reference


def decide(
    *,
    data_valid: bool,
    candidates: Mapping[str, Metrics],
    parent: str,
    champion: Metrics | None,
    quantization_ne_budget_rel: float,
    champion_ne_epsilon_rel: float,
    preference: Sequence[str],
) -> Decision:
    """Hold every candidate to the gate and pick the first passing one in ``preference``.

    Args:
        data_valid: whether the run date's data passed validation.
        candidates: variant name -> metrics on the run date; must include ``parent``.
        parent: the fp32 variant the low-precision ones were quantized from.
        champion: the current champion's metrics on the same rows, or None on the first day.
        quantization_ne_budget_rel: max relative NE loss of a variant vs ``parent``.
        champion_ne_epsilon_rel: max relative NE by which a variant may trail the champion.
        preference: variants eligible for promotion, most wanted first.
    """
    if parent not in candidates:
        raise ValueError(f"parent variant {parent!r} is not among candidates {list(candidates)}")
    unknown = [v for v in preference if v not in candidates]
    if unknown:
        raise ValueError(f"preference names variants {unknown} not among {list(candidates)}")

    parent_ne = candidates[parent].ne
    checks: dict[str, list[Check]] = {}
    for variant, metrics in candidates.items():
        variant_checks = [
            Check("data_valid", float(data_valid), 1.0, data_valid,
                  "" if data_valid else "the run date's data failed validation"),
        ]
        if variant != parent:
            loss = relative_change(metrics.ne, parent_ne)
            variant_checks.append(
                Check("quantization_ne_loss_rel", loss, quantization_ne_budget_rel,
                      loss <= quantization_ne_budget_rel)
            )
        if champion is None:
            variant_checks.append(
                Check("champion_ne_regression_rel", None, champion_ne_epsilon_rel, True,
                      "no champion yet: the first passing candidate starts the lineage")
            )
        else:
            regression = relative_change(metrics.ne, champion.ne)
            variant_checks.append(
                Check("champion_ne_regression_rel", regression, champion_ne_epsilon_rel,
                      regression <= champion_ne_epsilon_rel)
            )
        checks[variant] = variant_checks

    promoted = next((v for v in preference if all(c.passed for c in checks[v])), None)
    return Decision(
        promoted=promoted,
        checks=checks,
        reason=_reason(promoted, checks, preference),
        preference=tuple(preference),
    )


def _reason(promoted: str | None, checks: dict[str, list[Check]], preference: Sequence[str]) -> str:
    failures = [
        f"{variant}: {c.name}={_fmt(c.value)} > {_fmt(c.threshold)}"
        if c.value is not None else f"{variant}: {c.name} ({c.detail})"
        for variant in preference
        for c in checks[variant]
        if not c.passed
    ]
    if promoted is None:
        return "no candidate passed the gate: " + "; ".join(failures)
    skipped = [f for f in failures if not f.startswith(f"{promoted}:")]
    text = f"{promoted} passed every check"
    return text + (" (preferred over failing: " + "; ".join(skipped) + ")" if skipped else "")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.6g}"


def reject_invalid_data(summary: str, *, check: str = "data_valid") -> Decision:
    """The decision of a day that stops before training (its data failed validation, or
    there is no usable data): nothing trained, nothing moves."""
    failed = Check(check, 0.0, 1.0, False, summary)
    return Decision(promoted=None, checks={"run_date": [failed]},
                    reason=f"the run stopped before training: {summary}")
