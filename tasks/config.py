"""The one typed configuration of quantrec, loaded from one TOML file.

Every default lives here, documented once, and ``quantrec config`` prints the effective
values. A file only lists what it changes; unknown keys are refused so a typo cannot pass
silently, and errors name the file, the field and the value.
"""

from __future__ import annotations

import tomllib
from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from quantrec.data_checks.drift import DriftThresholds
from quantrec.models.gate import GatePolicy


class ConfigError(ValueError):
    """The configuration file cannot be read or holds a bad value."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeedConfig(_Section):
    name: Literal["synthetic", "movielens", "criteo", "table"] = Field(
        "synthetic",
        description="Where days come from: the synthetic Criteo-shaped feed, a MovieLens-100K "
        "daily replay, Criteo day files, or your own tables with a mapping spec.",
    )
    scenario: Literal["stable", "gradual", "sudden"] = Field(
        "stable", description="Synthetic drift: none, interest rotating slowly, or a shift."
    )
    shift_date: date | None = Field(
        None, description="Day the sudden scenario shifts (required for scenario 'sudden')."
    )
    seed: int = Field(0, description="Synthetic days are a pure function of (seed, day).")
    rows_per_day: int | None = Field(
        100_000, gt=0, description="Rows of each synthetic day; a row cap for Criteo days."
    )
    path: str | None = Field(
        None,
        description="movielens: a GroupLens folder (u.data, u.user, u.item; default: the "
        "copy inside the recbole wheel); criteo: a day file or glob; table: files overriding "
        "the spec's.",
    )
    spec: str | None = Field(None, description="table: the TOML mapping file.")
    start_date: date | None = Field(
        None, description="criteo: the date of Terabyte file day_0 (day_N is N days later)."
    )
    min_rows: int | None = Field(
        None, ge=0, description="Days with fewer rows are skipped (feed default when unset)."
    )

    @model_validator(mode="after")
    def _feed_has_what_it_needs(self) -> "FeedConfig":
        if self.name == "synthetic" and self.scenario == "sudden" and self.shift_date is None:
            raise ValueError("feed.scenario = 'sudden' needs feed.shift_date (YYYY-MM-DD)")
        if self.name == "table" and not self.spec:
            raise ValueError("feed.name = 'table' needs feed.spec (the TOML mapping file)")
        if self.name == "criteo" and not self.path:
            raise ValueError("feed.name = 'criteo' needs feed.path (a day file or a glob)")
        return self


class ModelConfig(_Section):
    embedding_dim: int = Field(16, gt=0, description="Width of every embedding row.")
    bottom_mlp: tuple[int, ...] = Field(
        (64, 16), description="Dense-feature MLP; its last size must equal embedding_dim."
    )
    top_mlp: tuple[int, ...] = Field((64, 32, 1), description="MLP over the interactions.")

    @model_validator(mode="after")
    def _bottom_ends_at_embedding_dim(self) -> "ModelConfig":
        if not self.bottom_mlp or self.bottom_mlp[-1] != self.embedding_dim:
            raise ValueError(
                f"model.bottom_mlp must end with embedding_dim={self.embedding_dim}, "
                f"got bottom_mlp={list(self.bottom_mlp)}"
            )
        return self


class TrainingConfig(_Section):
    window_days: int = Field(3, gt=0, description="Train on the W days before the run date.")
    epochs: int = Field(1, gt=0, description="Passes over the window.")
    batch_size: int = Field(1024, gt=0, description="Samples per optimizer step.")
    learning_rate: float = Field(
        1e-3, gt=0, description="Adam for the MLPs, and for the tables when the sparse "
        "optimizer is sparse_adam.")
    sparse_optimizer: Literal["rowwise_adagrad", "sparse_adam"] = Field(
        "rowwise_adagrad",
        description="Optimizer of the fused embedding table, updating only the rows a step "
        "touched. rowwise_adagrad (DLRM/TorchRec: one accumulator per row) on 3 synthetic "
        "days of 100k rows: 41k samples/s and next-day NE 0.872, vs 25k samples/s and NE 0.887 "
        "for sparse_adam; on the 26 x 100k-row benchmark of `quantrec bench --train` it "
        "trailed sparse_adam by 1.3 % NE after one epoch.",
    )
    sparse_learning_rate: float | None = Field(
        None, gt=0, description="Table learning rate; None: learning_rate for sparse_adam, "
        "0.02 for rowwise_adagrad (best of a sweep).")
    fused: bool = Field(
        True, description="Train all tables as one storage with one lookup per batch.")
    seed: int = Field(0, description="Seeds initialisation and shuffling: same seed, same weights.")
    threads: int = Field(
        1,
        gt=0,
        description="Intra-op torch threads of every torch stage (training, search, "
        "quantization, scoring). 1 by default: training is many small "
        "ops, and on a shared machine threads that wait on a busy core made it many times "
        "slower; 1 also keeps weights reproducible across machines.",
    )


class SearchConfig(_Section):
    holdout_fraction: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="Share of the window's last day held out of training; the precision "
        "search measures NE deltas and calibrates static recipes on it.",
    )
    reuse_plan: bool = Field(
        True,
        description="Reuse the last searched plan (re-calibrated on fresh rows) instead of "
        "searching every day; a search runs when there is none, when the last searched "
        "variant failed the gate, or when forced (quantrec search).",
    )
    linear_candidates: tuple[str, ...] = Field(
        ("fp16", "int8", "int8_tensor", "int8_static_minmax", "int8_static_histogram",
         "int8_static_percentile", "int8_static_smooth"),
        description="Precisions tried for each MLP layer.",
    )
    table_candidates: tuple[str, ...] = Field(
        ("fp16", "int8", "int4", "int4_greedy", "int2", "int2_greedy"),
        description="Precisions tried for each embedding table (row-wise).",
    )


class EvaluationConfig(_Section):
    batch_size: int = Field(
        8192, gt=0, description="Scoring batch; fixed so a reloaded model reproduces its NE."
    )


# The gate's policy and the drift thresholds are defined (and documented field by field)
# beside the code that applies them; the config embeds them as its [gate] and [drift].
GateConfig = GatePolicy


class RegistryConfig(_Section):
    model_name: str = Field("quantrec-ctr", min_length=1, description="Registered model.")
    experiment: str = Field("quantrec", min_length=1, description="MLflow experiment.")


class QuantrecConfig(_Section):
    feed: FeedConfig = FeedConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    search: SearchConfig = SearchConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    drift: DriftThresholds = DriftThresholds()
    gate: GatePolicy = GatePolicy()
    registry: RegistryConfig = RegistryConfig()

    def with_overrides(self, **sections: dict) -> "QuantrecConfig":
        """A copy with some fields of some sections replaced, validated again."""
        data = self.model_dump()
        for section, values in sections.items():
            data[section].update({k: v for k, v in values.items() if v is not None})
        return _validate(data, source="command-line overrides")


def load_config(path: Path | str | None = None) -> QuantrecConfig:
    """Read ``path`` (TOML); ``None`` gives every default."""
    if path is None:
        return QuantrecConfig()
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as err:
        raise ConfigError(f"config file {path} does not exist") from err
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"config file {path} is not valid TOML: {err}") from err
    return _validate(data, source=str(path))


def _validate(data: dict, *, source: str) -> QuantrecConfig:
    try:
        return QuantrecConfig.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
            f" (got {e.get('input')!r})"
            for e in err.errors()
        )
        raise ConfigError(f"{source}: {problems}") from err
