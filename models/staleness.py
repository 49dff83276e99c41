"""Quantization staleness: how far a low-precision model's frozen quantization has drifted
from the rows it now scores.

A low-precision model (the champion's precision plan) fixes two things at quantization time:
the input range of every static int8 linear (calibrated on older rows) and the rounded rows
of every quantized table. On the run date's rows this module measures

1. ``out_of_range``: per ``Int8StaticLinear``, the fraction of its input elements outside
   the range its 7-bit activation quantizer can represent (those are clipped); for
   calibration "smooth" the inputs are taken after the division by the smoothing factors,
   as the kernel sees them. Inputs are what the low-precision model itself feeds the unit
   (upstream units quantized too), so even the calibration rows can show a small fraction.
   Overall: pooled over every static unit's elements.
2. ``embedding_error``: per row-wise quantized or fp16 table, the relative RMS error
   ``||dequantized row - parent row|| / ||parent row||`` of the rows the day looks up
   (ids that occur), as a mean over those rows and its max. Rows whose parent row is all
   zeros have no relative error and are left out. Overall: the mean over every table's
   active rows (row-weighted).
3. ``ne_gap_rel``: ``(NE(low precision) - NE(parent)) / NE(parent)`` on the day's labels;
   positive means the quantized model is worse.

A growing out-of-range fraction says the static ranges should be re-calibrated; a growing
NE gap with flat ranges points at the tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from quantrec.models.batch import Batch
from quantrec.models.dlrm import DLRM
from quantrec.models.metrics import normalized_entropy
from quantrec.models.recipes.calibration import ACTIVATION_LEVELS, quantization_params
from quantrec.models.recipes.embedding import Fp16EmbeddingBag, RowwiseEmbeddingBag
from quantrec.models.recipes.linear import Int8StaticLinear
from quantrec.models.scorer import predict_proba

_QUANTIZED_TABLES = (RowwiseEmbeddingBag, Fp16EmbeddingBag)


class StalenessError(ValueError):
    """The low-precision model and its parent do not have the same units."""


@dataclass(frozen=True)
class Staleness:
    """Staleness of one low-precision model on one day's rows (see the module docstring).

    Attributes:
        out_of_range: static linear name -> fraction in [0, 1] of input elements outside
            its representable range.
        out_of_range_overall: element-weighted over all static linears; None without any.
        elements: static linear name -> input elements seen (B X in_features).
        embedding_error: table name -> mean relative RMS error of its active rows.
        embedding_error_max: table name -> the largest of those errors.
        embedding_error_overall: mean over all active rows of all tables; None without any.
        active_rows: table name -> distinct ids the day looked up (with a non-zero parent row).
        ne_gap_rel: relative NE change of the low-precision model vs its parent.
    """

    out_of_range: dict[str, float]
    out_of_range_overall: float | None
    elements: dict[str, int]
    embedding_error: dict[str, float]
    embedding_error_max: dict[str, float]
    embedding_error_overall: float | None
    active_rows: dict[str, int]
    ne_gap_rel: float

    def to_metrics(self) -> dict[str, float]:
        """Flat ``staleness.*`` metrics (unit names keep their dots: valid MLflow keys)."""
        metrics = {f"staleness.out_of_range.{n}": v for n, v in self.out_of_range.items()}
        metrics |= {f"staleness.embedding_error.{n}": v for n, v in self.embedding_error.items()}
        metrics |= {
            f"staleness.embedding_error_max.{n}": v for n, v in self.embedding_error_max.items()
        }
        if self.out_of_range_overall is not None:
            metrics["staleness.out_of_range"] = self.out_of_range_overall
        if self.embedding_error_overall is not None:
            metrics["staleness.embedding_error"] = self.embedding_error_overall
            metrics["staleness.embedding_error_max"] = max(self.embedding_error_max.values())
        metrics["staleness.ne_gap_rel"] = self.ne_gap_rel
        return {k: float(v) for k, v in metrics.items()}


def representable_range(unit: Int8StaticLinear) -> tuple[float, float]:
    """(low, high) the unit's activation quantizer represents: its calibrated range with
    the zero point rounded to a code, as ``Int8StaticLinear`` clips its (smoothed) input."""
    scale, zero_point = quantization_params(*(float(v) for v in unit.input_range))
    return -zero_point * scale, (ACTIVATION_LEVELS - zero_point) * scale


def quantization_staleness(
    low_precision: DLRM, parent: DLRM, batch: Batch, *, batch_size: int = 8192
) -> Staleness:
    """Out-of-range inputs, table errors and the NE gap of ``low_precision`` on ``batch``.

    Args:
        low_precision: the quantized model (e.g. the champion's plan applied to ``parent``).
        parent: the fp32 model it was quantized from, same architecture.
        batch: the run date's rows.
        batch_size: scoring slice, as ``models.scorer.predict_proba``.

    Raises:
        StalenessError: a quantized table of ``low_precision`` has no fp32 table of the same
            name and shape in ``parent``.
        models.metrics.MetricError: the batch's labels are single-class (NE is undefined).
    """
    static = {n: m for n, m in low_precision.named_modules() if isinstance(m, Int8StaticLinear)}
    outside = dict.fromkeys(static, 0)
    seen = dict.fromkeys(static, 0)

    def count(name: str, unit: Int8StaticLinear, inputs: torch.Tensor) -> None:
        if unit.calibration == "smooth":
            inputs = inputs / unit.input_smoothing  # the kernel quantizes x / s
        low, high = representable_range(unit)
        outside[name] += int(((inputs < low) | (inputs > high)).sum())
        seen[name] += inputs.numel()

    hooks = [
        unit.register_forward_pre_hook(lambda module, args, name=name: count(name, module, args[0]))
        for name, unit in static.items()
    ]
    try:
        low_probs = predict_proba(low_precision, batch, batch_size=batch_size)
    finally:
        for hook in hooks:
            hook.remove()
    parent_probs = predict_proba(parent, batch, batch_size=batch_size)
    labels = batch.labels.double().numpy()
    ne_low, ne_parent = (normalized_entropy(labels, p) for p in (low_probs, parent_probs))

    errors = _table_errors(low_precision, parent, batch)
    all_errors = np.concatenate(list(errors.values())) if errors else np.zeros(0)
    total = sum(seen.values())
    return Staleness(
        out_of_range={n: outside[n] / seen[n] if seen[n] else 0.0 for n in static},
        out_of_range_overall=sum(outside.values()) / total if total else None,
        elements=seen,
        embedding_error={n: float(e.mean()) if e.size else 0.0 for n, e in errors.items()},
        embedding_error_max={n: float(e.max()) if e.size else 0.0 for n, e in errors.items()},
        embedding_error_overall=float(all_errors.mean()) if all_errors.size else None,
        active_rows={n: int(e.size) for n, e in errors.items()},
        ne_gap_rel=(ne_low - ne_parent) / ne_parent,
    )


def _table_errors(low_precision: DLRM, parent: DLRM, batch: Batch) -> dict[str, np.ndarray]:
    """Table name -> float64 (active rows,) relative RMS error of each active row."""
    errors = {}
    tables = zip(low_precision.sparse_arch.embedding_bags, batch.sparse.values)
    for index, (table, ids) in enumerate(tables):
        if not isinstance(table, _QUANTIZED_TABLES):
            continue
        name = f"sparse_arch.embedding_bags.{index}"
        try:
            reference = parent.get_submodule(name)
        except AttributeError as err:
            raise StalenessError(f"parent has no table {name!r} to compare with") from err
        shape = (
            tuple(table.weight_fp16.shape)
            if isinstance(table, Fp16EmbeddingBag)
            else (table.num_embeddings, table.embedding_dim)
        )
        if not isinstance(reference, nn.EmbeddingBag) or tuple(reference.weight.shape) != shape:
            raise StalenessError(
                f"{name}: parent unit {type(reference).__name__} does not match the quantized "
                f"table ({shape[0]} X {shape[1]}); pass the fp32 parent the low-precision "
                "model was quantized from"
            )
        active = torch.unique(ids)
        with torch.inference_mode():
            # One id per bag: the table's own lookup returns exactly its dequantized rows,
            # without dequantizing the whole table.
            rows = table(active, torch.arange(active.numel())).double()
            exact = reference.weight.detach()[active].double()
        norms = exact.norm(dim=1)
        keep = norms > 0
        errors[name] = ((rows - exact).norm(dim=1)[keep] / norms[keep]).numpy()
    return errors
