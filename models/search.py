"""Accuracy-aware precision search: the smallest, then fastest, plan within an NE budget.

1. Sensitivity: every unit alone at every candidate precision, scored against the fp32
   parent on held-out rows (``ne_delta_rel``: relative NE change, 0.0005 = +0.05 %).
2. Each unit's *ladder*: its Pareto-optimal options by (bytes, sensitivity), fp32 on top.
3. Ranked search: every unit at the bottom of its ladder, then the unit whose current option
   is the most sensitive steps up, until the measured total is within budget. Steps whose
   summed sensitivities still exceed the budget are taken without scoring, to save passes.
4. Greedy descent: from fp32, repeatedly take the move with the most bytes saved per unit of
   summed sensitivity added; keep it if the measured total stays within budget.
5. Choice: of the two plans (both within budget by construction), fewer bytes wins; within
   1 % of bytes, lower latency on a ``latency_batch``-row batch wins.
6. Confirmation (optional, recommended): the finalists are re-scored on fresh rows, since
   among ~100 plans scored near the budget some pass by noise. A failing choice yields to a
   passing finalist; if both fail, the chosen one's most sensitive units step up until the
   fresh rows are within budget ("confirmed").
7. Faithfulness (with ``faithfulness``): on the same fresh rows, the paired bootstrap
   interval of the plan's NE change must lie within +-``faithfulness.bound``; if it crosses,
   the most sensitive units step up until it holds ("backed_off"), or a uniform int8 / fp16
   plan that holds and is no larger is taken ("uniform_int8", "uniform_fp16"). The accepted
   plan's interval is ``SearchResult.predicted``: what the next day should see
   (``models.search_accept``).

Rows that cannot be scored stop the search, not the run: when NE is undefined on the
held-out rows (none, or no click, or no non-click: a small or sparse day) nothing can be
measured, so the result keeps the fp32 parent's plan, ``chosen_by="skipped"``, and says why
in ``reason``; confirmation rows without both classes skip the confirmation only.

Every scored plan is kept in ``SearchResult.evaluated``. Quantized units are built once
per (unit, precision) and shared between candidates; static units calibrate on the fp32
parent's activations, so a unit's module does not depend on the rest of the plan.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

from torch import nn

from quantrec.models.batch import Batch
from quantrec.models.dlrm import DLRM
from quantrec.models.metrics import undefined_reason
from quantrec.models.plan import FORMAT_VERSION as PLAN_FORMAT
from quantrec.models.plan import PrecisionPlan, UnitPlan
from quantrec.models.progress import progress
from quantrec.models.quantize import model_bytes
from quantrec.models.recipes import RECIPES
from quantrec.models.search_accept import (
    DeltaInterval,
    Faithfulness,
    accept_by_interval,
    confirm,
    revert_until_confirmed,
)
from quantrec.models.search_evaluate import Budget, Candidate, Evaluator
from quantrec.models.sensitivity import SensitivityJob, SensitivityMeasure

__all__ = [
    "Budget",
    "Candidate",
    "DeltaInterval",
    "Faithfulness",
    "SearchResult",
    "search_precision_plan",
]

LINEAR_CANDIDATES = (
    "fp16",
    "int8",
    "int8_tensor",
    "int8_static_minmax",
    "int8_static_histogram",
    "int8_static_percentile",
    "int8_static_smooth",
)
TABLE_CANDIDATES = ("fp16", "int8", "int4", "int4_greedy", "int2", "int2_greedy")
_SAME_BYTES = 0.01  # plans within 1 % of each other's bytes are compared on latency


@dataclass
class SearchResult:
    """What a search found and everything it measured on the way.

    Attributes:
        chosen: the plan to deploy, with per-unit sensitivities and bytes.
        chosen_by: "ranked", "greedy", "confirmed" (the chosen finalist with units
            reverted until fresh ``confirmation`` rows are within budget), "backed_off",
            "uniform_int8" or "uniform_fp16" (its interval held the faithfulness bound
            where the finalists' did not), or "skipped" (the
            held-out rows cannot be scored: ``chosen`` is the fp32 parent's plan, nothing was
            measured); ``reason`` says why.
        ranked, greedy: the two searches' final plans (the fp32 plan when skipped).
        sensitivity: one row per (unit, precision): unit, precision, ne_delta_rel, bytes.
        evaluated: every scored plan, in order.
        ne_fp32: NE of the fp32 parent on the held-out rows (None when skipped).
        predicted: the chosen plan's NE change interval on the fresh rows (None when no
            faithfulness check ran).
    """

    chosen: PrecisionPlan
    chosen_by: str
    reason: str
    ranked: PrecisionPlan
    greedy: PrecisionPlan
    sensitivity: list[dict]
    evaluated: list[Candidate]
    ne_fp32: float | None
    budget: Budget
    fp32_bytes: int = 0
    extra: dict = field(default_factory=dict)
    predicted: DeltaInterval | None = None

    @property
    def skipped(self) -> bool:
        """Whether the search measured nothing (see ``reason``); its plan is not worth reusing."""
        return self.chosen_by == "skipped"

    def to_dict(self) -> dict:
        """JSON-ready: plans as their JSON bodies, candidates as dicts."""
        plans = {k: getattr(self, k) for k in ("chosen", "ranked", "greedy")}
        return {
            **{k: asdict(p) for k, p in plans.items()},
            "chosen_by": self.chosen_by,
            "reason": self.reason,
            "sensitivity": self.sensitivity,
            "evaluated": [asdict(c) for c in self.evaluated],
            "ne_fp32": self.ne_fp32,
            "fp32_bytes": self.fp32_bytes,
            "budget": asdict(self.budget),
            "predicted": None if self.predicted is None else asdict(self.predicted),
        }

    @classmethod
    def from_dict(cls, body: dict) -> SearchResult:
        """The result ``to_dict`` wrote (``extra`` is not kept)."""

        def plan(d: dict) -> PrecisionPlan:
            return PrecisionPlan.from_json(json.dumps({"format_version": PLAN_FORMAT, **d}))

        predicted = body.get("predicted")
        return cls(
            **{k: plan(body[k]) for k in ("chosen", "ranked", "greedy")},
            chosen_by=body["chosen_by"],
            reason=body["reason"],
            sensitivity=list(body["sensitivity"]),
            evaluated=[Candidate(**c) for c in body["evaluated"]],
            ne_fp32=body["ne_fp32"],
            fp32_bytes=int(body["fp32_bytes"]),
            budget=Budget(**body["budget"]),
            predicted=None if predicted is None else DeltaInterval(**predicted),
        )


def search_precision_plan(
    model: DLRM,
    held_out: Batch,
    *,
    calibration: Batch | None = None,
    budget: Budget | float = 0.0005,
    linear_candidates: tuple[str, ...] = LINEAR_CANDIDATES,
    table_candidates: tuple[str, ...] = TABLE_CANDIDATES,
    latency_batch: int = 2048,
    batch_size: int = 8192,
    confirmation: Batch | None = None,
    faithfulness: Faithfulness | None = None,
    measure: SensitivityMeasure | None = None,
) -> SearchResult:
    """Search the precision plan of the fp32 ``model`` (see the module docstring).

    Args:
        held_out: labelled rows the NE deltas are measured on (recent data, not trained on).
        calibration: rows whose activations calibrate static units (default: ``held_out``).
        budget: a ``Budget``, or a float meaning a relative limit (0.0005 = 0.05 % NE).
        linear_candidates, table_candidates: precisions tried for MLP layers and tables.
        latency_batch: rows of ``held_out`` timed to break a tie in bytes.
        batch_size: scoring slice (fixed, so dynamic int8 scores are reproducible).
        confirmation: other held-out rows. The search scores ~100 plans near the budget on
            ``held_out`` and keeps those that pass, so some pass by noise; re-scoring the two
            finalists on fresh rows catches that (measured on the synthetic feed: -0.05 % on
            the search rows, +0.10 % on the rest of the day). A finalist that fails there
            loses to one that passes; if both fail, the reason says so.
        faithfulness: accept only a plan whose NE change interval on ``confirmation``
            (else ``held_out``) lies within +-``faithfulness.bound``; None: no such check.
        measure: step 1 elsewhere: given the job, each unit's ``unit_sensitivity``
            (``models.sensitivity``; a task runner fans the units out); None: in-process.
    """
    budget = budget if isinstance(budget, Budget) else Budget(limit=float(budget))
    undefined = undefined_reason(held_out.labels.numpy())
    if undefined is not None:
        return _skipped(
            model,
            budget,
            f"search skipped: NE is undefined on the held-out rows "
            f"({undefined}), so no plan can be measured; kept the "
            "fp32 plan",
        )
    evaluator = Evaluator(model, held_out, calibration or held_out, budget, batch_size)
    options = {
        name: [
            p
            for p in (linear_candidates if isinstance(unit, nn.Linear) else table_candidates)
            if (type(unit), p) in RECIPES
        ]
        for name, unit in evaluator.units.items()
    }
    evaluator.calibrate(options)
    if measure is not None:
        job = SensitivityJob(model, held_out, calibration or held_out, budget, batch_size, options)
        measured = measure(job)
        for name in options:  # adopted in the order the in-process loop scores them
            for candidate in measured[name]:
                evaluator.adopt(candidate)
    sensitivity = _sensitivity(evaluator, options)
    ladders = {name: _ladder(evaluator, sensitivity, name, ps) for name, ps in options.items()}
    ranked = _ranked_search(evaluator, sensitivity, ladders)
    greedy = _greedy_descent(evaluator, sensitivity, ladders)
    timing = held_out.slice(0, latency_batch)
    latency = {c.label: evaluator.latency_ms(c.precisions, timing) for c in (ranked, greedy)}
    chosen, reason = _choose(ranked, greedy, latency)
    plans = {
        c.label: _as_plan(evaluator, sensitivity, c, latency[c.label], len(timing))
        for c in (ranked, greedy)
    }
    unconfirmable = None if confirmation is None else undefined_reason(confirmation.labels.numpy())
    if unconfirmable is not None:
        reason += f"; confirmation skipped: NE is undefined on its rows ({unconfirmable})"
    elif confirmation is not None:
        chosen, reason = confirm(
            evaluator,
            confirmation,
            plans,
            chosen,
            (ranked, greedy),
            reason,
            lambda c: revert_until_confirmed(evaluator, confirmation, sensitivity, ladders, c),
        )
        _add_plan(evaluator, sensitivity, plans, chosen, timing)
    predicted = None
    if faithfulness is not None and unconfirmable is None:
        rows = held_out if confirmation is None else confirmation
        chosen, predicted, note = accept_by_interval(
            evaluator, rows, sensitivity, ladders, chosen, faithfulness
        )
        reason += f"; {note}"
        _add_plan(evaluator, sensitivity, plans, chosen, timing)
        if predicted is not None:
            plans[chosen.label].extra["predicted_delta_rel"] = asdict(predicted)
    plans[chosen.label].notes = reason
    progress("search: %s plan chosen, %d plans scored", chosen.label, len(evaluator.evaluated))
    return SearchResult(
        chosen=plans[chosen.label],
        chosen_by=chosen.label,
        reason=reason,
        ranked=plans["ranked"],
        greedy=plans["greedy"],
        sensitivity=[
            {"unit": n, "precision": p, "ne_delta_rel": d, "bytes": evaluator.unit_bytes[(n, p)]}
            for (n, p), d in sensitivity.items()
        ],
        evaluated=evaluator.evaluated,
        ne_fp32=evaluator.ne_fp32,
        budget=budget,
        fp32_bytes=model_bytes(model),
        predicted=predicted,
    )


def _add_plan(
    evaluator: Evaluator, sensitivity: dict, plans: dict, chosen: Candidate, timing: Batch
) -> None:
    """The plan of a candidate found after the two finalists, its NE change on fresh rows."""
    if chosen.label not in plans:
        latency = evaluator.latency_ms(chosen.precisions, timing)
        plans[chosen.label] = _as_plan(evaluator, sensitivity, chosen, latency, len(timing))
        plans[chosen.label].extra["confirmation_ne_delta_rel"] = chosen.ne_delta_rel


def _skipped(model: DLRM, budget: Budget, reason: str) -> SearchResult:
    """The result of a search that could measure nothing: the parent's plan, and why."""
    fp32_bytes = model_bytes(model)
    plan = PrecisionPlan(
        units=PrecisionPlan.from_model(model).units,
        ne_delta_rel=0.0,
        bytes=fp32_bytes,
        notes=reason,
    )
    return SearchResult(
        chosen=plan,
        chosen_by="skipped",
        reason=reason,
        ranked=plan,
        greedy=plan,
        sensitivity=[],
        evaluated=[],
        ne_fp32=None,
        budget=budget,
        fp32_bytes=fp32_bytes,
    )


