"""Precision plans as data: per unit the recipe, its calibration and what was measured.

A ``PrecisionPlan`` is what a search produces and what later days reuse: ``to_json`` /
``from_json`` round-trip it exactly, and ``apply`` turns any fp32 parent with the same units
into the low-precision model, re-calibrating static units on fresh rows (cheap: one
forward pass), without searching again.

JSON layout (format_version 1)::

    {"format_version": 1,
     "units": {"over_arch.mlp.0": {"precision": "int8_static_histogram",
                                   "calibration": "histogram",
                                   "ne_delta_rel": 0.0001, "bytes": 213000}, ...},
     "ne_delta_rel": 0.0004, "bytes": 1234567, "latency_ms": 3.2,
     "notes": "why this plan was chosen"}

``ne_delta_rel`` is the relative NE change against the fp32 parent as a fraction (0.0005
means +0.05 %, worse); per unit it is that unit's own sensitivity (quantized alone), for the
plan the measured total. ``bytes`` are state_dict bytes; ``latency_ms`` is the scoring time
of one batch of ``latency_batch`` rows. Measurements are None when not measured.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from quantrec.models.batch import Batch
from quantrec.models.dlrm import DLRM
from quantrec.models.quantize import PRECISIONS, apply_precision_plan, precision_plan
from quantrec.models.recipes import RECIPES

FORMAT_VERSION = 1


class PlanError(ValueError):
    """A precision plan is malformed, of another format version, or does not fit a model."""


def calibration_of(precision: str) -> str | None:
    """The calibration method a recipe needs ("histogram" for int8_static_histogram), else None."""
    methods = {r.calibration for (_, p), r in RECIPES.items() if p == precision}
    return methods.pop() if methods else None


@dataclass(frozen=True)
class UnitPlan:
    """One unit's recipe and measurements.

    Attributes:
        precision: recipe name, e.g. "int4_greedy" or "int8_static_percentile".
        calibration: the range estimator of a static recipe, else None (follows precision).
        ne_delta_rel: relative NE change with only this unit quantized, or None.
        bytes: the unit's state_dict bytes at this precision, or None.
    """

    precision: str
    calibration: str | None = None
    ne_delta_rel: float | None = None
    bytes: int | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise PlanError(
                f"unknown precision {self.precision!r}; expected one of {list(PRECISIONS)}"
            )
        expected = calibration_of(self.precision)
        if self.calibration != expected:
            raise PlanError(
                f"precision {self.precision!r} calibrates with {expected!r}, "
                f"the plan says {self.calibration!r}"
            )

    @classmethod
    def of(cls, precision: str, **measurements: Any) -> UnitPlan:
        """A unit plan whose calibration follows from ``precision``."""
        return cls(precision=precision, calibration=calibration_of(precision), **measurements)


@dataclass
class PrecisionPlan:
    """Per-unit precisions of one model and the measurements of the whole plan.

    Attributes:
        units: unit name (``models.quantize.quantizable_units``) -> its plan.
        ne_delta_rel: measured relative NE change of the whole plan vs fp32, or None.
        bytes: state_dict bytes of the whole quantized model, or None.
        latency_ms: scoring time of one batch of ``latency_batch`` rows, or None.
        latency_batch: rows per timed batch, or None.
        notes: free text, e.g. why a search chose this plan.
    """

    units: dict[str, UnitPlan]
    ne_delta_rel: float | None = None
    bytes: int | None = None
    latency_ms: float | None = None
    latency_batch: int | None = None
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_precisions(cls, precisions: dict[str, str], **measurements: Any) -> PrecisionPlan:
        """A plan from unit name -> precision name, without per-unit measurements."""
        return cls(units={n: UnitPlan.of(p) for n, p in precisions.items()}, **measurements)

    @classmethod
    def from_model(cls, model: nn.Module) -> PrecisionPlan:
        """The plan a (quantized) model currently runs."""
        return cls.from_precisions(precision_plan(model))

    def precisions(self) -> dict[str, str]:
        """Unit name -> precision name: the mapping ``apply_precision_plan`` takes."""
        return {name: unit.precision for name, unit in self.units.items()}

    def needs_calibration(self) -> bool:
        return any(unit.calibration for unit in self.units.values())

    def apply(self, model: DLRM, *, calibration: Batch | None = None) -> DLRM:
        """A quantized eval-mode copy of the fp32 ``model``; static units calibrate on
        ``calibration`` (required when ``needs_calibration()``)."""
        try:
            return apply_precision_plan(model, self.precisions(), calibration=calibration)
        except ValueError as err:
            raise PlanError(f"precision plan does not apply to this model: {err}") from err

    def to_json(self) -> str:
        """Indented JSON, keys in unit order; ``from_json`` restores an equal plan."""
        body = {"format_version": FORMAT_VERSION, **asdict(self)}
        return json.dumps(body, indent=2)

    @classmethod
    def from_json(cls, text: str) -> PrecisionPlan:
        try:
            body = json.loads(text)
        except json.JSONDecodeError as err:
            raise PlanError(f"precision plan is not JSON: {err}") from err
        version = body.pop("format_version", None)
        if version != FORMAT_VERSION:
            raise PlanError(
                f"precision plan has format_version {version}; this reader handles {FORMAT_VERSION}"
            )
        try:
            units = {name: UnitPlan(**unit) for name, unit in body.pop("units").items()}
            return cls(units=units, **body)
        except (KeyError, TypeError) as err:
            raise PlanError(f"precision plan JSON lacks or has unexpected fields: {err}") from err
