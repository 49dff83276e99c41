"""Bring your own data: CSV or Parquet files plus a TOML mapping become day partitions.

The mapping (``spec``) names the label (a 0/1 column, or a rule such as ``rating >= 4``),
the event-time column and its unit, and the dense, categorical and multi-valued columns.
Rows are cut into UTC calendar days by their timestamp. ``feeds/table_example.py`` writes
a worked example (``python -m quantrec.feeds.table_example DIR``); its ``EXAMPLE_SPEC`` is the
reference layout of a spec, every key commented.

Values are passed through, not repaired: a NaN count, a null id or a label of 2 reaches the
day checks, which name it. ``dense_fill`` (optional) fills missing dense values instead; text
in a dense column ("12,50", "n/a") is never filled or read as missing: it is an error naming
the file, the column and examples. Rows dated after the current time are refused the same way.

``files`` are read from the spec's folder: every entry must match a file, and a file outside
the folder (an absolute path, ``..``) is refused unless the spec sets ``allow_absolute_paths =
true``. Errors about a file name it but never quote its contents beyond the spec's columns.
The files are read once, on first use, and held in memory: this feed is for tables that fit
in memory; partition larger logs upstream and point ``files`` at one day at a time.
"""

from __future__ import annotations

import operator
import re
import tomllib
from dataclasses import dataclass
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from quantrec.data_checks.schema import CategoricalFeature, FeatureSchema
from quantrec.feeds.base import BaseFeedConfig, FeedError, check_day, require_rows
from quantrec.feeds.table_files import dense_numbers, read_file, refuse_future, spec_files

LABEL = "label"
_OPERATORS = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}
_RULE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|==|!=|>|<)\s*(-?\d+(?:\.\d+)?)\s*$")


@dataclass(frozen=True)
class LabelRule:
    """``<column> <op> <number>``: 1 where the comparison holds, else 0."""

    column: str
    op: str
    threshold: float

    def apply(self, values: pd.Series) -> np.ndarray:
        """int8 0/1 per row; a non-numeric value raises ``FeedError``."""
        numbers = pd.to_numeric(values, errors="coerce")
        if numbers.isna().any():
            bad = values[numbers.isna()].head(3).tolist()
            raise FeedError(
                f"table feed: label rule '{self}' needs numbers in {self.column!r}; found "
                f"{bad}. Clean the column or label the rows upstream (label.column)"
            )
        return _OPERATORS[self.op](numbers.to_numpy(), self.threshold).astype(np.int8)

    def __str__(self) -> str:
        return f"{self.column} {self.op} {self.threshold:g}"


def parse_label_rule(text: str) -> LabelRule:
    """Parse ``<column> <op> <number>`` (op one of >= > <= < == !=); never ``eval``."""
    found = _RULE.match(text)
    if not found:
        raise FeedError(
            f"label rule {text!r} is not '<column> <op> <number>' with op one of "
            f"{list(_OPERATORS)}; e.g. 'rating >= 4'"
        )
    return LabelRule(column=found[1], op=found[2], threshold=float(found[3]))


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LabelSpec(_Strict):
    column: str | None = Field(None, description="A 0/1 column used as the label as it is.")
    rule: str | None = Field(None, description="'<column> <op> <number>', e.g. 'rating >= 4'.")

    @model_validator(mode="after")
    def _one_of(self) -> LabelSpec:
        if (self.column is None) == (self.rule is None):
            raise ValueError("give exactly one of label.column or label.rule")
        if self.rule is not None:
            parse_label_rule(self.rule)
        return self


class TimestampSpec(_Strict):
    column: str
    unit: Literal["s", "ms", "us", "ns", "iso"] = Field("s", description="Epoch unit or iso.")


