"""A variant's precision plan as a table a reviewer reads: one row per unit, in the model's
own order (``bags.0, bags.1, ..., bags.10``, never text order), with the feature an
embedding table serves, its precision, its bytes and, where the search measured it, the NE
change of quantizing that unit alone.

Rows are plain data (``PlanRow``, ``to_dict``/``from_dict``), so the registry can log them
beside the run and the summary can read them back without the model.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields

from torch import nn

from quantrec.models.markdown import table
from quantrec.models.plan import PrecisionPlan
from quantrec.models.quantize import model_bytes, quantizable_units, unit_precision

_EMBEDDING = re.compile(r"embedding_bags\.(\d+)$")
_MLP_NAMES = {"dense_arch": "bottom MLP", "over_arch": "top MLP"}


@dataclass(frozen=True)
class PlanRow:
    """One unit of a plan: ``bytes`` of its state_dict at this precision; ``ne_delta_rel``
    the relative NE change with only this unit quantized (None: not measured)."""

    unit: str
    feature: str
    precision: str
    bytes: int
    ne_delta_rel: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> PlanRow:
        return cls(**{f.name: values.get(f.name) for f in fields(cls)})


def plan_rows(model: nn.Module, plan: PrecisionPlan | None = None) -> list[PlanRow]:
    """The rows of ``model`` (a variant as it will be registered), in module order; the
    measured per-unit NE change from ``plan`` where it has one."""
    names = tuple(getattr(model, "feature_names", ()))
    units = (plan.units if plan is not None else {}) or {}
    rows = []
    for name, module in quantizable_units(model).items():
        match = _EMBEDDING.search(name)
        index = int(match.group(1)) if match else None
        feature = (
            names[index]
            if index is not None and index < len(names)
            else _MLP_NAMES.get(name.split(".")[0], "")
        )
        measured = units.get(name)
        rows.append(
            PlanRow(
                unit=name,
                feature=feature,
                precision=unit_precision(module),
                bytes=model_bytes(module),
                ne_delta_rel=measured.ne_delta_rel if measured is not None else None,
            )
        )
    return rows


def plan_markdown(rows: list[PlanRow]) -> list[str]:
    """Markdown lines: a table of the rows, in the order given (``plan_rows``: the model's
    own), with a totals row."""
    if not rows:
        return ["no plan recorded"]
    body = [
        [
            f"`{row.unit}`",
            row.feature,
            row.precision,
            f"{row.bytes:,}",
            "n/a" if row.ne_delta_rel is None else f"{100 * row.ne_delta_rel:+.4f} %",
        ]
        for row in rows
    ]
    body.append(["**total**", "", "", f"**{sum(r.bytes for r in rows):,}**", ""])
    return table(["unit", "feature", "precision", "bytes", "NE change alone"], body, right=2)
