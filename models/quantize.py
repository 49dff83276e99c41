"""Precision plans applied to a DLRM: which recipe each quantizable unit runs at.

A *precision plan* maps the name of each quantizable unit (every ``nn.Linear`` of the MLPs
and every ``nn.EmbeddingBag``, e.g. ``over_arch.mlp.0`` or ``sparse_arch.embedding_bags.3``)
to a precision name of ``models.recipes`` ("fp32", "int8", "int4_greedy",
"int8_static_histogram", ...). ``build_variant(model, "int8")`` is the plan where every unit
is int8. Static recipes are calibrated on a ``Batch`` passed as ``calibration``: forward
hooks record each linear's inputs on the fp32 model and a range estimator picks the range.

Quantized modules keep only plain tensors in their state_dict, so artifacts load with
``torch.load(weights_only=True)``; the kernels' packed weights are rebuilt on load.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from quantrec.models.batch import Batch
from quantrec.models.codec import CodecError
from quantrec.models.dlrm import DLRM
from quantrec.models.recipes import (
    LINEAR_PRECISIONS,
    QUANTIZED_TYPES,
    RECIPES,
    TABLE_PRECISIONS,
    ErrorBoundedEmbeddingBag,
    Fp16Linear,
    Int8DynamicLinear,
    Int8StaticLinear,
    Recipe,
)
from quantrec.models.recipes.calibration import ESTIMATORS, smooth_calibration

PRECISIONS = tuple(dict.fromkeys(LINEAR_PRECISIONS + TABLE_PRECISIONS))
_FLOAT_TYPES = (nn.Linear, nn.EmbeddingBag)
_LINEAR_TYPES = (nn.Linear, Fp16Linear, Int8DynamicLinear, Int8StaticLinear)

__all__ = [
    "Int8DynamicLinear",
    "PRECISIONS",
    "apply_precision_plan",
    "assemble_variant",
    "build_skeleton",
    "build_variant",
    "calibrate_input_ranges",
    "convert_unit",
    "float_state_dict",
    "model_bytes",
    "precision_plan",
    "quantizable_units",
    "quantize_int8",
    "serving_bytes",
    "uniform_plan",
    "unit_precision",
]


def unit_precision(module: nn.Module) -> str:
    """The precision name of one unit ("fp32" for a float ``nn.Linear`` / ``nn.EmbeddingBag``)."""
    return "fp32" if type(module) in _FLOAT_TYPES else module.precision


def quantizable_units(model: nn.Module) -> dict[str, nn.Module]:
    """Name -> module of every unit a plan can assign a precision to, in module order."""
    kinds = _FLOAT_TYPES + QUANTIZED_TYPES
    return {name: m for name, m in model.named_modules() if isinstance(m, kinds)}


def precision_plan(model: nn.Module) -> dict[str, str]:
    """Name -> current precision of every unit (what an artifact records)."""
    return {name: unit_precision(m) for name, m in quantizable_units(model).items()}


def uniform_plan(model: nn.Module, precision: str) -> dict[str, str]:
    """The plan that puts every unit of ``model`` at ``precision``."""
    _check_precision(precision)
    plan = {name: precision for name in quantizable_units(model)}
    for name, unit in quantizable_units(model).items():
        if precision != unit_precision(unit):
            _recipe(name, unit, precision)  # raises if this kind of unit lacks the precision
    return plan


def calibrate_input_ranges(
    model: DLRM,
    calibration: Batch,
    *,
    units: list[str],
    methods: list[str],
    batch_size: int = 8192,
) -> dict[tuple[str, str], tuple[float, float]]:
    """(unit, method) -> input range (low, high) of each named linear of the fp32 ``model``;
    for "smooth", (low, high, smoothing (in,)) (see ``models.recipes.calibration``).

    Inputs are recorded with forward pre-hooks while ``model`` scores ``calibration`` in
    slices of ``batch_size``; every method of ``models.recipes.calibration.ESTIMATORS`` then
    reads the same recorded values.
    """
    known = {*ESTIMATORS, "smooth"}
    unknown = sorted(set(methods) - known)
    if unknown:
        raise ValueError(f"unknown calibration methods {unknown}; expected {sorted(known)}")
    seen: dict[str, list[Tensor]] = {name: [] for name in units}
    hooks = [
        model.get_submodule(name).register_forward_pre_hook(
            lambda _m, args, name=name: seen[name].append(args[0].detach().clone())
        )
        for name in units
    ]
    was_training = model.training
    try:
        model.eval()
        with torch.inference_mode():
            for start in range(0, len(calibration), batch_size):
                model(calibration.slice(start, start + batch_size))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    ranges = {}
    for name, parts in seen.items():
        values = torch.cat(parts)
        for method in methods:
            if method == "smooth":
                weight = model.get_submodule(name).weight
                ranges[(name, method)] = smooth_calibration(values, weight)
            else:
                ranges[(name, method)] = ESTIMATORS[method](values)
    return ranges


def apply_precision_plan(
    model: DLRM,
    plan: Mapping[str, str],
    *,
    calibration: Batch | None = None,
    input_ranges: Mapping[tuple[str, str], tuple[float, float]] | None = None,
) -> DLRM:
    """A quantized copy of an fp32 ``model``, in eval mode; ``model`` is left untouched.

    Args:
        plan: unit name -> precision, one entry per unit of ``quantizable_units(model)``.
        calibration: rows whose fp32 activations set the ranges of static units (needed
            when the plan has an ``int8_static_*`` unit and ``input_ranges`` lacks it).
        input_ranges: (unit, method) -> (low, high), as from ``calibrate_input_ranges``.
    """
    units = _checked_units(model, plan)
    ranges = dict(input_ranges or {})
    todo = {n: _recipe(n, units[n], p) for n, p in plan.items() if p != unit_precision(units[n])}
    needed = [(name, r.calibration) for name, r in todo.items() if r.calibration]
    missing = [key for key in needed if key not in ranges]
    if missing:
        if calibration is None:
            raise ValueError(
                f"units {sorted({n for n, _ in missing})} use static recipes; pass "
                "calibration=<Batch> (recent rows) to apply_precision_plan"
            )
        ranges.update(
            calibrate_input_ranges(
                model,
                calibration,
                units=sorted({n for n, _ in missing}),
                methods=sorted({m for _, m in missing}),
            )
        )
    converted = {
        name: convert_unit(name, units[name], recipe, ranges.get((name, recipe.calibration)))
        for name, recipe in todo.items()
    }
    return _copy_with(model, converted, share_unreplaced=False)


def convert_unit(
    name: str, unit: nn.Module, recipe: Recipe, input_range: tuple | None
) -> nn.Module:
    """``recipe.convert(unit, input_range)``; a table the codec refuses (NaN, inf) is named."""
    try:
        return recipe.convert(unit, input_range)
    except CodecError as err:
        raise CodecError(f"unit {name!r} at {recipe.precision}: {err}") from err


def build_skeleton(model: DLRM, plan: Mapping[str, str]) -> DLRM:
    """A copy of ``model`` with empty modules of ``plan``'s precisions, for loading weights.

    Static units get a placeholder input range: load the artifact's state_dict next.
    """
    units = _checked_units(model, plan)
    empty = {
        name: _recipe(name, units[name], p).skeleton(units[name])
        for name, p in plan.items()
        if p != unit_precision(units[name])
    }
    return _copy_with(model, empty, share_unreplaced=False)


def assemble_variant(model: DLRM, modules: Mapping[str, nn.Module]) -> DLRM:
    """``model`` with the named units replaced by ready ``modules``, for scoring only.

    Unreplaced units are *shared* with ``model`` (not copied, and put in eval mode with the
    result), so assembling the many candidates of a search costs no table copies; do not
    train the result.
    """
    return _copy_with(model, dict(modules), share_unreplaced=True)


def quantize_int8(model: DLRM) -> DLRM:
    """Every MLP linear as int8 dynamic, every table row-wise int8; a copy in eval mode."""
    return apply_precision_plan(model, uniform_plan(model, "int8"))


def build_variant(model: DLRM, precision: str, *, calibration: Batch | None = None) -> DLRM:
    """The model with every unit at ``precision``: an eval-mode copy, ``model`` untouched."""
    return apply_precision_plan(model, uniform_plan(model, precision), calibration=calibration)


def float_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The state of ``model`` under fp32 names, dequantizing quantized units.

    Lets a quantized champion warm-start an fp32 challenger.
    """
    state: dict[str, Tensor] = {}
    quantized = {n: m for n, m in quantizable_units(model).items() if unit_precision(m) != "fp32"}
    for name, tensor in model.state_dict().items():
        if name.rpartition(".")[0] not in quantized:
            state[name] = tensor
    for name, unit in quantized.items():
        state[f"{name}.weight"] = unit.dequantized_weight()
        if isinstance(unit, _LINEAR_TYPES):
            state[f"{name}.bias"] = unit.bias
    return state


