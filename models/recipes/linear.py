"""Low-precision replacements for ``nn.Linear`` on torch's own FBGEMM / x86 kernels.

Every module keeps only plain tensors in its state_dict and rebuilds the kernel's packed
weight from them (``_repack``) after construction and after ``load_state_dict``, so
artifacts load with ``torch.load(weights_only=True)`` and reproduce outputs bit for bit.
Each instance records its recipe name in ``precision`` (not in the state: the artifact's
recipe.json carries it).
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from quantrec.models.recipes.calibration import ACTIVATION_LEVELS, quantization_params


class _PackedLinear(nn.Module):
    """Shared plumbing: shapes, the float32 bias, repacking after a state load."""

    precision = "fp32"

    def __init__(self, *, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("bias", torch.zeros(out_features))

    def _repack(self) -> None:
        raise NotImplementedError

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super()._load_from_state_dict(*args, **kwargs)
        self._repack()

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.precision}"


class Fp16Linear(_PackedLinear):
    """fp16 weights, fp32 activations and accumulation (FBGEMM ``linear_dynamic_fp16``).

    Half the bytes of fp32; measured faster than fp32 here, whereas fp16 compute is 6x slower
    on a CPU without native half arithmetic.

    State: ``weight_fp16`` float16 (out, in), ``bias`` float32 (out,).
    """

    precision = "fp16"

    def __init__(self, *, in_features: int, out_features: int) -> None:
        super().__init__(in_features=in_features, out_features=out_features)
        self.register_buffer("weight_fp16", torch.zeros(out_features, in_features).half())
        self._repack()

    @classmethod
    def from_float(cls, linear: nn.Linear) -> Fp16Linear:
        module = cls(in_features=linear.in_features, out_features=linear.out_features)
        module.weight_fp16.copy_(linear.weight.detach().half())
        if linear.bias is not None:
            module.bias.copy_(linear.bias.detach())
        module._repack()
        return module

    def _repack(self) -> None:
        self._packed = torch.ops.quantized.linear_prepack_fp16(
            self.weight_fp16.float(), self.bias.float().contiguous()
        )

    def dequantized_weight(self) -> Tensor:
        """float32 (out, in)."""
        return self.weight_fp16.float()

    def forward(self, features: Tensor) -> Tensor:
        """float32 B X in_features -> float32 B X out_features."""
        return torch.ops.quantized.linear_dynamic_fp16(features, self._packed)


class Int8DynamicLinear(_PackedLinear):
    """``nn.Linear`` with symmetric int8 weights and dynamically quantized activations.

    Each forward quantizes its input with a scale taken from that input, so outputs depend
    on the batch's composition (score with fixed batching for reproducible numbers).
    ``reduce_range`` uses 7-bit activations, which x86/FBGEMM kernels need to avoid int16
    overflow in their multiply-add; without it outputs can be far off.

    Args:
        in_features, out_features: as for ``nn.Linear``.
        per_channel: one weight scale per output row instead of one per tensor.

    State: ``weight_int8`` int8 (out, in), ``weight_scale`` float64 (out,) or (1,),
    ``weight_zero_point`` int64 like the scale (always 0), ``bias`` float32 (out,).
    """

    reduce_range = True

    def __init__(self, *, in_features: int, out_features: int, per_channel: bool = True) -> None:
        super().__init__(in_features=in_features, out_features=out_features)
        self.precision = "int8" if per_channel else "int8_tensor"
        scales = out_features if per_channel else 1
        self.register_buffer(
            "weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8)
        )
        self.register_buffer("weight_scale", torch.ones(scales, dtype=torch.float64))
        self.register_buffer("weight_zero_point", torch.zeros(scales, dtype=torch.int64))
        self._repack()

    @classmethod
    def from_float(cls, linear: nn.Linear, *, per_channel: bool = True) -> Int8DynamicLinear:
        module = cls(
            in_features=linear.in_features,
            out_features=linear.out_features,
            per_channel=per_channel,
        )
        module._set_weight(linear.weight.detach().float(), linear.bias)
        return module

    def _set_weight(self, weight: Tensor, bias: Tensor | None) -> None:
        """Quantize float32 ``weight`` (out, in) symmetrically; copy ``bias`` (out,) if any."""
        per_channel = self.weight_scale.numel() > 1
        max_abs = weight.abs().amax(dim=1) if per_channel else weight.abs().amax().reshape(1)
        # Symmetric: zero maps to 0 exactly, so padding and ReLU zeros stay exact.
        scale = (max_abs.double() / 127.0).clamp_min(1e-12)
        step = scale[:, None] if per_channel else scale
        codes = torch.round(weight.double() / step).clamp(-128, 127)
        self.weight_int8.copy_(codes.to(torch.int8))
        self.weight_scale.copy_(scale)
        if bias is not None:
            self.bias.copy_(bias.detach())
        self._repack()

    def _repack(self) -> None:
        """Rebuild the kernel's packed weight from the plain buffers (the only source of truth)."""
        # torch deprecates creating quantized tensors (in favour of torchao), but its own
        # quantized kernels still take them; the warning is about our chosen API, not our data.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            if self.weight_scale.numel() == 1:
                weight = torch._make_per_tensor_quantized_tensor(
                    self.weight_int8, float(self.weight_scale[0]), int(self.weight_zero_point[0])
                )
            else:
                weight = torch._make_per_channel_quantized_tensor(
                    self.weight_int8, self.weight_scale, self.weight_zero_point, 0
                )
        self._packed = torch.ops.quantized.linear_prepack(weight, self.bias.float().contiguous())

    def dequantized_weight(self) -> Tensor:
        """float32 (out, in): the weight the kernel effectively multiplies by."""
        step = self.weight_scale[:, None] if self.weight_scale.numel() > 1 else self.weight_scale
        return (self.weight_int8.double() * step).float()

    def forward(self, features: Tensor) -> Tensor:
        """float32 B X in_features -> float32 B X out_features."""
        return torch.ops.quantized.linear_dynamic(features, self._packed, self.reduce_range)


