"""Activation ranges for static int8 linears, estimated from calibration inputs.

Each estimator takes every input value a unit saw during calibration (a float32 tensor of
any shape) and returns the range ``(low, high)`` the quantizer should cover; values outside
it are clipped. The range always contains 0 so that ReLU zeros and padding stay exact.

* ``minmax``: the observed extremes; never clips, but one outlier widens every step.
* ``percentile``: the 0.01 % / 99.99 % quantiles; clips the tails by fiat.
* ``histogram``: the range that minimises the expected squared error of a 7-bit quantizer
  over a 1024-bin histogram of the inputs (clipping error outside, step^2 / 12 inside),
  as torch.ao's ``HistogramObserver`` does, but searched exhaustively over a grid.
* ``smooth`` (``smooth_calibration``): SmoothQuant (Xiao et al. 2022). Input column j is
  divided by s_j = max|x_j|^0.5 / max|W_:,j|^0.5 and weight column j multiplied by it, which
  leaves the product unchanged but evens out columns whose outliers would otherwise set
  the one activation scale; then ``histogram`` on the smoothed inputs. Measured on the
  synthetic feed's over_arch.mlp.0 (interaction features): NE +1.99 % dynamic, +0.65 %
  histogram, +0.00 % smooth.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

# 7-bit activations: without VNNI, FBGEMM's u8 x s8 multiply-add saturates int16 for 8-bit
# inputs (measured here: 3x the error of 7-bit on the same layer).
ACTIVATION_LEVELS = 127
PERCENTILE = 0.9999
_HISTOGRAM_BINS = 1024
_QUANTILE_SAMPLE = 1 << 22  # torch.quantile handles at most 2^24 elements


def minmax_range(values: Tensor) -> tuple[float, float]:
    """The observed (min, max), widened to contain 0."""
    return min(float(values.min()), 0.0), max(float(values.max()), 0.0)


def percentile_range(values: Tensor, *, percentile: float = PERCENTILE) -> tuple[float, float]:
    """The (1 - percentile, percentile) quantiles, widened to contain 0."""
    flat = values.reshape(-1).float()
    if flat.numel() > _QUANTILE_SAMPLE:
        generator = torch.Generator().manual_seed(0)
        flat = flat[torch.randint(flat.numel(), (_QUANTILE_SAMPLE,), generator=generator)]
    q = torch.quantile(flat, torch.tensor([1.0 - percentile, percentile]))
    return min(float(q[0]), 0.0), max(float(q[1]), 0.0)


def histogram_range(values: Tensor, *, levels: int = ACTIVATION_LEVELS) -> tuple[float, float]:
    """The (low, high) minimising the expected L2 error of a ``levels``-step quantizer."""
    low, high = minmax_range(values)
    if high - low <= 0:
        return low, high
    counts = torch.histc(values.reshape(-1).float(), bins=_HISTOGRAM_BINS, min=low, max=high)
    width = (high - low) / _HISTOGRAM_BINS
    centers = low + width * (torch.arange(_HISTOGRAM_BINS, dtype=torch.float64) + 0.5)
    # Candidate ends on bin edges: low ends in the lower half, high ends in the upper half.
    los = low + width * torch.arange(0, _HISTOGRAM_BINS // 2 + 1, 16, dtype=torch.float64)
    his = low + width * torch.arange(
        _HISTOGRAM_BINS // 2, _HISTOGRAM_BINS + 1, 4, dtype=torch.float64
    )
    los, his = los.clamp(max=0.0), his.clamp(min=0.0)  # keep 0 representable
    lo, hi = los[:, None, None], his[None, :, None]
    step = (hi - lo) / levels
    inside = (step**2 / 12).expand(-1, -1, _HISTOGRAM_BINS)
    clipped = torch.where(centers < lo, (centers - lo) ** 2, (centers - hi) ** 2)
    error = torch.where((centers >= lo) & (centers <= hi), inside, clipped)
    total = (error * counts.double()).sum(dim=2)
    best = int(torch.argmin(total))
    i, j = divmod(best, total.shape[1])
    return float(los[i]), float(his[j])


ESTIMATORS: dict[str, Callable[[Tensor], tuple[float, float]]] = {
    "minmax": minmax_range,
    "histogram": histogram_range,
    "percentile": percentile_range,
}
SMOOTHING_ALPHA = 0.5


def smooth_calibration(
    values: Tensor, weight: Tensor, *, alpha: float = SMOOTHING_ALPHA
) -> tuple[float, float, Tensor]:
    """(low, high, smoothing): the histogram range of the smoothed inputs and s (in,).

    Args:
        values: float32 (rows, in), the unit's recorded inputs.
        weight: float32 (out, in), the unit's float weight.
    """
    x_max = values.abs().amax(dim=0).clamp_min(1e-5)
    w_max = weight.detach().abs().amax(dim=0).clamp_min(1e-5)
    smoothing = (x_max**alpha / w_max ** (1 - alpha)).clamp_min(1e-5).float()
    low, high = histogram_range(values / smoothing)
    return low, high, smoothing


def quantization_params(low: float, high: float) -> tuple[float, int]:
    """(scale, zero_point) of an asymmetric ``ACTIVATION_LEVELS``-step quantizer of [low, high]."""
    scale = max((high - low) / ACTIVATION_LEVELS, 1e-12)
    zero_point = int(round(-low / scale))
    return scale, min(max(zero_point, 0), ACTIVATION_LEVELS)
