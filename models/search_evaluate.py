"""Scoring precision plans for the search: the NE budget, scored candidates, the evaluator.

``Evaluator`` builds each (unit, precision) module once and assembles candidate models
from them without copying tables (``models.quantize.assemble_variant``); static units
calibrate on the fp32 parent's activations, so a unit's module does not depend on the rest
of the plan. Every scored plan is appended to ``Evaluator.evaluated``.

Bytes are state_dict bytes (``models.quantize.model_bytes``): what a version stores and
ships. For the error-bounded codec's tables (``ebc_*``) those are the encoded bytes, not the
decoded fp32 table they serve from (``models.quantize.serving_bytes``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from quantrec.models.batch import Batch
from quantrec.models.dlrm import DLRM
from quantrec.models.quantize import (
    assemble_variant,
    calibrate_input_ranges,
    convert_unit,
    model_bytes,
    quantizable_units,
)
from quantrec.models.recipes import RECIPES
from quantrec.models.scorer import score


@dataclass(frozen=True)
class Budget:
    """The NE loss a plan may cost: ``limit`` relative (fraction of fp32 NE) or absolute."""

    limit: float = 0.0005
    kind: Literal["relative", "absolute"] = "relative"

    def __post_init__(self) -> None:
        if self.kind not in ("relative", "absolute") or not self.limit >= 0:
            raise ValueError(
                f"budget needs kind 'relative' or 'absolute' and limit >= 0, got "
                f"kind={self.kind!r}, limit={self.limit}"
            )

    def relative_limit(self, ne_fp32: float) -> float:
        """The limit as a fraction of the fp32 NE."""
        return self.limit if self.kind == "relative" else self.limit / ne_fp32

    def allows(self, *, ne_fp32: float, ne: float) -> bool:
        loss = (ne - ne_fp32) / ne_fp32 if self.kind == "relative" else ne - ne_fp32
        return loss <= self.limit


@dataclass
class Candidate:
    """One scored plan: ``precisions`` maps unit -> precision name."""

    label: str
    precisions: dict[str, str]
    ne: float
    ne_delta_rel: float
    bytes: int
    within_budget: bool


class Evaluator:
    """Builds each (unit, precision) module once and scores plans assembled from them."""

    def __init__(
        self, parent: DLRM, held_out: Batch, calibration: Batch, budget: Budget, batch_size: int
    ) -> None:
        self.parent, self.held_out, self.budget = parent.eval(), held_out, budget
        self.batch_size = batch_size
        self.units = quantizable_units(parent)
        self.ne_fp32 = score(parent, held_out, batch_size=batch_size).ne
        self.calibration = calibration
        self.ranges: dict[tuple[str, str], tuple[float, float]] = {}
        self.modules: dict[tuple[str, str], nn.Module] = {}
        self.unit_bytes = {(n, "fp32"): model_bytes(u) for n, u in self.units.items()}
        self.other_bytes = model_bytes(parent) - sum(self.unit_bytes.values())
        self.evaluated: list[Candidate] = []
        self._scores: dict[frozenset, Candidate] = {}

    def calibrate(self, precisions_by_unit: dict[str, list[str]]) -> None:
        methods = {r.calibration for r in RECIPES.values() if r.calibration}
        linears = [n for n, ps in precisions_by_unit.items() if any("static" in p for p in ps)]
        if linears:
            self.ranges = calibrate_input_ranges(
                self.parent, self.calibration, units=linears, methods=sorted(methods)
            )

    def module(self, name: str, precision: str) -> nn.Module:
        key = (name, precision)
        if key not in self.modules:
            recipe = RECIPES[(type(self.units[name]), precision)]
            self.modules[key] = convert_unit(
                name, self.units[name], recipe, self.ranges.get((name, recipe.calibration))
            )
            self.unit_bytes[key] = model_bytes(self.modules[key])
        return self.modules[key]

    def bytes_of(self, precisions: dict[str, str]) -> int:
        return self.other_bytes + sum(self.unit_bytes[(n, p)] for n, p in precisions.items())

    def variant(self, precisions: dict[str, str]) -> DLRM:
        chosen = {n: self.module(n, p) for n, p in precisions.items() if p != "fp32"}
        return assemble_variant(self.parent, chosen)

    def evaluate(self, precisions: dict[str, str], label: str) -> Candidate:
        key = frozenset(precisions.items())
        if key not in self._scores:
            ne = score(self.variant(precisions), self.held_out, batch_size=self.batch_size).ne
            self._scores[key] = Candidate(
                label=label,
                precisions=dict(precisions),
                ne=ne,
                ne_delta_rel=(ne - self.ne_fp32) / self.ne_fp32,
                bytes=self.bytes_of(precisions),
                within_budget=self.budget.allows(ne_fp32=self.ne_fp32, ne=ne),
            )
            self.evaluated.append(self._scores[key])
        return self._scores[key]

    def adopt(self, candidate: Candidate) -> None:
        """Take a plan scored by another evaluator on the same parent, rows and budget
        (``models.sensitivity``) as if scored here, in the order adopted."""
        key = frozenset(candidate.precisions.items())
        if key not in self._scores:
            self._scores[key] = candidate
            self.evaluated.append(candidate)

    def latency_ms(self, precisions: dict[str, str], batch: Batch, repeats: int = 5) -> float:
        """Median wall-clock ms of one forward pass over ``batch``."""
        model = self.variant(precisions)
        times = []
        with torch.inference_mode():
            model(batch)  # warm-up: first calls pack and allocate
            for _ in range(repeats):
                started = time.perf_counter()
                model(batch)
                times.append((time.perf_counter() - started) * 1e3)
        return sorted(times)[len(times) // 2]