class Int8StaticLinear(Int8DynamicLinear):
    """Per-channel int8 weights and activations quantized with a range fixed at calibration.

    Inputs are clipped to ``[input_low, input_high]`` and quantized to 7 bits (see
    ``models.recipes.calibration``) with the stored scale and zero point; the int8 product is
    dequantized to float32 inside ``quantized::linear_with_input_q_dq_qweight_dq_output_fp32``.
    Unlike the dynamic recipe, outputs do not depend on the batch's composition.

    Args:
        calibration: the range estimator that set the input range ("minmax" | "histogram" |
            "percentile" | "smooth"); recorded in ``precision`` as ``int8_static_<calibration>``.
            "smooth" divides input column j by ``input_smoothing[j]`` and multiplies weight
            column j by it before quantizing both (SmoothQuant).

    State: as ``Int8DynamicLinear`` plus ``input_range`` float32 (2,) = (low, high) of the
    (smoothed) input, and for "smooth" ``input_smoothing`` float32 (in,).
    """

    def __init__(self, *, in_features: int, out_features: int, calibration: str) -> None:
        super().__init__(in_features=in_features, out_features=out_features, per_channel=True)
        self.calibration = calibration
        self.precision = f"int8_static_{calibration}"
        if calibration == "smooth":
            self.register_buffer("input_smoothing", torch.ones(in_features))
        self.register_buffer("input_range", torch.tensor([0.0, 1.0]))
        self._repack()

    @classmethod
    def from_float(  # type: ignore[override]
        cls,
        linear: nn.Linear,
        *,
        calibration: str,
        input_range: tuple[float, float],
        smoothing: Tensor | None = None,
    ) -> Int8StaticLinear:
        low, high = input_range
        if not low <= 0.0 <= high:
            raise ValueError(f"input_range must contain 0, got ({low}, {high})")
        if (smoothing is not None) != (calibration == "smooth"):
            raise ValueError("smoothing factors go with calibration='smooth', and only with it")
        module = cls(
            in_features=linear.in_features,
            out_features=linear.out_features,
            calibration=calibration,
        )
        module.input_range.copy_(torch.tensor([low, high]))
        weight = linear.weight.detach().float()
        if smoothing is not None:
            module.input_smoothing.copy_(smoothing)
            weight = weight * smoothing  # x W^T = (x / s) (W s)^T
        module._set_weight(weight, linear.bias)
        return module

    def _repack(self) -> None:
        super()._repack()
        if hasattr(self, "input_range"):
            low, high = (float(v) for v in self.input_range)
            self._input_qparams = quantization_params(low, high)
            scale, zero_point = self._input_qparams
            # The clip bounds are the representable ends, so clipping never moves a code.
            self._clip = (-zero_point * scale, (ACTIVATION_LEVELS - zero_point) * scale)
        if hasattr(self, "input_smoothing"):
            self._inverse_smoothing = 1.0 / self.input_smoothing

    def dequantized_weight(self) -> Tensor:
        """float32 (out, in) in the unsmoothed input's terms (what warm starts copy)."""
        weight = super().dequantized_weight()
        return weight / self.input_smoothing if self.calibration == "smooth" else weight

    def forward(self, features: Tensor) -> Tensor:
        """float32 B X in_features -> float32 B X out_features."""
        scale, zero_point = self._input_qparams
        if self.calibration == "smooth":
            features = features * self._inverse_smoothing
        clipped = features.clamp(*self._clip)
        return torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(
            clipped, scale, zero_point, self._packed
        )