class FeaturesSpec(_Strict):
    dense: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    multi_valued: tuple[str, ...] = ()
    separator: str = Field("|", min_length=1, description="Splits multi-valued text cells.")
    default_hash_size: int = Field(100_000, gt=0, description="Table rows of unlisted ids.")
    hash_sizes: dict[str, int] = Field(default_factory=dict)
    dense_transform: Literal["log1p", "none"] = "none"
    dense_fill: float | None = Field(None, description="Fill missing dense values; None: keep.")
    user: str | None = Field(None, description="The categorical column naming the user.")
    item: str | None = Field(None, description="The categorical column naming the item.")

    @model_validator(mode="after")
    def _roles_are_categorical(self) -> FeaturesSpec:
        for role in ("user", "item"):
            column = getattr(self, role)
            if column is not None and column not in self.categorical:
                raise ValueError(
                    f"features.{role} column {column!r} is not a categorical "
                    f"feature; categorical: {list(self.categorical)}"
                )
        return self


class TableSpec(_Strict):
    """The mapping file of a table feed (see the module docstring)."""

    files: tuple[str, ...] = Field(min_length=1)
    allow_absolute_paths: bool = Field(
        False,
        description="Read files outside the spec's folder (absolute paths, '..'); off, "
        "so a spec cannot read any file on the machine.",
    )
    label: LabelSpec
    timestamp: TimestampSpec
    features: FeaturesSpec

    def feature_schema(self) -> FeatureSchema:
        f = self.features
        sizes = {
            n: f.hash_sizes.get(n, f.default_hash_size) for n in (*f.categorical, *f.multi_valued)
        }
        categorical = [CategoricalFeature(name=n, hash_size=sizes[n]) for n in f.categorical]
        categorical += [
            CategoricalFeature(name=n, hash_size=sizes[n], multi_valued=True)
            for n in f.multi_valued
        ]
        return FeatureSchema(
            label=LABEL,
            dense=f.dense,
            categorical=tuple(categorical),
            dense_transform=f.dense_transform,
            timestamp=self.timestamp.column,
            user=f.user,
            item=f.item,
        )

    def source_columns(self) -> list[str]:
        f = self.features
        label = self.label.column or parse_label_rule(self.label.rule or "").column
        names = [label, *f.dense, *f.categorical, *f.multi_valued, self.timestamp.column]
        return list(dict.fromkeys(names))


def load_spec(path: Path | str) -> TableSpec:
    """Read and validate a TOML mapping; ``FeedError`` names the file, field and value."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise FeedError(f"table feed: cannot read spec {path}: {err}") from err
    try:
        return TableSpec.model_validate(raw)
    except (ValidationError, FeedError) as err:
        raise FeedError(f"table feed: spec {path} is invalid: {_explain(err)}") from err


def _explain(err: Exception) -> str:
    if not isinstance(err, ValidationError):
        return str(err)
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']} (got {e.get('input')!r})"
        for e in err.errors()
    )


class TableFeed:
    """Day partitions of CSV / Parquet tables described by a TOML spec.

    Args:
        spec: the TOML mapping file.
        path: a file or glob that replaces the spec's ``files`` (relative to the cwd).
        min_rows: days with fewer rows raise ``SmallDayError``.
    """

    def __init__(
        self, *, spec: Path | str, path: Path | str | None = None, min_rows: int = 1
    ) -> None:
        if not isinstance(min_rows, int) or min_rows < 1:
            raise FeedError(f"table feed: min_rows must be an integer >= 1; got {min_rows!r}")
        self.spec_path = Path(spec)
        self.spec = load_spec(self.spec_path)
        self.path, self.min_rows = path, min_rows
        self._schema = self.spec.feature_schema()

    def __repr__(self) -> str:
        return f"TableFeed(spec={str(self.spec_path)!r}, files={[str(f) for f in self.files]})"

    def schema(self) -> FeatureSchema:
        return self._schema

    @cached_property
    def files(self) -> list[Path]:
        """The files to read: ``path`` (relative to the cwd) or the spec's ``files``."""
        return spec_files(
            self.spec.files,
            self.spec_path,
            path=self.path,
            allow_absolute=self.spec.allow_absolute_paths,
        )

    def available_days(self) -> list[date]:
        return sorted(self._rows["_day"].unique())

    def day(self, run_date: date) -> pd.DataFrame:
        """Rows whose timestamp falls on ``run_date`` (UTC), in time order."""
        check_day(run_date, feed="table")
        rows = self._rows
        frame = rows.loc[rows["_day"] == run_date, self._schema.partition_columns]
        require_rows(frame, run_date, min_rows=self.min_rows, source=str(self.spec_path))
        return frame.reset_index(drop=True)

    @cached_property
    def _rows(self) -> pd.DataFrame:
        columns, dense = self.spec.source_columns(), self.spec.features.dense
        frames = [read_file(f, columns, dense=dense) for f in self.files]
        raw = pd.concat(frames, ignore_index=True)
        rows = to_contract(raw, self.spec, source=str(self.spec_path))
        refuse_future(rows, frames, self.files, column=self.spec.timestamp.column)
        return rows


