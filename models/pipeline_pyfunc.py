"""A multi-stage ranking pipeline as one model artifact and the loader MLflow's
``python_function`` flavour calls for it: tensors and JSON only, never pickled code.

A directory holds:

* ``pipeline.json``: format version, the raw item id column, k, and the stages in order
  (name, how many candidates each keeps, its folder);
* ``schema.json``: the request's ``FeatureSchema`` (every feature any stage reads: the
  ranker's contract);
* ``stages/<i>-<name>/``: each stage's model as a ``models.artifact`` directory
  (``weights.pt`` read with ``weights_only``, ``recipe.json``, ``schema.json``).

A request (``PipelineScorer.predict``) is one row per candidate with every column of the
request schema: a query's user-side columns repeated on each of its candidates, the item
column naming the candidate (what ``models.queries.candidate_frame`` builds). An optional
``query`` column holds several queries in one request (its rows grouped by value, in order
of first appearance). The response is one row per served item: ``query`` (when given),
``item``, ``score`` (the last stage's click probability) and ``rank`` (1-based), best first.

Serving (``serving_model``) reads the tables through ``models.fused`` (one lookup call per
table format; pooled values bit-identical to the per-table lookups) and, when the pipeline
was saved with ``shared_context``, scores each query with the user-side work done once
(``models.pipeline_context.SharedContext``: the same logits up to float rounding). A
pipeline built in process from ``serving_model`` stages serves exactly what the loaded one
serves. This module does not import MLflow; MLflow imports it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from torch import nn

from quantrec.data_checks.schema import FeatureSchema
from quantrec.models.artifact import ArtifactError, load_model, save_model
from quantrec.models.batch import batch_from_frame
from quantrec.models.fused import fuse_lookups
from quantrec.models.pipeline import PipelineError, RankingPipeline, Stage
from quantrec.models.pipeline_context import SharedContext

PIPELINE_FORMAT = 1
PIPELINE_FILE = "pipeline.json"
SCHEMA_FILE = "schema.json"
STAGES_DIR = "stages"
QUERY_COLUMN = "query"  # optional request column: several queries in one request
LOADER_MODULE = "quantrec.models.pipeline_pyfunc"


@dataclass(frozen=True)
class SavedStage:
    """What ``save_pipeline`` needs of one stage beyond its model: its label for the
    recipe (a precision name such as "int8", or e.g. "searched"), its contract."""

    stage: Stage
    precision: str
    schema: FeatureSchema


def save_pipeline(
    stages: Sequence[SavedStage],
    directory: Path,
    *,
    schema: FeatureSchema,
    item_column: str,
    shared_context: bool = False,
) -> Path:
    """Write the pipeline of ``stages`` (in order) into ``directory``; returns it.

    Args:
        stages: each a ``models.artifact``-savable DLRM with its precision label and schema.
        schema: the request's contract; every stage's features must be among its columns.
        item_column: the request column holding the raw item ids.
        shared_context: serve each stage under ``SharedContext`` (``serving_model``).

    Raises:
        PipelineError: the stages do not form a pipeline, a stage reads a feature the
            request schema lacks, or ``item_column`` is not a categorical feature of it.
    """
    pipeline = RankingPipeline([s.stage for s in stages])  # checks keeps and contracts
    if item_column not in schema.categorical_names:
        raise PipelineError(
            f"the item column {item_column!r} is not a categorical feature of the request "
            f"schema ({list(schema.categorical_names)})"
        )
    for saved in stages:
        extra = [n for n in saved.schema.categorical_names if n not in schema.categorical_names]
        if extra:
            raise PipelineError(
                f"stage {saved.stage.name!r} reads features {extra} the request schema lacks"
            )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    described = []
    for i, saved in enumerate(stages):
        folder = f"{STAGES_DIR}/{i}-{_safe(saved.stage.name)}"
        save_model(
            saved.stage.model, directory / folder, schema=saved.schema, precision=saved.precision
        )
        described.append({"name": saved.stage.name, "keep": saved.stage.keep, "folder": folder})
    (directory / SCHEMA_FILE).write_text(schema.to_json())
    recipe = {
        "format_version": PIPELINE_FORMAT,
        "name": pipeline.name,
        "item_column": item_column,
        "k": pipeline.k,
        "shared_context": shared_context,
        "stages": described,
    }
    (directory / PIPELINE_FILE).write_text(json.dumps(recipe, indent=2))
    return directory


@dataclass
class LoadedPipeline:
    """A pipeline rebuilt from its directory, with what describes it."""

    pipeline: RankingPipeline
    schema: FeatureSchema
    item_column: str
    recipe: dict


def load_pipeline(directory: Path, *, fused: bool = True) -> LoadedPipeline:
    """Rebuild the pipeline saved in ``directory``; ``fused``: tables read through
    ``models.fused`` (the same pooled values, fewer lookup calls)."""
    directory = Path(directory)
    path = directory / PIPELINE_FILE
    if not path.is_file() or not (directory / SCHEMA_FILE).is_file():
        raise ArtifactError(
            f"pipeline {directory} lacks {PIPELINE_FILE} or {SCHEMA_FILE}; was it written by "
            "save_pipeline?"
        )
    recipe = json.loads(path.read_text())
    if recipe.get("format_version") != PIPELINE_FORMAT:
        raise ArtifactError(
            f"pipeline {directory} has format_version {recipe.get('format_version')}; this "
            f"reader handles {PIPELINE_FORMAT}"
        )
    shared = bool(recipe.get("shared_context", False))
    stages = []
    for entry in recipe["stages"]:
        model = load_model(directory / entry["folder"]).model
        model = serving_model(model, shared_context=shared) if fused else model
        stages.append(Stage(entry["name"], model, entry["keep"]))
    return LoadedPipeline(
        pipeline=RankingPipeline(stages),
        schema=FeatureSchema.from_json((directory / SCHEMA_FILE).read_text()),
        item_column=recipe["item_column"],
        recipe=recipe,
    )


def serving_model(model: nn.Module, *, shared_context: bool) -> nn.Module:
    """``model`` as a served stage scores: fused lookups, under ``SharedContext`` if asked."""
    fused = fuse_lookups(model)
    return SharedContext(fused) if shared_context else fused


class PipelineScorer:
    """The top k items with scores for requests of candidate rows (module docstring)."""

    def __init__(self, loaded: LoadedPipeline) -> None:
        self.loaded = loaded

    def predict(self, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        """Columns [query,] item, score, rank: each query's served list, best first."""
        frame = pd.DataFrame(model_input)
        schema, item = self.loaded.schema, self.loaded.item_column
        if item not in frame.columns:
            raise PipelineError(
                f"the request lacks the item column {item!r}; it has {list(frame.columns)}"
            )
        if schema.label not in frame.columns:
            frame = frame.assign(**{schema.label: np.zeros(len(frame), dtype=np.int8)})
        if QUERY_COLUMN not in frame.columns:
            return self._rank(frame)
        answers = [
            self._rank(rows).assign(**{QUERY_COLUMN: key})
            for key, rows in frame.groupby(QUERY_COLUMN, sort=False)
        ]
        if not answers:
            raise PipelineError("the request has no candidates to rank")
        served = pd.concat(answers, ignore_index=True)
        return served[[QUERY_COLUMN, "item", "score", "rank"]]

    def _rank(self, rows: pd.DataFrame) -> pd.DataFrame:
        rows = rows.reset_index(drop=True)
        batch = batch_from_frame(rows, self.loaded.schema)
        items = rows[self.loaded.item_column].to_numpy()
        return self.loaded.pipeline.rank(batch, items).to_frame()

    def get_raw_model(self) -> LoadedPipeline:
        return self.loaded


def _safe(name: str) -> str:
    """A stage name as a folder name (e.g. "narrow-d4", "int8@200" -> "int8-200")."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name) or "stage"


def _load_pyfunc(data_path: str) -> PipelineScorer:
    return PipelineScorer(load_pipeline(Path(data_path)))