def model_bytes(model: nn.Module) -> int:
    """Bytes of the tensors in ``model.state_dict()``: what an artifact's weights hold.

    For every recipe but the error-bounded codec's (``ebc_*``) that is also what serving
    holds in memory; an ``ebc_*`` table stores its encoded bytes and serves its decoded fp32
    table (``serving_bytes``). The precision search counts these stored bytes."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def serving_bytes(model: nn.Module) -> int:
    """Bytes the model holds in memory to serve: ``model_bytes``, except that an
    error-bounded-compressed table counts its decoded float32 table, not its stored bytes."""
    total = model_bytes(model)
    for unit in quantizable_units(model).values():
        if isinstance(unit, ErrorBoundedEmbeddingBag):
            total += unit.serving_bytes() - unit.stored_bytes()
    return total


def _copy_with(model: DLRM, replacements: dict[str, nn.Module], *, share_unreplaced: bool) -> DLRM:
    units = quantizable_units(model)
    shared = units if share_unreplaced else {n: units[n] for n in replacements}
    # Pre-seeding deepcopy's memo makes it reuse these units instead of copying their tables.
    memo = {id(unit): unit for unit in shared.values()}
    variant = copy.deepcopy(model, memo).eval()
    for name, module in replacements.items():
        parent_name, _, child = name.rpartition(".")
        setattr(variant.get_submodule(parent_name), child, module)
    if not share_unreplaced:
        variant.requires_grad_(False)
    return variant


def _checked_units(model: DLRM, plan: Mapping[str, str]) -> dict[str, nn.Module]:
    units = quantizable_units(model)
    if set(plan) != set(units):
        raise ValueError(
            f"precision plan must name every unit: missing {sorted(set(units) - set(plan))}, "
            f"unknown {sorted(set(plan) - set(units))}"
        )
    for name, precision in plan.items():
        _check_precision(precision)
        current = unit_precision(units[name])
        if current != "fp32" and precision != current:
            raise ValueError(f"unit {name!r} is already {current}; apply plans to the fp32 model")
    return units


def _recipe(name: str, unit: nn.Module, precision: str) -> Recipe:
    recipe = RECIPES.get((type(unit), precision))
    if recipe is None:
        kind = "linear" if isinstance(unit, nn.Linear) else "table"
        options = LINEAR_PRECISIONS if kind == "linear" else TABLE_PRECISIONS
        raise ValueError(
            f"unit {name!r} is a {kind}; precision {precision!r} does not apply to it "
            f"(expected one of {list(options)})"
        )
    return recipe


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {list(PRECISIONS)}")
