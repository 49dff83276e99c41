"""Error-bounded compression of the pooled embeddings a sharded trainer would exchange.

In table-wise sharded DLRM training, each rank looks up its tables and sends every pooled
embedding (B X D per table) to the rank that owns the sample in an all-to-all; Feng et al.
(SC 2024) compress that exchange with an error-bounded lossy codec. ``PooledCompressor``
applies it in the single-process fused trainer (``models.fused.FusedTrainer``) at the point
where the exchange would happen: each step, table f's pooled block x (B X D) is replaced by
its codec round trip, ``models.codec``'s codes with bound ``rel_f(t) x (max x - min x)``
(decoded values are bit-identical to ``decode_table(encode_table(x))``); gradients flow
through the decoded values unchanged (the backward exchange is not compressed).

Bounds, the issue's dual-level strategy:

* table-wise (``groups="table"``): during the first ``measure_steps`` steps every table uses
  the base bound while a per-table *sensitivity* is measured: the mean over those steps of
  ``mean |dL/dx_f| x (max x_f - min x_f)``, the first-order loss change per unit of
  relative bound (a perturbation of size b moves the loss by about |grad| b). Tables are
  then ranked into thirds: the most sensitive get the tight bound, the middle the base, the
  least sensitive the loose one (``tight``/``base``/``loose``: the paper's 0.01 / 0.03 /
  0.05 by default). Sensitivity, not the paper's vector homogenization, because it is
  measured from what the trainer already has (the pooled gradient) and it ranks what the
  loss feels; ``groups="fixed"``: every table at the base bound.
* iteration-wise (``schedule``): the bound starts at ``start_factor`` (2) x the table's
  bound and decays to it over ``decay_steps`` steps: "step" (2x until then), "linear" or
  "log" (factor 2 - log(1 + t) / log(1 + T)); "none": no decay.

Logged (``CompressionLog``): the bound of every table at every step, the sensitivity and
group of every table, and every ``ratio_every`` steps the compression ratio of every
table: fp32 bytes (B x D x 4) over the bytes of ``encode_table`` at zstandard level
``RATIO_LEVEL`` (a fast level, as an exchange would use).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from quantrec.models.codec import (
    CodecError,
    bounds_and_steps,
    check_rel_bound,
    decode_codes,
    encode_table,
)

Schedule = Literal["none", "step", "linear", "log"]
GROUPS = ("tight", "base", "loose")
RATIO_LEVEL = 3


@dataclass(frozen=True)
class PooledCompression:
    """How the trainer compresses pooled embeddings (module docstring).

    Attributes:
        base: relative bound of the base group (fraction of each table's pooled range).
        tight, loose: bounds of the most and least sensitive thirds (``groups="table"``).
        groups: "table" (tight / base / loose by measured sensitivity) or "fixed" (base).
        schedule: "none", "step", "linear" or "log" decay from ``start_factor`` x the bound.
        start_factor: the bound at step 0 over the table's bound, >= 1.
        decay_steps: steps over which the factor reaches 1, >= 1.
        measure_steps: steps whose gradients measure sensitivity (``groups="table"``).
        ratio_every: measure the compression ratio every this many steps (and at step 0).
    """

    base: float = 0.03
    tight: float = 0.01
    loose: float = 0.05
    groups: Literal["table", "fixed"] = "table"
    schedule: Schedule = "log"
    start_factor: float = 2.0
    decay_steps: int = 100
    measure_steps: int = 10
    ratio_every: int = 20

    def __post_init__(self) -> None:
        for bound in (self.base, self.tight, self.loose):
            check_rel_bound(bound)
        if not self.tight <= self.base <= self.loose:
            raise ValueError(
                f"bounds must satisfy tight <= base <= loose, got {self.tight}, {self.base}, "
                f"{self.loose}"
            )
        if self.groups not in ("table", "fixed"):
            raise ValueError(f"groups must be 'table' or 'fixed', got {self.groups!r}")
        if self.schedule not in ("none", "step", "linear", "log"):
            raise ValueError(
                f"schedule must be one of none, step, linear, log; got {self.schedule!r}"
            )
        if not (self.start_factor >= 1 and self.decay_steps >= 1 and self.ratio_every >= 1):
            raise ValueError(
                f"need start_factor >= 1, decay_steps >= 1, ratio_every >= 1; got "
                f"{self.start_factor}, {self.decay_steps}, {self.ratio_every}"
            )
        if self.measure_steps < 1:
            raise ValueError(f"measure_steps must be >= 1, got {self.measure_steps}")

    def factor(self, step: int) -> float:
        """The iteration-wise factor at ``step`` (0-based): start_factor decaying to 1."""
        if self.schedule == "none" or step >= self.decay_steps:
            return 1.0
        extra = self.start_factor - 1.0
        if self.schedule == "step":
            return self.start_factor
        if self.schedule == "linear":
            return 1.0 + extra * (1.0 - step / self.decay_steps)
        return 1.0 + extra * (1.0 - math.log1p(step) / math.log1p(self.decay_steps))

    def group_bound(self, group: str) -> float:
        return {"tight": self.tight, "base": self.base, "loose": self.loose}[group]


@dataclass
class CompressionLog:
    """What the compression did, per table f (``features`` order) and step t.

    Attributes:
        features: the tables' feature names.
        bounds: per step, the relative bound of each table: steps X F.
        ratios: step -> per table fp32 bytes / encoded bytes (steps measured only).
        sensitivity: per table, the measured sensitivity (None with ``groups="fixed"``).
        groups: per table, "tight", "base" or "loose" (all "base" until measured).
        max_error_over_bound: the largest |decoded - x| / bound seen (<= 1).
    """

    features: list[str]
    bounds: list[list[float]] = field(default_factory=list)
    ratios: dict[int, list[float]] = field(default_factory=dict)
    sensitivity: list[float] | None = None
    groups: list[str] = field(default_factory=list)
    max_error_over_bound: float = 0.0

    def mean_ratio(self) -> list[float]:
        """Per table, the mean of its measured compression ratios."""
        if not self.ratios:
            return [float("nan")] * len(self.features)
        measured = list(self.ratios.values())
        return [sum(r[f] for r in measured) / len(measured) for f in range(len(self.features))]

    def overall_ratio(self) -> float:
        """fp32 bytes over encoded bytes of all measured exchanges together (per table
        blocks are the same size, so this is the harmonic mean of the ratios)."""
        inverse = [1.0 / r for ratios in self.ratios.values() for r in ratios]
        return len(inverse) / sum(inverse) if inverse else float("nan")


class PooledCompressor:
    """Applies a ``PooledCompression`` step by step and keeps its ``CompressionLog``.

    Args:
        settings: the bounds and schedule.
        features: the tables' feature names (F), for the log and error messages.
    """

    def __init__(self, settings: PooledCompression, features: list[str]) -> None:
        self.settings = settings
        self.log = CompressionLog(features=list(features), groups=["base"] * len(features))
        self.step = 0
        self._sensitivity = torch.zeros(len(features), dtype=torch.float64)
        self._measured = 0
        self._ranges: Tensor | None = None

    def bounds(self) -> Tensor:
        """float64 (F,): this step's relative bound of each table."""
        factor = self.settings.factor(self.step)
        return torch.tensor(
            [self.settings.group_bound(g) * factor for g in self.log.groups], dtype=torch.float64
        )

    def exchange(self, pooled: Tensor) -> Tensor:
        """The pooled embeddings after their codec round trip.

        Args:
            pooled: float32 B X F X D (no grad).

        Returns:
            float32 B X F X D; table f within ``bounds()[f] x`` its block's range.

        Raises:
            CodecError: NaN or inf in a table's pooled block (named).
        """
        values = pooled.detach()
        bad = ~torch.isfinite(values)
        if bool(bad.any()):
            f = int(bad.any(dim=2).any(dim=0).nonzero()[0])
            raise CodecError(
                f"pooled embeddings of table {self.log.features[f]} hold NaN or inf at step "
                f"{self.step}: the training diverged or the table holds them"
            )
        exact = values.double()
        low, high = exact.amin(dim=(0, 2)), exact.amax(dim=(0, 2))  # (F,)
        rel = self.bounds()
        bound, step = bounds_and_steps(low, high, rel)
        # A zero range is passed exactly; a bound below float32 resolution too (bound 0).
        exact_tables = step <= 0
        safe = torch.where(exact_tables, torch.ones_like(step), step)
        codes = torch.round(exact / safe[None, :, None]).to(torch.int64)
        decoded = decode_codes(codes, safe[None, :, None])
        decoded = torch.where(exact_tables[None, :, None], values, decoded)
        error = (decoded.double() - exact).abs().amax(dim=(0, 2))
        ratio = torch.where(bound > 0, error / bound.clamp_min(1e-300), torch.zeros_like(error))
        self.log.max_error_over_bound = max(self.log.max_error_over_bound, float(ratio.max()))
        self.log.bounds.append(torch.where(exact_tables, 0.0, rel).tolist())
        self._ranges = high - low
        if self.step % self.settings.ratio_every == 0:
            self.log.ratios[self.step] = self._ratios(values)
        return decoded

    @property
    def measuring(self) -> bool:
        """Whether this step's gradient still counts towards the tables' sensitivity."""
        return self.settings.groups == "table" and self._measured < self.settings.measure_steps

    def observe(self, pooled_grad: Tensor) -> None:
        """Record this step's gradient (B X F X D) for sensitivity; then advance a step."""
        sensitivity = None
        if self.measuring:
            sensitivity = pooled_grad.detach().double().abs().mean(dim=(0, 2)) * self._ranges
        self.observe_sensitivity(sensitivity)

    def observe_sensitivity(self, sensitivity: Tensor | None) -> None:
        """Record this step's per-table sensitivity, float64 (F,): mean |dL/dx_f| x the
        range of x_f (a sharded trainer measures its own tables and sums across ranks);
        None when not ``measuring``. Then advance a step.
        """
        if self.measuring:
            if sensitivity is None:
                raise ValueError(f"step {self.step} measures sensitivity; got None")
            self._sensitivity += sensitivity
            self._measured += 1
            if self._measured == self.settings.measure_steps:
                self._assign_groups()
        self.step += 1

    def _assign_groups(self) -> None:
        sensitivity = self._sensitivity / self._measured
        order = torch.argsort(sensitivity, descending=True, stable=True).tolist()
        count = len(order)
        groups = ["base"] * count
        for rank, f in enumerate(order):
            groups[f] = GROUPS[min(3 * rank // count, 2)]
        self.log.groups = groups
        self.log.sensitivity = sensitivity.tolist()

    def _ratios(self, values: Tensor) -> list[float]:
        """Per table: fp32 bytes of its B X D block over its encoded bytes."""
        rel = self.bounds()
        ratios = []
        for f, name in enumerate(self.log.features):
            block = values[:, f, :]
            try:
                data = encode_table(block, rel_bound=float(rel[f]), name=name, level=RATIO_LEVEL)
            except CodecError:  # bound below float32 resolution: exchanged exactly
                ratios.append(1.0)
                continue
            ratios.append(block.numel() * 4 / len(data))
        return ratios