def _sensitivity(
    evaluator: Evaluator, options: dict[str, list[str]]
) -> dict[tuple[str, str], float]:
    """(unit, precision) -> ne_delta_rel with only that unit quantized; fp32 is 0."""
    fp32 = {name: "fp32" for name in options}
    table: dict[tuple[str, str], float] = {}
    for k, (name, precisions) in enumerate(options.items(), start=1):
        started = time.perf_counter()
        table[(name, "fp32")] = 0.0
        for precision in precisions:
            label = f"sensitivity {name}={precision}"
            table[(name, precision)] = evaluator.evaluate(
                {**fp32, name: precision}, label
            ).ne_delta_rel
        progress(
            "search: unit %d/%d %s: %s (%.1f s)",
            k,
            len(options),
            name,
            ", ".join(f"{p} {100 * table[(name, p)]:+.4f} %" for p in precisions) or "fp32 only",
            time.perf_counter() - started,
        )
    return table


def _ladder(evaluator: Evaluator, sensitivity: dict, name: str, precisions: list[str]) -> list[str]:
    """The unit's Pareto-optimal precisions, fewest bytes first, ending with fp32."""
    for precision in precisions:
        evaluator.module(name, precision)  # records its bytes
    ordered = sorted(
        precisions, key=lambda p: (evaluator.unit_bytes[(name, p)], sensitivity[(name, p)])
    )
    ladder: list[str] = []
    for precision in ordered:
        if not ladder or sensitivity[(name, precision)] < sensitivity[(name, ladder[-1])]:
            if (
                ladder
                and evaluator.unit_bytes[(name, precision)]
                == evaluator.unit_bytes[(name, ladder[-1])]
            ):
                ladder[-1] = precision  # same bytes, less sensitive
            else:
                ladder.append(precision)
    return ladder + ["fp32"]


