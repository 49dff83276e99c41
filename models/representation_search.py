"""Representation search: per large table, the representation that keeps NE for its bytes.

Given a window's training rows and held-out rows:

1. Train the full-table model (``build(None)``, every table a full table) with
   ``models.train.train_dlrm``, early stopping on the held-out rows; its NE on them is the
   reference, and the epochs it kept are the epochs of every later run (fixed: no run
   stops on the rows that measure it, and all of them measure).
2. Search the ``tables`` largest tables (by rows); the rest stay full tables.
3. For each searched table and each candidate (``models.representation_candidates``:
   hashed, QR, DHE, hybrid, sized to the table and the byte budget), train the model that
   differs only in that table: same rows, same seed, same initial weights elsewhere
   (``DLRM`` builds a representation on a forked RNG). Record its NE, its change against
   the reference and the table's bytes (``representations.representation_bytes``) against
   the full table's fp32 bytes, with the paired bootstrap interval of the change
   (``models.noise``).
4. Pick per table. Objective ``bytes``: the fewest bytes among the candidates whose NE
   change is within ``budget.ne_rel`` (by default: the upper end of its interval) at bytes
   <= ``budget.bytes_ratio`` x the full table's (ties: the lower NE); when none qualifies
   the table stays full, and the reason says which candidate came closest. Objective
   ``quality``: the lowest NE among the candidates and the full table within
   ``bytes_ratio`` x the full table's bytes.
5. Confirm: train the model with every pick together (the picks interact through the
   shared MLPs) and measure its NE change and interval. Objective ``bytes``: while it is
   not within ``budget.ne_rel``, the pick whose change alone was the largest is backed
   off (``backed_off``): its table takes its next candidate by bytes within the budgets,
   or the full table when none is left, and the choice is confirmed again.

Noise: a few thousand held-out rows give intervals of +-0.3 % to +-1 % on the change of a
representation that moves the predictions (DHE), narrower for one that stays close to the
full table (a hashed table whose collisions fall on rare ids), so reading the interval
rather than the point estimate keeps the faithful candidates; the benchmark
(``benchmarks/representations.py``) reports every choice on the next day's rows.

The result (``RepresentationSearch``) is one frozen record: ``representations()`` is what
``DLRM(representations=...)`` takes, ``to_json`` what the lifecycle records as
``search/representation.json``. Pure: torch and numpy, no Prefect, no MLflow.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from quantrec.models.batch import Batch
from quantrec.models.dlrm import DLRM
from quantrec.models.metrics import normalized_entropy
from quantrec.models.noise import bootstrap_changes, paired_bootstrap_sums, percentile_interval
from quantrec.models.representation_candidates import SEARCHED_KINDS, candidate_specs
from quantrec.models.representations import representation_bytes
from quantrec.models.scorer import predict_proba
from quantrec.models.stream import BatchSource
from quantrec.models.train import train_dlrm

SEARCH_FORMAT = 1
DEFAULT_TABLES = 4  # the "four largest tables"

Objective = Literal["bytes", "quality"]
BuildModel = Callable[[Mapping[str, Mapping[str, Any]] | None], DLRM]


@dataclass(frozen=True)
class RepresentationBudget:
    """What a representation may cost.

    Attributes:
        ne_rel: largest relative NE change against the full tables (0.001: the issue's
            "NE within 0.1 %").
        bytes_ratio: largest bytes of a table's representation over its fp32 table's
            (0.25: the issue's target; ``quality`` searches use 1.25).
        objective: "bytes" (fewest bytes within both budgets) or "quality" (lowest NE
            within the byte budget).
        by_interval: a change is within ``ne_rel`` when the upper end of its paired
            bootstrap interval is (as the precision search accepts a plan by its interval),
            not only its point estimate. The point estimate alone picks by noise: on the
            synthetic feed's 4,000 held-out rows DHE tables measured -0.1 % to -0.3 % alone
            and +0.9 % on the next day's 20,000 rows.
    """

    ne_rel: float = 0.001
    bytes_ratio: float = 0.25
    objective: Objective = "bytes"
    by_interval: bool = True

    def within(self, change: float, high: float | None) -> bool:
        """Whether a change (and the upper end of its interval) is within ``ne_rel``."""
        if self.by_interval and high is not None:
            return high <= self.ne_rel
        return change <= self.ne_rel

    def __post_init__(self) -> None:
        if not self.ne_rel >= 0 or not self.bytes_ratio > 0:
            raise ValueError(
                f"need ne_rel >= 0 and bytes_ratio > 0; got {self.ne_rel}, {self.bytes_ratio}"
            )
        if self.objective not in ("bytes", "quality"):
            raise ValueError(f"objective must be 'bytes' or 'quality', got {self.objective!r}")


@dataclass(frozen=True)
class CandidateResult:
    """One table at one representation, the other tables full.

    Attributes:
        feature: the table's feature; label: the spec's short name; spec: its dict.
        bytes: the representation's bytes; table_bytes: the full fp32 table's.
        ne: on the measuring rows; ne_change_rel: against the full-table model's NE.
        train_seconds: its ``train_dlrm`` wall time.
        ne_change_low, ne_change_high: the paired bootstrap interval of ne_change_rel.
    """

    feature: str
    label: str
    spec: dict[str, Any]
    bytes: int
    table_bytes: int
    ne: float
    ne_change_rel: float
    train_seconds: float
    ne_change_low: float | None = None
    ne_change_high: float | None = None

    @property
    def bytes_ratio(self) -> float:
        return self.bytes / self.table_bytes


@dataclass(frozen=True)
class RepresentationSearch:
    """The search's record (``to_json``: ``search/representation.json``).

    Attributes:
        budget: the budget searched under.
        reference_ne: NE of the full-table model on the measuring rows.
        chosen: feature -> spec dict of every table that is no longer a full table.
        reasons: feature -> one sentence on its pick, for every searched table.
        candidates: every measured candidate.
        confirmed_ne: NE of the model with every pick together.
        confirmed_change_rel: its change against ``reference_ne``, and
            confirmed_interval: the paired bootstrap interval of that change (None when
            nothing changed or a class is missing).
        searched_bytes: bytes of the searched tables as chosen; searched_table_bytes: the
            same tables' fp32 bytes.
        epochs: the epochs every run after the reference trained.
        backed_off: "feature:label" of every pick the confirmation backed off, in order.
    """

    budget: RepresentationBudget
    reference_ne: float
    chosen: dict[str, dict[str, Any]]
    reasons: dict[str, str]
    candidates: tuple[CandidateResult, ...]
    confirmed_ne: float
    confirmed_change_rel: float
    confirmed_interval: tuple[float, float] | None
    searched_bytes: int
    searched_table_bytes: int
    epochs: int = 1
    backed_off: tuple[str, ...] = ()
    format_version: int = field(default=SEARCH_FORMAT)

    def representations(self) -> dict[str, dict[str, Any]]:
        """Feature -> spec, for ``DLRM(representations=...)`` (empty: all full tables)."""
        return {name: dict(spec) for name, spec in self.chosen.items()}

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> RepresentationSearch:
        data = json.loads(text)
        if data.get("format_version") != SEARCH_FORMAT:
            raise ValueError(
                f"representation search format {data.get('format_version')!r}; this quantrec "
                f"reads {SEARCH_FORMAT}"
            )
        interval = data["confirmed_interval"]
        return cls(
            **{
                **data,
                "budget": RepresentationBudget(**data["budget"]),
                "candidates": tuple(CandidateResult(**c) for c in data["candidates"]),
                "confirmed_interval": None if interval is None else tuple(interval),
                "backed_off": tuple(data["backed_off"]),
            }
        )


def ne_change_interval(
    labels: np.ndarray,
    probs: np.ndarray,
    reference: np.ndarray,
    *,
    samples: int = 200,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float] | None:
    """Paired bootstrap interval of the relative NE change of ``probs`` against
    ``reference`` on the same rows (the gate's Poisson bootstrap, ``models.noise``)."""
    sums, column = paired_bootstrap_sums(
        labels,
        {"variant": probs, "reference": reference},
        np.ones((1, labels.size), dtype=bool),
        refs=["reference"],
        skip=[],
        samples=samples,
        seed=seed,
    )
    draws = bootstrap_changes(
        sums[:, 0, :], column, metric="ne", change="rel", variant="variant", ref="reference"
    )
    return percentile_interval(draws, confidence)


def largest_tables(model: DLRM, count: int) -> list[str]:
    """The ``count`` features with the most table rows (ties: schema order)."""
    arch = model.architecture()
    order = sorted(range(len(arch["table_sizes"])), key=lambda i: -arch["table_sizes"][i])
    return [arch["feature_names"][i] for i in sorted(order[:count])]


def search_representations(
    build: BuildModel,
    train: Batch | BatchSource,
    held_out: Batch,
    *,
    seed: int,
    tables: int = DEFAULT_TABLES,
    budget: RepresentationBudget | None = None,
    kinds: Sequence[str] = SEARCHED_KINDS,
    train_options: Mapping[str, Any] | None = None,
    bootstrap_samples: int = 200,
    confidence: float = 0.95,
    progress: Callable[[str], None] | None = None,
) -> RepresentationSearch:
    """Run the search of the module docstring.

    Args:
        build: representations (None: all full tables) -> a fresh, seeded, untrained DLRM;
            called once per training run, so it must draw the same weights every time
            (``torch.manual_seed`` inside).
        train: the window's training rows; held_out: rows never trained on.
        seed: ``train_dlrm``'s shuffling seed, the same for every run.
        tables: how many of the largest tables are searched.
        kinds: candidate kinds (``candidate_specs``).
        train_options: more keyword arguments of ``train_dlrm`` (batch_size, epochs, ...).
        progress: called with one line per training run.
    """
    budget = budget or RepresentationBudget()
    if len(held_out) == 0:
        raise ValueError("the representation search needs held-out rows, got 0")
    labels = held_out.labels.double().numpy()
    options = dict(train_options or {})
    say = progress or (lambda _line: None)

    def trained(representations, **fixed) -> tuple[DLRM, object, float]:
        model = build(representations)
        started = time.perf_counter()
        report = train_dlrm(model, train, seed=seed, **{**options, **fixed})
        return model, report, time.perf_counter() - started

    def measured(model: DLRM) -> tuple[np.ndarray, float]:
        probs = predict_proba(model, held_out)
        return probs, normalized_entropy(labels, probs)

    def interval(probs: np.ndarray) -> tuple[float, float] | None:
        return ne_change_interval(
            labels,
            probs,
            reference_probs,
            samples=bootstrap_samples,
            seed=seed,
            confidence=confidence,
        )

    reference, report, seconds = trained(None, validation=held_out)
    epochs = report.best_epoch  # every candidate trains as many epochs, no early stopping
    reference_probs, reference_ne = measured(reference)
    say(f"full tables: NE {reference_ne:.5f}, {epochs} epoch(s) kept ({seconds:.0f} s)")
    arch = reference.architecture()
    sizes = dict(zip(arch["feature_names"], arch["table_sizes"]))
    dim = arch["embedding_dim"]
    searched = largest_tables(reference, tables)
    results: list[CandidateResult] = []
    for feature in searched:
        specs = candidate_specs(sizes[feature], dim, bytes_ratio=budget.bytes_ratio, kinds=kinds)
        for spec in specs:
            model, _, seconds = trained({feature: spec.to_dict()}, epochs=epochs)
            probs, ne = measured(model)
            low, high = interval(probs) or (None, None)
            unit = model.sparse_arch.embedding_bags[arch["feature_names"].index(feature)]
            results.append(
                CandidateResult(
                    feature=feature,
                    label=spec.label(),
                    spec=spec.to_dict(),
                    bytes=representation_bytes(unit),
                    table_bytes=sizes[feature] * dim * 4,
                    ne=ne,
                    ne_change_rel=(ne - reference_ne) / reference_ne,
                    train_seconds=seconds,
                    ne_change_low=low,
                    ne_change_high=high,
                )
            )
            r = results[-1]
            say(
                f"{feature} {r.label}: NE {ne:.5f} ({r.ne_change_rel:+.4%} "
                f"[{_percent(low)}, {_percent(high)}], {r.bytes_ratio:.3f}x bytes, {seconds:.0f} s)"
            )
    chosen, reasons = pick(results, budget, searched=searched)
    confirmed_ne, confirmed_interval, backed_off = reference_ne, None, []
    while chosen:
        model, _, seconds = trained(chosen, epochs=epochs)
        probs, confirmed_ne = measured(model)
        confirmed_interval = interval(probs)
        change = (confirmed_ne - reference_ne) / reference_ne
        say(
            f"confirmed {_labels(results, chosen)}: NE {confirmed_ne:.5f} ({change:+.4%}, "
            f"{seconds:.0f} s)"
        )
        high = None if confirmed_interval is None else confirmed_interval[1]
        if budget.objective == "quality" or budget.within(change, high):
            break
        # Together over the budget: the pick measured worst alone steps to its feature's
        # next candidate (more bytes), or to the full table when none is left.
        worst = max(chosen, key=lambda f: _result_of(results, f, chosen[f]).ne_change_rel)
        backed_off.append(f"{worst}:{_result_of(results, worst, chosen[worst]).label}")
        excluded = {tuple(b.split(":", 1)) for b in backed_off}
        chosen, reasons = pick(results, budget, searched=searched, excluded=excluded)
        confirmed_ne, confirmed_interval = reference_ne, None
    for feature in dict.fromkeys(b.split(":", 1)[0] for b in backed_off):
        gone = [b.split(":", 1)[1] for b in backed_off if b.startswith(f"{feature}:")]
        reasons[feature] += f"; backed off {gone}: the picks together were over the budget"
    searched_bytes = sum(
        _result_of(results, f, chosen[f]).bytes if f in chosen else sizes[f] * dim * 4
        for f in searched
    )
    return RepresentationSearch(
        budget=budget,
        reference_ne=reference_ne,
        chosen=chosen,
        reasons=reasons,
        candidates=tuple(results),
        confirmed_ne=confirmed_ne,
        confirmed_change_rel=(confirmed_ne - reference_ne) / reference_ne,
        confirmed_interval=confirmed_interval,
        searched_bytes=searched_bytes,
        searched_table_bytes=sum(sizes[f] * dim * 4 for f in searched),
        epochs=epochs,
        backed_off=tuple(backed_off),
    )


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:+.3%}"


def _labels(results: Sequence[CandidateResult], chosen: Mapping[str, Any]) -> list[str]:
    return [f"{f}:{_result_of(results, f, spec).label}" for f, spec in chosen.items()]


def _result_of(
    results: Sequence[CandidateResult], feature: str, spec: Mapping[str, Any]
) -> CandidateResult:
    return next(r for r in results if r.feature == feature and r.spec == spec)


def pick(
    results: Sequence[CandidateResult],
    budget: RepresentationBudget,
    *,
    searched: Sequence[str],
    excluded: Collection[tuple[str, str]] = (),
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """(feature -> chosen spec, feature -> reason) for every searched feature (step 4),
    leaving out the (feature, label) candidates ``excluded`` (backed off)."""
    chosen: dict[str, dict[str, Any]] = {}
    reasons: dict[str, str] = {}
    for feature in searched:
        mine = [r for r in results if r.feature == feature and (feature, r.label) not in excluded]
        fits = [r for r in mine if r.bytes_ratio <= budget.bytes_ratio]
        if budget.objective == "quality":
            better = [r for r in fits if r.ne_change_rel < 0]
            if better:
                best = min(better, key=lambda r: r.ne_change_rel)
                chosen[feature] = best.spec
                reasons[feature] = (
                    f"{best.label}: lowest NE within {budget.bytes_ratio}x bytes "
                    f"({best.ne_change_rel:+.4%}, {best.bytes_ratio:.3f}x)"
                )
            else:
                reasons[feature] = (
                    f"full table: no candidate within {budget.bytes_ratio}x bytes beat it"
                )
            continue
        within = [r for r in fits if budget.within(r.ne_change_rel, r.ne_change_high)]
        if within:
            best = min(within, key=lambda r: (r.bytes, r.ne_change_rel))
            chosen[feature] = best.spec
            reasons[feature] = (
                f"{best.label}: fewest bytes within NE {budget.ne_rel:.2%} "
                f"({best.ne_change_rel:+.4%}, {best.bytes_ratio:.3f}x)"
            )
        elif fits:
            closest = min(fits, key=lambda r: r.ne_change_rel)
            reasons[feature] = (
                f"full table: no candidate within NE {budget.ne_rel:.2%} at <= "
                f"{budget.bytes_ratio}x bytes (closest {closest.label}, "
                f"{closest.ne_change_rel:+.4%})"
            )
        else:
            reasons[feature] = f"full table: no candidate fits {budget.bytes_ratio}x bytes"
    return chosen, reasons
