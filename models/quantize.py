"""Quantization recipes that run on torch's own int8 kernels (FBGEMM / x86 / QNNPACK).

A *precision plan* maps the name of each quantizable unit (every ``nn.Linear`` of the MLPs
and every ``nn.EmbeddingBag``, e.g. ``over_arch.mlp.0`` or ``sparse_arch.embedding_bags.3``)
to a precision. ``build_variant(model, "int8")`` is the plan where every unit is int8; a
later per-layer plan is just another mapping passed to ``apply_precision_plan``. New
precisions slot in by adding a converter to ``_CONVERTERS``.

Quantized modules keep only plain tensors in their state_dict, so artifacts load with
``torch.load(weights_only=True)``; the kernels' packed weights are rebuilt on load.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from models.dlrm import DLRM

PRECISIONS = ("fp32", "int8")


class Int8DynamicLinear(nn.Module):
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
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        scales = out_features if per_channel else 1
        self.register_buffer(
            "weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8)
        )
        self.register_buffer("weight_scale", torch.ones(scales, dtype=torch.float64))
        self.register_buffer("weight_zero_point", torch.zeros(scales, dtype=torch.int64))
        self.register_buffer("bias", torch.zeros(out_features))
        self._repack()

    @classmethod
    def from_float(cls, linear: nn.Linear, *, per_channel: bool = True) -> Int8DynamicLinear:
        module = cls(
            in_features=linear.in_features,
            out_features=linear.out_features,
            per_channel=per_channel,
        )
        weight = linear.weight.detach().float()
        max_abs = weight.abs().amax(dim=1) if per_channel else weight.abs().amax().reshape(1)
        # Symmetric: zero maps to 0 exactly, so padding and ReLU zeros stay exact.
        scale = (max_abs.double() / 127.0).clamp_min(1e-12)
        step = scale[:, None] if per_channel else scale
        codes = torch.round(weight.double() / step).clamp(-128, 127)
        module.weight_int8.copy_(codes.to(torch.int8))
        module.weight_scale.copy_(scale)
        if linear.bias is not None:
            module.bias.copy_(linear.bias.detach())
        module._repack()
        return module

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

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super()._load_from_state_dict(*args, **kwargs)
        self._repack()

    def dequantized_weight(self) -> Tensor:
        """float32 (out, in): the weight the kernel effectively multiplies by."""
        step = self.weight_scale[:, None] if self.weight_scale.numel() > 1 else self.weight_scale
        return (self.weight_int8.double() * step).float()

    def forward(self, features: Tensor) -> Tensor:
        """
        Args:
            features: float32 B X in_features.

        Returns:
            float32 B X out_features.
        """
        return torch.ops.quantized.linear_dynamic(features, self._packed, self.reduce_range)

    def extra_repr(self) -> str:
        scales = self.weight_scale.numel()
        return f"in_features={self.in_features}, out_features={self.out_features}, scales={scales}"


class RowwiseInt8EmbeddingBag(nn.Module):
    """Sum-pooled embedding bag stored as FBGEMM row-wise 8-bit rows.

    Each row holds D uint8 codes followed by its float32 scale and float32 offset (the row
    minimum), so a row costs D + 8 bytes instead of 4 D. Per element the dequantized value
    is within half a step, (row max - row min) / 510, of the float value.

    Args:
        num_embeddings, embedding_dim: as for ``nn.EmbeddingBag``.

    State: ``packed_weight`` uint8 (num_embeddings, embedding_dim + 8).
    """

    def __init__(self, *, num_embeddings: int, embedding_dim: int) -> None:
        super().__init__()
        self.register_buffer(
            "packed_weight", torch.zeros(num_embeddings, embedding_dim + 8, dtype=torch.uint8)
        )

    @classmethod
    def from_float(cls, bag: nn.EmbeddingBag) -> RowwiseInt8EmbeddingBag:
        if bag.mode != "sum":
            raise ValueError(
                f"only mode='sum' embedding bags can be quantized, got mode={bag.mode!r}"
            )
        module = cls(num_embeddings=bag.num_embeddings, embedding_dim=bag.embedding_dim)
        weight = bag.weight.detach().float().contiguous()
        module.packed_weight = torch.ops.quantized.embedding_bag_byte_prepack(weight)
        return module

    @property
    def num_embeddings(self) -> int:
        return int(self.packed_weight.shape[0])

    @property
    def embedding_dim(self) -> int:
        return int(self.packed_weight.shape[1]) - 8

    def dequantized_weight(self) -> Tensor:
        """float32 (num_embeddings, embedding_dim)."""
        return torch.ops.quantized.embedding_bag_byte_unpack(self.packed_weight)

    def forward(self, values: Tensor, offsets: Tensor) -> Tensor:
        """
        Args:
            values: int64 ids of all bags, concatenated.
            offsets: int64 B, start of each bag in ``values``.

        Returns:
            float32 B X embedding_dim (zeros for an empty bag).
        """
        return torch.ops.quantized.embedding_bag_byte_rowwise_offsets(
            self.packed_weight, values, offsets, False, 0, False, None, None, False
        )

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, mode='sum', rowwise int8"


# (float module type, precision) -> converter. fp32 needs none: the unit stays as it is.
_CONVERTERS: dict[tuple[type[nn.Module], str], Callable[[nn.Module], nn.Module]] = {
    (nn.Linear, "int8"): Int8DynamicLinear.from_float,
    (nn.EmbeddingBag, "int8"): RowwiseInt8EmbeddingBag.from_float,
}
_UNIT_PRECISION: dict[type[nn.Module], str] = {
    nn.Linear: "fp32",
    nn.EmbeddingBag: "fp32",
    Int8DynamicLinear: "int8",
    RowwiseInt8EmbeddingBag: "int8",
}


def quantizable_units(model: nn.Module) -> dict[str, nn.Module]:
    """Name -> module of every unit a plan can assign a precision to, in module order."""
    return {name: m for name, m in model.named_modules() if type(m) in _UNIT_PRECISION}


def precision_plan(model: nn.Module) -> dict[str, str]:
    """Name -> current precision of every unit (what an artifact records)."""
    return {name: _UNIT_PRECISION[type(m)] for name, m in quantizable_units(model).items()}


def uniform_plan(model: nn.Module, precision: str) -> dict[str, str]:
    """The plan that puts every unit of ``model`` at ``precision``."""
    _check_precision(precision)
    return {name: precision for name in quantizable_units(model)}


def apply_precision_plan(model: DLRM, plan: Mapping[str, str]) -> DLRM:
    """A quantized copy of an fp32 ``model``, in eval mode; ``model`` is left untouched.

    Args:
        plan: unit name -> precision, one entry per unit of ``quantizable_units(model)``.
    """
    units = quantizable_units(model)
    if set(plan) != set(units):
        raise ValueError(
            f"precision plan must name every unit: missing {sorted(set(units) - set(plan))}, "
            f"unknown {sorted(set(plan) - set(units))}"
        )
    variant = copy.deepcopy(model).eval()
    for name, precision in plan.items():
        _check_precision(precision)
        unit = variant.get_submodule(name)
        current = _UNIT_PRECISION[type(unit)]
        if precision == current:
            continue
        if current != "fp32":
            raise ValueError(f"unit {name!r} is already {current}; apply plans to the fp32 model")
        parent_name, _, child = name.rpartition(".")
        converted = _CONVERTERS[(type(unit), precision)](unit)
        setattr(variant.get_submodule(parent_name), child, converted)
    return variant.requires_grad_(False)


def quantize_int8(model: DLRM) -> DLRM:
    """Every MLP linear as int8 dynamic, every table row-wise int8; a copy in eval mode."""
    return apply_precision_plan(model, uniform_plan(model, "int8"))


def build_variant(model: DLRM, precision: str) -> DLRM:
    """The model at ``precision`` ("fp32" | "int8"): an eval-mode copy, ``model`` untouched."""
    return apply_precision_plan(model, uniform_plan(model, precision))


def float_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The state of ``model`` under fp32 names, dequantizing quantized units.

    Lets a quantized champion warm-start an fp32 challenger.
    """
    state: dict[str, Tensor] = {}
    quantized = {
        n: m for n, m in quantizable_units(model).items() if _UNIT_PRECISION[type(m)] != "fp32"
    }
    for name, tensor in model.state_dict().items():
        if name.rpartition(".")[0] not in quantized:
            state[name] = tensor
    for name, unit in quantized.items():
        state[f"{name}.weight"] = unit.dequantized_weight()
        if isinstance(unit, Int8DynamicLinear):
            state[f"{name}.bias"] = unit.bias
    return state


def model_bytes(model: nn.Module) -> int:
    """Bytes of the tensors in ``model.state_dict()``: what an artifact's weights hold."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {list(PRECISIONS)}")
