"""The numeric debugger: where a low-precision model's activations depart from its reference.

Both models score the same rows in the same slices. Forward hooks on every quantizable unit
(``models.quantize.quantizable_units``: each MLP ``Linear`` and each embedding table, at
whatever precision) record the unit's output in both, and its input in the reference. Per
unit, and for the final logits:

* ``sqnr_db``: signal-to-quantization-noise ratio of the compared model's output against
  the reference's, ``10 log10(sum(ref^2) / sum((ref - out)^2))``, as the compared model
  runs end to end (errors of earlier units included). inf when the outputs are equal.
* ``local_sqnr_db``: the same for the compared unit alone, fed the reference's input to
  that unit: its own error, without what it inherits. A table's input is the ids, the
  same in both models, so its local and propagated SQNR are equal.
* ``cosine``: cosine similarity of the two outputs, flattened over the rows.
* ``max_rel_error``: the largest absolute difference as a share of the reference's largest
  magnitude. Not an element-wise ratio: that is unbounded wherever the reference is 0.

The *first divergence* is the first unit, in the order the reference runs them (bottom
MLP, tables, top MLP), whose SQNR falls below ``threshold_db``; a unit whose local SQNR is
fine but whose SQNR is not inherited its error from an earlier unit.

Sums run in float64 over every slice, so memory does not grow with the rows.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import pandas as pd
import torch
from torch import Tensor, nn

from quantrec.models.batch import Batch
from quantrec.models.quantize import quantizable_units, unit_precision

# Noise at 1/31.6 of the signal's power. Row-wise quantization of a uniform row gives about
# 48 dB at 8 bits, 23 dB at 4 and 9.5 dB at 2 (step^2 / 12 against the row's variance); on
# the feeds' default models (benchmarks/precision.py) tables measured 47-54, 23-29 and 9-17
# dB, int8 MLP layers 30-40. So int8 and int4 stay above it; an int2 table, or a wrong scale
# (x10: about -19 dB), falls below.
# Where a run logs its searched variant's numerics against the fp32 parent (the run report
# shows the table).
NUMERICS_ARTIFACT = "search/numerics.csv"
DEFAULT_THRESHOLD_DB = 15.0
DEFAULT_ROWS = 4096
OUTPUT = "output"  # the row of the final logits


class NumericsError(ValueError):
    """Two models cannot be compared: different units or shapes, no rows."""


@dataclass(frozen=True)
class UnitNumerics:
    """How one unit's output compares; see the module docstring for each measure.

    Attributes:
        unit: module name (``sparse_arch.embedding_bags.3``), or "output" for the logits.
        kind: "linear", "table" or "output".
        reference_precision, precision: the unit's precision in each model ("" for output).
        local_sqnr_db: NaN for the output row.
        diverged: ``sqnr_db`` below the report's threshold.
        first: this is the first divergence.
    """

    unit: str
    kind: str
    reference_precision: str
    precision: str
    sqnr_db: float
    local_sqnr_db: float
    cosine: float
    max_rel_error: float
    diverged: bool
    first: bool = False


@dataclass(frozen=True)
class NumericsReport:
    """Every unit in forward order, then the output row; and the first divergence."""

    units: tuple[UnitNumerics, ...]
    rows: int
    threshold_db: float
    first_divergence: str | None = field(default=None)

    def unit(self, name: str) -> UnitNumerics:
        for unit in self.units:
            if unit.unit == name:
                return unit
        raise KeyError(f"no unit {name!r} in the numerics report; units: {self.names()}")

    def names(self) -> list[str]:
        return [u.unit for u in self.units]

    def to_frame(self) -> pd.DataFrame:
        """One row per unit (columns: the ``UnitNumerics`` fields), forward order."""
        return pd.DataFrame([asdict(u) for u in self.units])

    def to_csv(self) -> str:
        return self.to_frame().to_csv(index=False)

    def table(self, *, reference: str = "reference", compared: str = "compared") -> str:
        """A fixed-width text table, and a closing line naming the first divergence."""
        width = max(len(OUTPUT), *(len(u.unit) for u in self.units))
        left = max(len(reference), *(len(u.reference_precision) for u in self.units))
        right = max(len(compared), *(len(u.precision) for u in self.units))
        lines = [
            f"{'unit':<{width}}  {'kind':<6}  {reference:>{left}}  {compared:>{right}}  "
            f"{'SQNR dB':>8}  {'local dB':>8}  {'cosine':>9}  {'max rel err':>11}",
        ]
        for u in self.units:
            mark = "  <- first divergence" if u.first else ("  diverged" if u.diverged else "")
            lines.append(
                f"{u.unit:<{width}}  {u.kind:<6}  {u.reference_precision or '-':>{left}}  "
                f"{u.precision or '-':>{right}}  {_db(u.sqnr_db):>8}  {_db(u.local_sqnr_db):>8}  "
                f"{u.cosine:>9.6f}  {u.max_rel_error:>11.4g}{mark}"
            )
        verdict = (
            f"first divergence (SQNR below {self.threshold_db:g} dB): {self.first_divergence}"
            if self.first_divergence
            else f"no unit below {self.threshold_db:g} dB SQNR"
        )
        lines.append(f"{self.rows} rows; {verdict}")
        return "\n".join(lines)


def _db(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.2f}" if math.isfinite(value) else ("inf" if value > 0 else "-inf")


class _Moments:
    """Running float64 sums of one pair of outputs (reference ``a``, compared ``b``)."""

    def __init__(self) -> None:
        self.ref2 = self.out2 = self.err2 = self.dot = 0.0
        self.max_err = self.max_ref = 0.0

    def add(self, a: Tensor, b: Tensor) -> None:
        if a.shape != b.shape:
            raise NumericsError(
                f"outputs differ in shape: reference {tuple(a.shape)}, compared {tuple(b.shape)}"
            )
        a, b = a.detach().double().reshape(-1), b.detach().double().reshape(-1)
        if not a.numel():
            return
        err = a - b
        self.ref2 += float(a.square().sum())
        self.out2 += float(b.square().sum())
        self.err2 += float(err.square().sum())
        self.dot += float((a * b).sum())
        self.max_err = max(self.max_err, float(err.abs().max()))
        self.max_ref = max(self.max_ref, float(a.abs().max()))

    def sqnr_db(self) -> float:
        if self.err2 == 0.0:
            return math.inf
        if self.ref2 == 0.0:
            return -math.inf
        return 10.0 * math.log10(self.ref2 / self.err2)

    def cosine(self) -> float:
        if self.ref2 == 0.0 or self.out2 == 0.0:
            return 1.0 if self.ref2 == self.out2 else 0.0
        return self.dot / math.sqrt(self.ref2 * self.out2)

    def max_rel_error(self) -> float:
        if self.max_err == 0.0:
            return 0.0
        return self.max_err / self.max_ref if self.max_ref else math.inf


def _kind(unit: nn.Module) -> str:
    # Every linear recipe keeps in_features; no table recipe has it.
    return "linear" if hasattr(unit, "in_features") else "table"


def _checked_units(reference: nn.Module, compared: nn.Module) -> tuple[dict, dict]:
    ref_units, cmp_units = quantizable_units(reference), quantizable_units(compared)
    if list(ref_units) != list(cmp_units):
        raise NumericsError(
            "the models have different units: only in the reference "
            f"{sorted(set(ref_units) - set(cmp_units))}, only in the compared model "
            f"{sorted(set(cmp_units) - set(ref_units))}; compare variants of one architecture"
        )
    for name, unit in ref_units.items():
        if _kind(unit) != _kind(cmp_units[name]):
            raise NumericsError(
                f"unit {name!r} is a {_kind(unit)} in the reference and a "
                f"{_kind(cmp_units[name])} in the compared model"
            )
    return ref_units, cmp_units


def compare_numerics(
    reference: nn.Module,
    compared: nn.Module,
    batch: Batch,
    *,
    threshold_db: float = DEFAULT_THRESHOLD_DB,
    batch_size: int = 8192,
) -> NumericsReport:
    """Unit by unit, how ``compared``'s activations depart from ``reference``'s on ``batch``.

    Args:
        reference: usually the fp32 parent; compared: a variant of the same architecture
            (any precisions). Both are scored in eval mode and restored afterwards.
        batch: B rows, scored in consecutive slices of ``batch_size`` (int8 dynamic layers
            take their activation scale per slice, as in ``models.scorer``).
        threshold_db: a unit whose SQNR is below it has diverged.

    Raises:
        NumericsError: no rows, or models whose units differ.
    """
    if len(batch) == 0:
        raise NumericsError("cannot compare numerics on 0 rows")
    if batch_size < 1:
        raise NumericsError(f"batch_size must be at least 1, got {batch_size}")
    ref_units, cmp_units = _checked_units(reference, compared)
    order: list[str] = []
    seen: dict[str, tuple[tuple, Tensor]] = {}
    outputs: dict[str, Tensor] = {}

    def on_reference(name: str):
        def hook(_module, args, output) -> None:
            if name not in order:
                order.append(name)
            seen[name] = (args, output)

        return hook

    def on_compared(name: str):
        def hook(_module, _args, output) -> None:
            outputs[name] = output

        return hook

    propagated = {name: _Moments() for name in ref_units}
    local = {name: _Moments() for name in ref_units}
    logits = _Moments()
    hooks = [u.register_forward_hook(on_reference(n)) for n, u in ref_units.items()]
    hooks += [u.register_forward_hook(on_compared(n)) for n, u in cmp_units.items()]
    modes = reference.training, compared.training
    try:
        reference.eval(), compared.eval()
        with torch.inference_mode():
            for start in range(0, len(batch), batch_size):
                rows = batch.slice(start, start + batch_size)
                seen.clear(), outputs.clear()
                logits.add(reference(rows), compared(rows))
                for name, (args, output) in seen.items():
                    propagated[name].add(output, outputs[name])
                    local[name].add(output, cmp_units[name](*args))
    finally:
        for hook in hooks:
            hook.remove()
        reference.train(modes[0]), compared.train(modes[1])
    # Units the rows never reached (none, in a DLRM: every unit runs on every batch) last.
    order += [name for name in ref_units if name not in order]
    return _report(order, ref_units, cmp_units, propagated, local, logits, len(batch), threshold_db)


def _report(order, ref_units, cmp_units, propagated, local, logits, rows, threshold_db):
    units = [
        UnitNumerics(
            unit=name,
            kind=_kind(ref_units[name]),
            reference_precision=unit_precision(ref_units[name]),
            precision=unit_precision(cmp_units[name]),
            sqnr_db=propagated[name].sqnr_db(),
            local_sqnr_db=local[name].sqnr_db(),
            cosine=propagated[name].cosine(),
            max_rel_error=propagated[name].max_rel_error(),
            diverged=propagated[name].sqnr_db() < threshold_db,
        )
        for name in order
    ]
    units.append(
        UnitNumerics(
            unit=OUTPUT,
            kind="output",
            reference_precision="",
            precision="",
            sqnr_db=logits.sqnr_db(),
            local_sqnr_db=math.nan,
            cosine=logits.cosine(),
            max_rel_error=logits.max_rel_error(),
            diverged=logits.sqnr_db() < threshold_db,
        )
    )
    first = next((u.unit for u in units if u.diverged), None)
    units = [UnitNumerics(**{**asdict(u), "first": True}) if u.unit == first else u for u in units]
    return NumericsReport(
        units=tuple(units), rows=rows, threshold_db=threshold_db, first_divergence=first
    )