class TableFeedConfig(BaseFeedConfig):
    """``[feed] kind = "table"``: settings of ``TableFeed``."""

    kind: Literal["table"] = "table"
    spec: str = Field(description="The TOML mapping file (feeds/table_example.py writes one).")
    path: str | None = Field(
        None, description="A file or glob replacing the spec's files (relative to the cwd)."
    )
    min_rows: int = Field(1, ge=1, description="Days with fewer rows are skipped.")

    def build(self, run_date: date) -> TableFeed:
        """The feed; its days are the timestamps the tables hold, whatever ``run_date``."""
        return TableFeed(**self.options())


def to_contract(raw: pd.DataFrame, spec: TableSpec, *, source: str) -> pd.DataFrame:
    """Contract columns (plus a ``_day`` column) from raw rows, sorted by time."""
    f, ts = spec.features, spec.timestamp
    out = pd.DataFrame(index=raw.index)
    if spec.label.rule:
        rule = parse_label_rule(spec.label.rule)
        out[LABEL] = rule.apply(raw[rule.column])
    else:
        out[LABEL] = raw[spec.label.column]  # as it is: the day checks judge its values
    for name in f.dense:
        values = dense_numbers(raw[name], source=source, column=name)
        out[name] = (values if f.dense_fill is None else values.fillna(f.dense_fill)).astype(
            np.float32
        )
    for name in f.categorical:
        out[name] = _ids(raw[name])
    for name in f.multi_valued:
        out[name] = _bags(raw[name], f.separator)
    when = _event_time(raw[ts.column], ts.unit, source=source, column=ts.column)
    out[ts.column] = (when - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    out["_day"] = when.dt.date
    return out.iloc[np.argsort(out[ts.column].to_numpy(), kind="stable")]


def _ids(values: pd.Series) -> pd.Series:
    """Ids as they are; whole floats (integers that met a missing value) as nullable Int64."""
    if pd.api.types.is_float_dtype(values):
        whole = values.dropna()
        if (whole == np.floor(whole)).all():
            return values.astype("Int64")
    return values


def _bags(values: pd.Series, separator: str) -> pd.Series:
    """A list of ids per row: text split on ``separator`` (vectorised); empty or null: []."""
    array = pa.array(values, from_pandas=True)
    if pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        lists = array  # a Parquet list column is a bag already
    else:
        text = pc.cast(array, pa.string())
        text = pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)
        lists = pc.split_pattern(text, pattern=separator)
    empty = pa.scalar([], type=lists.type)
    bags = pc.fill_null(lists, empty).to_pandas()  # one numpy array per row, as Parquet reads
    return pd.Series(bags.to_numpy(), index=values.index, dtype=object)


def _event_time(values: pd.Series, unit: str, *, source: str, column: str) -> pd.Series:
    """UTC datetimes; ``FeedError`` quoting the values that do not parse."""
    try:
        if unit == "iso":
            when = pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")
        else:
            when = pd.to_datetime(pd.to_numeric(values, errors="coerce"), unit=unit, utc=True)
    except (ValueError, OverflowError) as err:
        raise FeedError(
            f"table feed ({source}): timestamp column {column!r} with unit {unit!r} "
            f"does not parse: {err}. Fix timestamp.unit in the spec"
        ) from err
    if when.isna().any():
        bad = values[when.isna()].head(3).tolist()
        raise FeedError(
            f"table feed ({source}): timestamp column {column!r} holds {int(when.isna().sum())}"
            f" missing or unparseable value(s), e.g. {bad}; drop or repair those rows "
            f"upstream, or fix timestamp.unit ({unit!r})"
        )
    return when