def _ranked_search(evaluator: Evaluator, sensitivity: dict, ladders: dict) -> Candidate:
    step = {name: 0 for name in ladders}

    def plan() -> dict[str, str]:
        return {name: ladders[name][i] for name, i in step.items()}

    def estimate() -> float:
        return sum(sensitivity[(n, p)] for n, p in plan().items())

    candidate = evaluator.evaluate(plan(), "ranked")
    while not candidate.within_budget:
        movable = [n for n in step if step[n] < len(ladders[n]) - 1]
        worst = max(movable, key=lambda n: sensitivity[(n, ladders[n][step[n]])])
        step[worst] += 1
        if estimate() > evaluator.budget.relative_limit(evaluator.ne_fp32) and any(
            step[n] < len(ladders[n]) - 1 for n in step
        ):
            continue  # still over budget by the sum of sensitivities: no need to score
        candidate = evaluator.evaluate(plan(), "ranked")
    return _relabel(candidate, "ranked")


def _greedy_descent(evaluator: Evaluator, sensitivity: dict, ladders: dict) -> Candidate:
    current = {name: len(ladder) - 1 for name, ladder in ladders.items()}  # all fp32
    best = evaluator.evaluate({n: "fp32" for n in ladders}, "greedy")
    blocked: set[tuple[str, int]] = set()
    while True:
        moves = []
        for name, i in current.items():
            here = ladders[name][i]
            for j in range(i):
                if (name, j) in blocked:
                    continue
                there = ladders[name][j]
                saved = evaluator.unit_bytes[(name, here)] - evaluator.unit_bytes[(name, there)]
                cost = sensitivity[(name, there)] - sensitivity[(name, here)]
                moves.append((saved / max(cost, 1e-9), saved, name, j))
        if not moves:
            return _relabel(best, "greedy")
        _, _, name, j = max(moves)
        trial = {n: ladders[n][i] for n, i in {**current, name: j}.items()}
        candidate = evaluator.evaluate(trial, "greedy")
        if candidate.within_budget:
            current[name], best = j, candidate
        else:
            blocked.add((name, j))


