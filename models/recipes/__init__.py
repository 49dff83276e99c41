"""Precision recipes behind one interface: a registry keyed by (float unit type, precision).

A ``Recipe`` turns one fp32 unit (``nn.Linear`` or sum-pooled ``nn.EmbeddingBag``) into its
low-precision module (``convert``), or builds an empty module of the right shapes for an
artifact's tensors to be loaded into (``skeleton``). Static recipes need the unit's
calibrated input range. A new backend (torchao, a fused kernel) slots in as another entry.

Linear precisions: fp16, int8 (dynamic, per-channel), int8_tensor (dynamic, per-tensor),
int8_static_{minmax,histogram,percentile,smooth}. Table precisions: fp16, int8, int4, int2,
int4_greedy, int2_greedy, and the error-bounded codec's ebc_<relative bound> (``EBC_BOUNDS``:
ebc_0.002 ... ebc_0.05), stored compressed and served as fp32 (``recipes.compressed``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from torch import nn

from quantrec.models.recipes.calibration import ESTIMATORS
from quantrec.models.recipes.compressed import (
    EBC_BOUNDS,
    ErrorBoundedEmbeddingBag,
    ebc_precision,
)
from quantrec.models.recipes.embedding import Fp16EmbeddingBag, RowwiseEmbeddingBag
from quantrec.models.recipes.linear import Fp16Linear, Int8DynamicLinear, Int8StaticLinear

# (low, high), or (low, high, smoothing (in,)) for the smooth recipe.
InputRange = tuple


@dataclass(frozen=True)
class Recipe:
    """How one precision replaces one kind of unit.

    Attributes:
        precision: the name plans use, e.g. "int4_greedy".
        unit_type: the float module it replaces.
        convert: (fp32 unit, input range or None) -> quantized module.
        skeleton: fp32 unit -> an empty quantized module of the same shapes.
        calibration: the range estimator a static recipe needs, else None.
    """

    precision: str
    unit_type: type[nn.Module]
    convert: Callable[[nn.Module, InputRange | None], nn.Module]
    skeleton: Callable[[nn.Module], nn.Module]
    calibration: str | None = None


def _linear_shape(linear: nn.Linear) -> dict[str, int]:
    return {"in_features": linear.in_features, "out_features": linear.out_features}


def _bag_shape(bag: nn.EmbeddingBag) -> dict[str, int]:
    return {"num_embeddings": bag.num_embeddings, "embedding_dim": bag.embedding_dim}


def _linear_recipes() -> list[Recipe]:
    recipes = [
        Recipe(
            "fp16",
            nn.Linear,
            lambda u, _: Fp16Linear.from_float(u),
            lambda u: Fp16Linear(**_linear_shape(u)),
        ),
        Recipe(
            "int8",
            nn.Linear,
            lambda u, _: Int8DynamicLinear.from_float(u),
            lambda u: Int8DynamicLinear(**_linear_shape(u)),
        ),
        Recipe(
            "int8_tensor",
            nn.Linear,
            lambda u, _: Int8DynamicLinear.from_float(u, per_channel=False),
            lambda u: Int8DynamicLinear(**_linear_shape(u), per_channel=False),
        ),
    ]
    for method in (*ESTIMATORS, "smooth"):
        recipes.append(
            Recipe(
                f"int8_static_{method}",
                nn.Linear,
                partial(_convert_static, calibration=method),
                lambda u, m=method: Int8StaticLinear(**_linear_shape(u), calibration=m),
                calibration=method,
            )
        )
    return recipes


def _convert_static(unit: nn.Module, input_range: InputRange | None, *, calibration: str):
    if input_range is None:
        raise ValueError(
            f"int8_static_{calibration} needs the unit's calibrated input range; pass "
            "calibration=<Batch> to apply_precision_plan"
        )
    low, high, *smoothing = input_range
    return Int8StaticLinear.from_float(
        unit,
        calibration=calibration,
        input_range=(low, high),
        smoothing=smoothing[0] if smoothing else None,
    )


def _table_recipes() -> list[Recipe]:
    recipes = [
        Recipe(
            "fp16",
            nn.EmbeddingBag,
            lambda u, _: Fp16EmbeddingBag.from_float(u),
            lambda u: Fp16EmbeddingBag(**_bag_shape(u)),
        ),
        Recipe(
            "int8",
            nn.EmbeddingBag,
            lambda u, _: RowwiseEmbeddingBag.from_float(u, bits=8),
            lambda u: RowwiseEmbeddingBag(**_bag_shape(u), bits=8),
        ),
    ]
    for bits in (4, 2):
        for greedy in (False, True):
            recipes.append(
                Recipe(
                    f"int{bits}" + ("_greedy" if greedy else ""),
                    nn.EmbeddingBag,
                    lambda u, _, b=bits, g=greedy: RowwiseEmbeddingBag.from_float(
                        u, bits=b, greedy=g
                    ),
                    lambda u, b=bits, g=greedy: RowwiseEmbeddingBag(
                        **_bag_shape(u), bits=b, greedy=g
                    ),
                )
            )
    for bound in EBC_BOUNDS:
        recipes.append(
            Recipe(
                ebc_precision(bound),
                nn.EmbeddingBag,
                lambda u, _, r=bound: ErrorBoundedEmbeddingBag.from_float(u, rel_bound=r),
                lambda u, r=bound: ErrorBoundedEmbeddingBag(**_bag_shape(u), rel_bound=r),
            )
        )
    return recipes


RECIPES: dict[tuple[type[nn.Module], str], Recipe] = {
    (r.unit_type, r.precision): r for r in _linear_recipes() + _table_recipes()
}
LINEAR_PRECISIONS = ("fp32",) + tuple(p for t, p in RECIPES if t is nn.Linear)
TABLE_PRECISIONS = ("fp32",) + tuple(p for t, p in RECIPES if t is nn.EmbeddingBag)
QUANTIZED_TYPES = (
    Fp16Linear,
    Int8DynamicLinear,
    Int8StaticLinear,
    Fp16EmbeddingBag,
    RowwiseEmbeddingBag,
    ErrorBoundedEmbeddingBag,
)
# The table precisions of the error-bounded codec, tightest bound first.
EBC_PRECISIONS = tuple(ebc_precision(bound) for bound in EBC_BOUNDS)

__all__ = [
    "EBC_BOUNDS",
    "EBC_PRECISIONS",
    "ErrorBoundedEmbeddingBag",
    "Fp16EmbeddingBag",
    "Fp16Linear",
    "Int8DynamicLinear",
    "Int8StaticLinear",
    "LINEAR_PRECISIONS",
    "QUANTIZED_TYPES",
    "RECIPES",
    "Recipe",
    "RowwiseEmbeddingBag",
    "TABLE_PRECISIONS",
]
