"""Accepting a searched plan: confirmation on fresh rows, then faithfulness by interval.

A plan found on the search rows passes its budget there partly by noise (the search scores
~100 plans near the budget and keeps those that pass), so two checks follow on rows the
search did not pick it on:

1. Confirmation (``confirm``): the two finalists are re-scored; a failing choice yields to a
   passing finalist, and if both fail the chosen one's most sensitive units step up until
   the point estimate is within budget (``revert_until_confirmed``).
2. Faithfulness (``accept_by_interval``): the paired bootstrap interval of the plan's
   relative NE change against its fp32 parent (the gate's own bootstrap,
   ``models.noise.PairedIntervals``) must lie within ``[-bound, +bound]``: the upper bound
   of |delta| is what the plan may cost (or gain) on the next day, and a plan far from its
   parent in either direction is a different model, not a faithful low-precision copy.
   When it crosses, the unit whose option is the most sensitive (by |sensitivity|) steps
   up its ladder, until the interval holds (steps whose units' |sensitivities| alone sum
   past the bound are taken without scoring, as in the ranked search); once the walked
   plan is no smaller than a uniform variant (int8 everywhere, then fp16 everywhere) whose
   interval holds, that uniform variant is taken instead. fp32 itself holds trivially ([0, 0]).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from quantrec.models.batch import Batch
from quantrec.models.dlrm import DLRM
from quantrec.models.metrics import log_loss, normalized_entropy
from quantrec.models.noise import PairedIntervals
from quantrec.models.plan import PrecisionPlan
from quantrec.models.quantize import uniform_plan
from quantrec.models.recipes import RECIPES
from quantrec.models.scorer import predict_proba, score
from quantrec.models.search_evaluate import Candidate, Evaluator

UNIFORM_FALLBACKS = ("int8", "fp16")  # smallest first


@dataclass(frozen=True)
class Faithfulness:
    """How far a plan's NE may move from its fp32 parent, both ways, over the interval.

    Attributes:
        bound: limit on |relative NE change| (0.0005 = 0.05 %), applied to the interval's
            farthest end, not to the point estimate.
        samples, confidence, seed: the paired bootstrap (the gate's defaults: 200, 0.95, 0).
    """

    bound: float = 0.0005
    samples: int = 200
    confidence: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.bound >= 0 or self.samples < 20 or not 0.5 < self.confidence < 1:
            raise ValueError(
                f"faithfulness needs bound >= 0, samples >= 20 and confidence in (0.5, 1), "
                f"got bound={self.bound}, samples={self.samples}, confidence={self.confidence}"
            )


@dataclass(frozen=True)
class DeltaInterval:
    """A plan's relative NE change against its fp32 parent on ``rows`` rows: the point
    estimate and its paired bootstrap interval [low, high] (fractions: 0.0005 = +0.05 %)."""

    delta: float
    low: float
    high: float
    rows: int

    @property
    def farthest(self) -> float:
        """The interval's upper bound of |delta|."""
        return max(abs(self.low), abs(self.high))

    def holds(self, bound: float) -> bool:
        return self.farthest <= bound

    def describe(self) -> str:
        return (
            f"NE change {100 * self.delta:+.3f} % [{100 * self.low:+.3f}, "
            f"{100 * self.high:+.3f}] on {self.rows} rows"
        )


class DeltaMeter:
    """Paired intervals of variants' NE change against one fp32 parent on fixed rows (the
    parent is scored once)."""

    def __init__(
        self, parent: DLRM, rows: Batch, faithfulness: Faithfulness, *, batch_size: int = 8192
    ) -> None:
        self.rows, self.faithfulness, self.batch_size = rows, faithfulness, batch_size
        self.labels = rows.labels.double().numpy()
        self.fp32 = predict_proba(parent, rows, batch_size=batch_size)
        self.ne_fp32 = float(normalized_entropy(self.labels, self.fp32))

    def measure(self, variant: DLRM) -> DeltaInterval | None:
        """None when the rows give no interval (a class missing from most resamples)."""
        probs = predict_proba(variant, self.rows, batch_size=self.batch_size)
        intervals = PairedIntervals(
            self.labels,
            {"fp32": self.fp32, "plan": probs},
            {"all": None},
            refs=["fp32"],
            skip=[],
            samples=self.faithfulness.samples,
            seed=self.faithfulness.seed,
            confidence=self.faithfulness.confidence,
        )
        band = intervals.change("ne", "rel", "plan", "fp32", "all")
        if band is None:
            return None
        # Same rows, same click rate: the relative NE change is the relative log-loss change.
        base = log_loss(self.labels, self.fp32)
        delta = (log_loss(self.labels, probs) - base) / base
        return DeltaInterval(delta=float(delta), low=band[0], high=band[1], rows=self.labels.size)


def accept_by_interval(
    evaluator: Evaluator,
    rows: Batch,
    sensitivity: dict,
    ladders: dict,
    start: Candidate,
    faithfulness: Faithfulness,
) -> tuple[Candidate, DeltaInterval | None, str]:
    """The plan to deploy, its interval on ``rows`` and why (see the module docstring).

    ``start`` is the confirmed choice; the returned candidate is ``start`` when its interval
    holds, else labelled "backed_off" or "uniform_int8" / "uniform_fp16", its NE figures on
    ``rows``. Rows that give no interval leave ``start`` unchanged (interval None).
    """
    meter = DeltaMeter(evaluator.parent, rows, faithfulness, batch_size=evaluator.batch_size)
    bound = faithfulness.bound
    uniforms = sorted(
        (
            (f"uniform_{p}", uniform_plan(evaluator.parent, p))
            for p in UNIFORM_FALLBACKS
            if all((type(unit), p) in RECIPES for unit in evaluator.units.values())
        ),
        key=lambda item: evaluator.bytes_of(_built(evaluator, item[1])),
    )
    step = {n: ladders[n].index(p) for n, p in start.precisions.items()}
    label = start.label
    while True:
        precisions = {n: ladders[n][i] for n, i in step.items()}
        while uniforms and evaluator.bytes_of(precisions) >= evaluator.bytes_of(uniforms[0][1]):
            name, uniform = uniforms.pop(0)
            interval = meter.measure(evaluator.variant(uniform))
            if interval is not None and interval.holds(bound):
                return (
                    _scored(evaluator, meter, name, uniform, interval),
                    interval,
                    f"{name}: the searched plans' intervals crossed the faithfulness bound "
                    f"{100 * bound:.3f} %; {interval.describe()}",
                )
        movable = [n for n in step if step[n] < len(ladders[n]) - 1]
        estimate = sum(abs(sensitivity[(n, p)]) for n, p in precisions.items())
        if label == start.label or estimate <= bound or not movable:
            interval = meter.measure(evaluator.variant(precisions))
            if interval is None:
                return start, None, "faithfulness not checked: no interval on these rows"
        else:  # the units' own changes alone add up past the bound: no need to score it
            interval = None
        if interval is not None and interval.holds(bound):
            if label == start.label:
                return start, interval, f"faithful: {interval.describe()}"
            return (
                _scored(evaluator, meter, label, precisions, interval),
                interval,
                f"backed off: {start.label}'s interval crossed the faithfulness bound "
                f"{100 * bound:.3f} %; stepped its most sensitive units up until "
                f"{interval.describe()}",
            )
        worst = max(movable, key=lambda n: abs(sensitivity[(n, ladders[n][step[n]])]))
        step[worst] += 1
        label = "backed_off"


def _built(evaluator: Evaluator, precisions: dict[str, str]) -> dict[str, str]:
    for name, precision in precisions.items():
        if precision != "fp32":
            evaluator.module(name, precision)  # records its bytes
    return precisions


def _scored(
    evaluator: Evaluator,
    meter: DeltaMeter,
    label: str,
    precisions: dict[str, str],
    interval: DeltaInterval,
) -> Candidate:
    candidate = Candidate(
        label=label,
        precisions=dict(precisions),
        ne=meter.ne_fp32 * (1.0 + interval.delta),
        ne_delta_rel=interval.delta,
        bytes=evaluator.bytes_of(precisions),
        within_budget=interval.delta <= evaluator.budget.relative_limit(evaluator.ne_fp32),
    )
    evaluator.evaluated.append(candidate)
    return candidate


def confirm(
    evaluator: Evaluator,
    rows: Batch,
    plans: dict[str, PrecisionPlan],
    chosen: Candidate,
    finalists: tuple[Candidate, Candidate],
    reason: str,
    recover: Callable[[Candidate], Candidate],
) -> tuple[Candidate, str]:
    """Re-score the finalists on ``rows``; record it in each plan's ``extra``."""
    ne_fp32 = score(evaluator.parent, rows, batch_size=evaluator.batch_size).ne
    passed = {}
    for candidate in finalists:
        ne = score(
            evaluator.variant(candidate.precisions), rows, batch_size=evaluator.batch_size
        ).ne
        plans[candidate.label].extra["confirmation_ne_delta_rel"] = (ne - ne_fp32) / ne_fp32
        passed[candidate.label] = evaluator.budget.allows(ne_fp32=ne_fp32, ne=ne)
    if passed[chosen.label]:
        return chosen, reason + "; confirmed on fresh rows"
    other = next(c for c in finalists if c.label != chosen.label)
    if passed[other.label]:
        return other, f"{other.label}: {chosen.label} exceeded the budget on fresh rows"
    confirmed = recover(chosen)
    return confirmed, (
        f"confirmed: both finalists exceeded the budget on fresh rows; reverted the most "
        f"sensitive units of {chosen.label} until within it there "
        f"(ne_delta_rel {confirmed.ne_delta_rel:.6f} on those rows)"
    )


def revert_until_confirmed(
    evaluator: Evaluator, rows: Batch, sensitivity: dict, ladders: dict, start: Candidate
) -> Candidate:
    """Step ``start``'s most sensitive units up their ladders until ``rows`` are within budget.

    The returned candidate's NE figures are on ``rows``; the walk ends at fp32 at worst.
    """
    ne_fp32 = score(evaluator.parent, rows, batch_size=evaluator.batch_size).ne
    step = {n: ladders[n].index(p) for n, p in start.precisions.items()}
    while True:
        precisions = {n: ladders[n][i] for n, i in step.items()}
        ne = score(evaluator.variant(precisions), rows, batch_size=evaluator.batch_size).ne
        candidate = Candidate(
            label="confirmed",
            precisions=precisions,
            ne=ne,
            ne_delta_rel=(ne - ne_fp32) / ne_fp32,
            bytes=evaluator.bytes_of(precisions),
            within_budget=evaluator.budget.allows(ne_fp32=ne_fp32, ne=ne),
        )
        evaluator.evaluated.append(candidate)
        movable = [n for n in step if step[n] < len(ladders[n]) - 1]
        if candidate.within_budget or not movable:
            return candidate
        worst = max(movable, key=lambda n: sensitivity[(n, ladders[n][step[n]])])
        step[worst] += 1