def _relabel(candidate: Candidate, label: str) -> Candidate:
    return Candidate(**{**asdict(candidate), "label": label})


def _choose(ranked: Candidate, greedy: Candidate, latency: dict[str, float]) -> tuple:
    small, large = sorted((ranked, greedy), key=lambda c: (c.bytes, latency[c.label]))
    if large.bytes - small.bytes <= _SAME_BYTES * large.bytes:
        fast = min((ranked, greedy), key=lambda c: (latency[c.label], c.bytes))
        slow = greedy if fast is ranked else ranked
        return fast, (
            f"{fast.label}: within 1 % of {slow.label}'s bytes ({fast.bytes} vs {slow.bytes}) "
            f"and faster ({latency[fast.label]:.2f} vs {latency[slow.label]:.2f} ms); "
            f"ne_delta_rel {fast.ne_delta_rel:.6f}"
        )
    return small, (
        f"{small.label}: fewer bytes ({small.bytes} vs {large.label}'s {large.bytes}), both "
        f"within budget; ne_delta_rel {small.ne_delta_rel:.6f} vs {large.ne_delta_rel:.6f}"
    )


def _as_plan(
    evaluator: Evaluator, sensitivity: dict, candidate: Candidate, latency: float, rows: int
) -> PrecisionPlan:
    units = {
        n: UnitPlan.of(p, ne_delta_rel=sensitivity.get((n, p)), bytes=evaluator.unit_bytes[(n, p)])
        for n, p in candidate.precisions.items()
    }
    return PrecisionPlan(
        units=units,
        ne_delta_rel=candidate.ne_delta_rel,
        bytes=candidate.bytes,
        latency_ms=latency,
        latency_batch=rows,
        notes=f"{candidate.label} search",
    )
