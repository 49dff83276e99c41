"""Model artifacts that hold data only: tensors and JSON, never pickled code.

A directory holds:

* ``weights.pt``: ``torch.save`` of a plain ``dict[str, Tensor]`` (the state_dict), read
  back with ``torch.load(weights_only=True)``;
* ``recipe.json``: format version, the DLRM architecture kwargs, the precision label, the
  per-unit precision plan that rebuilds the module before the tensors are loaded, and (when
  given) the full ``PrecisionPlan`` with its measurements under ``"plan"``;
* ``schema.json``: the ``FeatureSchema`` the model scores;
* ``optimizer.pt`` (fp32 only, when the model carries it): the optimizers' state of the run
  that trained the weights (``DLRM.optimizer_state``), tensors and numbers only, read back
  with ``weights_only=True``: continual training resumes it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from quantrec.data_checks.schema import FeatureSchema, SchemaError
from quantrec.models.dlrm import DLRM
from quantrec.models.plan import PrecisionPlan
from quantrec.models.quantize import PRECISIONS, build_skeleton, precision_plan, uniform_plan

FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.pt"
RECIPE_FILE = "recipe.json"
SCHEMA_FILE = "schema.json"
OPTIMIZER_FILE = "optimizer.pt"


class ArtifactError(ValueError):
    """An artifact directory is incomplete, of another format version, or inconsistent."""


@dataclass
class LoadedModel:
    """A model rebuilt from an artifact, in eval mode, with what describes it."""

    model: DLRM
    schema: FeatureSchema
    precision: str
    recipe: dict[str, Any]

    @property
    def plan(self) -> PrecisionPlan:
        """The recorded plan with its measurements, or one built from the per-unit precisions."""
        if "plan" in self.recipe:
            return PrecisionPlan.from_json(json.dumps(self.recipe["plan"]))
        return PrecisionPlan.from_precisions(self.recipe["precision_plan"])


def save_model(
    model: DLRM,
    directory: Path,
    *,
    schema: FeatureSchema,
    precision: str,
    plan: PrecisionPlan | None = None,
) -> Path:
    """Write ``model`` as an artifact into ``directory`` (created if needed); returns it.

    Args:
        model: an fp32 DLRM, or one built by ``models.quantize`` / ``PrecisionPlan.apply``.
        schema: the data contract the model was trained on; must match its inputs.
        precision: the variant's label. A precision name ("fp32", "int8", "fp16", ...) must
            describe every unit; any other label ("searched") names a mixed plan.
        plan: the plan with its measurements, recorded in recipe.json; its precisions must
            be the model's.
    """
    _check_schema_matches(model, schema)
    units = precision_plan(model)
    if precision in PRECISIONS:
        _check_uniform(model, units, precision)
    if plan is not None and plan.precisions() != units:
        differ = sorted(n for n in units if plan.precisions().get(n) != units[n])
        raise ArtifactError(f"plan does not describe the model: units {differ} differ")
    recipe = {
        "format_version": FORMAT_VERSION,
        "architecture": model.architecture(),
        "precision": precision,
        "precision_plan": units,
        "torch_version": torch.__version__,
    }
    if plan is not None:
        recipe["plan"] = json.loads(plan.to_json())
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = {name: t.detach().clone() for name, t in model.state_dict().items()}
    _replace(directory / WEIGHTS_FILE, lambda tmp: torch.save(weights, tmp))
    _replace(directory / RECIPE_FILE, lambda tmp: tmp.write_text(json.dumps(recipe, indent=2)))
    _replace(directory / SCHEMA_FILE, lambda tmp: tmp.write_text(schema.to_json()))
    state = getattr(model, "optimizer_state", None)
    if precision == "fp32" and state is not None:
        _replace(directory / OPTIMIZER_FILE, lambda tmp: torch.save(state, tmp))
    return directory


def load_model(directory: Path) -> LoadedModel:
    """Rebuild the model saved in ``directory``; outputs match the saved model's bit for bit."""
    directory = Path(directory)
    missing = [f for f in (WEIGHTS_FILE, RECIPE_FILE, SCHEMA_FILE) if not (directory / f).is_file()]
    if missing:
        raise ArtifactError(f"artifact {directory} lacks {missing}; was it written by save_model?")
    recipe = json.loads((directory / RECIPE_FILE).read_text())
    version = recipe.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"artifact {directory} has format_version {version}; "
            f"this reader handles {FORMAT_VERSION}"
        )
    try:
        schema = FeatureSchema.from_json((directory / SCHEMA_FILE).read_text())
    except ValueError as err:
        raise ArtifactError(f"artifact {directory} has an unreadable schema: {err}") from err
    weights = torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    # The skeleton's random init is overwritten below; fork the RNG so loading a model does
    # not shift the caller's seeded random stream.
    with torch.random.fork_rng(devices=[]):
        model = build_skeleton(DLRM(**recipe["architecture"]), recipe["precision_plan"])
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise ArtifactError(f"artifact {directory}: weights do not fit the recipe: {err}") from err
    if (directory / OPTIMIZER_FILE).is_file():
        model.optimizer_state = torch.load(
            directory / OPTIMIZER_FILE, map_location="cpu", weights_only=True
        )
    return LoadedModel(
        model=model.eval(), schema=schema, precision=recipe["precision"], recipe=recipe
    )


def _check_uniform(model: DLRM, units: dict[str, str], precision: str) -> None:
    try:
        expected = uniform_plan(model, precision)
    except ValueError as err:
        raise ArtifactError(f"precision {precision!r} does not describe the model: {err}") from err
    if units != expected:
        others = sorted(name for name in units if units[name] != precision)
        raise ArtifactError(
            f"precision {precision!r} does not describe the model: units {others} are at "
            f"{sorted({units[n] for n in others})}; quantize with build_variant first, or "
            "label a mixed plan (e.g. 'searched')"
        )


def _check_schema_matches(model: DLRM, schema: FeatureSchema) -> None:
    arch = model.architecture()
    pairs = {
        "dense feature count": (arch["num_dense"], len(schema.dense)),
        "categorical features": (arch["feature_names"], schema.categorical_names),
        "hash sizes": (arch["table_sizes"], schema.hash_sizes),
    }
    for what, (model_value, schema_value) in pairs.items():
        if model_value != schema_value:
            raise SchemaError(f"{what} differ: model has {model_value}, schema has {schema_value}")


def _replace(path: Path, write) -> None:  # type: ignore[no-untyped-def]
    """Write via a temporary file and rename, so a crash never leaves a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)
