"""The data contract: what one day partition holds, saved with every model.

A day is one Parquet partition with a binary ``label`` column, dense float columns and
categorical id columns (one id per row, or a bag of ids per row stored as a Parquet
``list<int64>`` / ``list<string>`` column when the feature is ``multi_valued``), and
optionally an event-time column (``timestamp``) the checks use to spot rows of other days.
Categorical ids are hashed into a table of ``hash_size`` rows, so the schema fixes each
embedding table's size; a model trained on one schema scores any frame that carries the
same columns.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class SchemaError(ValueError):
    """A frame or a schema file does not match the data contract."""


class CategoricalFeature(BaseModel):
    """One categorical feature: a column of ids hashed into ``hash_size`` embedding rows."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    hash_size: int = Field(gt=0, description="Rows of the embedding table the ids hash into.")
    multi_valued: bool = Field(
        False,
        description="A bag of ids per row (a list column; EmbeddingBag pools it), not one id.",
    )


class FeatureSchema(BaseModel):
    """Column names, kinds and hash sizes of one feed.

    Invariants: column names are unique; ``label`` holds 0/1; dense columns are numeric;
    categorical columns hold integer or string ids.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    label: str = "label"
    dense: tuple[str, ...]
    categorical: tuple[CategoricalFeature, ...]
    dense_transform: Literal["log1p", "none"] = Field(
        "log1p",
        description="log1p(max(x, 0)) as the DLRM reference does for count features, or none.",
    )
    timestamp: str | None = Field(
        None,
        description="Event-time column (epoch seconds or datetime, UTC); not a model input. "
        "None: partitions carry no event time and the day checks on it are skipped.",
    )
    user: str | None = Field(
        None,
        description="The categorical column that names the user (slices: new vs "
        "returning users); None: the feed has no user column.",
    )
    item: str | None = Field(
        None,
        description="The categorical column that names the item (slices: head vs "
        "tail items); None: the feed has no item column.",
    )

    @model_validator(mode="after")
    def _names_are_unique(self) -> FeatureSchema:
        names = self.partition_columns
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise SchemaError(f"schema column names must be unique; repeated: {duplicates}")
        if not self.categorical:
            raise SchemaError("schema needs at least one categorical feature (got 0)")
        for role in ("user", "item"):
            column = getattr(self, role)
            if column is not None and column not in self.categorical_names:
                raise SchemaError(
                    f"schema {role} column {column!r} is not a categorical "
                    f"feature; categorical: {self.categorical_names}"
                )
        return self

    @property
    def columns(self) -> list[str]:
        """Every column a partition must hold: label, dense, then categorical."""
        return [self.label, *self.dense, *self.categorical_names]

    @property
    def partition_columns(self) -> list[str]:
        """``columns`` plus the timestamp column, if the schema names one."""
        return [*self.columns, *([self.timestamp] if self.timestamp else [])]

    @property
    def multi_valued_names(self) -> list[str]:
        return [c.name for c in self.categorical if c.multi_valued]

    @property
    def categorical_names(self) -> list[str]:
        return [c.name for c in self.categorical]

    @property
    def hash_sizes(self) -> list[int]:
        return [c.hash_size for c in self.categorical]

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str) -> FeatureSchema:
        return cls.model_validate(json.loads(text))

    def save(self, path: Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: Path) -> FeatureSchema:
        path = Path(path)
        try:
            return cls.from_json(path.read_text())
        except (OSError, ValueError) as err:
            raise SchemaError(f"cannot read feature schema {path}: {err}") from err
