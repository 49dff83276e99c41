"""The one typed configuration of quantrec, loaded from one TOML file.

Every default is documented once, here or beside the code that applies it (each feed's
options in its module in ``feeds/``, the gate's policy, the drift thresholds), and
``quantrec config`` prints the effective values. A file only lists what it changes;
unknown keys are refused so a typo cannot pass silently (a feed option another feed takes
included), and errors name the file, the field and the value.
"""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from quantrec.data_checks.drift import DriftThresholds
from quantrec.feeds import FEED_CONFIGS, FEED_KINDS, FeedConfig, SyntheticFeedConfig
from quantrec.models.gate import GatePolicy
from quantrec.models.search import LINEAR_CANDIDATES, TABLE_CANDIDATES
from quantrec.models.train import DEFAULT_MAX_EPOCHS, DEFAULT_ROWWISE_ADAGRAD_LR


class ConfigError(ValueError):
    """The configuration file cannot be read or holds a bad value."""


# A year of days: a larger window reads (and, for the synthetic feed, generates) that many
# days on every run; 100,000 days ran for ever instead of being refused.
MAX_WINDOW_DAYS = 366
# Registered model names go into MLflow filter strings (name='...'): a quote or a
# backtick would change the query, so names keep to MLflow's own URL-safe characters.
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(_Section):
    embedding_dim: int | None = Field(
        None,
        gt=0,
        description="Width of every embedding row; None: from the training rows "
        "and the vocabulary (models.sizing.auto_model_size: the power of two nearest "
        "1.6 * rows ** 0.2 within [4, 32], e.g. 8 for 2,000 rows, 16 for 280k, 32 from about "
        "1M rows). The feed's hash sizes are kept.",
    )
    bottom_mlp: tuple[int, ...] = Field(
        (64, 16),
        description="Dense-feature MLP; its last size is the embedding width (it "
        "must equal embedding_dim when that is set; with embedding_dim None it is replaced by "
        "the width chosen from the data).",
    )
    top_mlp: tuple[int, ...] = Field((64, 32, 1), description="MLP over the interactions.")

    @model_validator(mode="after")
    def _bottom_ends_at_embedding_dim(self) -> ModelConfig:
        if not self.bottom_mlp:
            raise ValueError("model.bottom_mlp needs at least its output layer, got []")
        if self.embedding_dim is not None and self.bottom_mlp[-1] != self.embedding_dim:
            raise ValueError(
                f"model.bottom_mlp must end with embedding_dim={self.embedding_dim}, "
                f"got bottom_mlp={list(self.bottom_mlp)}"
            )
        return self


class TrainingConfig(_Section):
    window_days: int = Field(
        3,
        gt=0,
        le=MAX_WINDOW_DAYS,
        description=f"Train on the W days before the run date (at most {MAX_WINDOW_DAYS}: "
        "every day of the window is read and trained on each run).",
    )
    mode: Literal["continual", "window"] = Field(
        "continual",
        description="continual: continue the latest fp32 parent (promoted or not) on the "
        "days since it last trained (warm start), with a full retrain on the window every "
        "full_retrain_days days, on severe drift, or when days are missing; window: train "
        "from scratch on the whole window every day.",
    )
    full_retrain_days: int = Field(
        30,
        gt=0,
        description="continual: retrain from scratch at least this often (days). 30: on 10 "
        "synthetic days the continual model beat the logistic baseline on 9/10 days (7: 8/10, "
        "the day-8 retrain loses a day); on 14 MovieLens days 11/14 (7: 10/14) "
        "(benchmarks/quality.py).",
    )
    epochs: int | None = Field(
        None,
        gt=0,
        description="Passes over the training days; None: early stopping on the "
        "held-out rows (the best epoch's weights kept), at most max_epochs.",
    )
    max_epochs: int = Field(
        DEFAULT_MAX_EPOCHS, gt=0, description="Most passes with early stopping."
    )
    batch_size: int | None = Field(
        None,
        gt=0,
        description="Samples per optimizer step; None: from the rows "
        "(models.sizing.auto_batch_size: the power of two nearest 2 * sqrt(rows), in "
        "[32, 8192]).",
    )
    learning_rate: float | None = Field(
        None,
        gt=0,
        description="Adam for the MLPs, and for the tables when the sparse optimizer is "
        "sparse_adam; None: 3e-3 * sqrt(batch_size / 1024) (models.sizing).",
    )
    embedding_weight_decay: float = Field(
        0.0, ge=0, description="Row-wise Adagrad's lazy L2 on the embedding rows."
    )
    sparse_optimizer: Literal["rowwise_adagrad", "sparse_adam"] = Field(
        "rowwise_adagrad",
        description="Optimizer of the fused embedding table, updating only the rows a step "
        "touched. rowwise_adagrad (DLRM/TorchRec: one accumulator per row) on 3 synthetic "
        "days of 100k rows: 41k samples/s and next-day NE 0.872, vs 25k samples/s and NE 0.887 "
        "for sparse_adam; on the 26 x 100k-row benchmark of `quantrec bench --train` it "
        "trailed sparse_adam by 1.3 % NE after one epoch.",
    )
    sparse_learning_rate: float | None = Field(
        None,
        gt=0,
        description="Table learning rate; None: learning_rate for sparse_adam, "
        f"{DEFAULT_ROWWISE_ADAGRAD_LR} for rowwise_adagrad (models.train).",
    )
    fused: bool = Field(
        True, description="Train all tables as one storage with one lookup per batch."
    )
    seed: int = Field(0, description="Seeds initialisation and shuffling: same seed, same weights.")
    threads: int = Field(
        1,
        gt=0,
        description="Intra-op torch threads of every torch stage (training, search, "
        "quantization, scoring). 1 by default: training is many small "
        "ops, and on a shared machine threads that wait on a busy core made it many times "
        "slower; 1 also keeps weights reproducible across machines.",
    )
    nproc_per_node: int = Field(
        1,
        gt=0,
        description="Ranks of the training stage. 1: in the flow's process (train_dlrm, the "
        "path above). More: torchrun --standalone with the tables sharded table-wise across "
        "the ranks (models.distributed, gloo on CPU): fixed epochs (epochs, or 1: no early "
        "stopping), rowwise_adagrad only, a continued run restarts its optimizers at the "
        "scaled rates; the all-to-all bytes per step are logged (train.exchange_bytes_per_step).",
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
        LINEAR_CANDIDATES,
        description="Precisions tried for each MLP layer.",
    )
    table_candidates: tuple[str, ...] = Field(
        TABLE_CANDIDATES,
        description="Precisions tried for each embedding table (row-wise).",
    )
    faithfulness: float | None = Field(
        None,
        ge=0,
        description="Two-sided bound on a plan's relative NE change against its fp32 parent "
        "(0.0005 = 0.05 %): a searched plan is accepted only when the farthest end of the "
        "paired bootstrap interval of that change on the held-out rows is within it (else "
        "its most sensitive units step up), and a reused plan is searched again when its "
        "interval on the day's held-out rows crosses it. Unset: the gate's "
        "quantization_ne_budget_rel (the gate's own rule stays one-sided).",
    )
    reuse_drift_share: float = Field(
        0.75,
        gt=0,
        le=1,
        description="Search again when the reused plan's realised |NE change| against its "
        "fp32 parent on the last run date reached this share of the faithfulness bound.",
    )


class EvaluationConfig(_Section):
    batch_size: int = Field(
        8192, gt=0, description="Scoring batch; fixed so a reloaded model reproduces its NE."
    )


class ValidationConfig(_Section):
    """How far the run date may stray from its training window before validation fails
    (``data_checks.reference.Tolerances``; each bound is relative to the window)."""

    margin: float = Field(
        0.5,
        ge=0,
        description="Share of a dense column's reference range added above its "
        "max (and below its min when it goes negative).",
    )
    range_mostly: float = Field(
        0.99,
        gt=0,
        le=1,
        description="Share of a dense column's rows that must lie in range "
        "(heavy-tailed counts set a few new extremes; a unit change moves most rows).",
    )
    label_rate_factors: tuple[float, float] = Field(
        (0.5, 2.0),
        description="The click rate must lie in [low, high] x the window's. A "
        "real log with few clicks varies more from day to day: widen it, e.g. [0.2, 5.0].",
    )
    row_factors: tuple[float, float] = Field(
        (0.2, 5.0),
        description="Rows of the day within [low x smallest, high x largest] window day.",
    )
    cardinality_factor: float = Field(
        5.0, gt=0, description="Distinct ids of a day at most this times the window's most."
    )
    unique_share_headroom: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Distinct ids / rows of a day may exceed the window's most by this part "
        "of what is left up to 1 (an id flood on a day no larger than the window's).",
    )
    max_duplicate_share: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Share of fully duplicated rows allowed (or twice the window's, if larger).",
    )

    @model_validator(mode="after")
    def _ordered_factors(self) -> ValidationConfig:
        for name in ("label_rate_factors", "row_factors"):
            low, high = getattr(self, name)
            if not 0 <= low <= 1 <= high:
                raise ValueError(
                    f"validation.{name} needs 0 <= low <= 1 <= high; got [{low}, {high}]"
                )
        return self


class RegistryConfig(_Section):
    model_name: str = Field(
        "quantrec-ctr",
        min_length=1,
        description="Registered model: letters, digits, '.', '_' and '-', at most 128.",
    )
    experiment: str = Field("quantrec", min_length=1, description="MLflow experiment.")
    retention: bool = Field(
        True,
        description="After every run date, delete the versions the retention policy does "
        "not keep, with their files (`quantrec gc` does it by hand).",
    )
    keep_days: int = Field(
        30,
        ge=1,
        le=3660,
        description="Run dates whose versions are all kept, counting back from the newest; "
        "the aliased versions, their fp32 parents and versions under review are always kept.",
    )

    @field_validator("model_name")
    @classmethod
    def _safe_model_name(cls, name: str) -> str:
        if not MODEL_NAME.match(name):
            raise ValueError(
                "may hold only letters, digits, '.', '_' and '-' (starting with a letter or "
                "digit, at most 128 characters), e.g. 'quantrec-ctr'"
            )
        return name


class PipelineConfig(_Section):
    """The daily two-stage pipeline plan (``models.pipeline_plan``, after the gate)."""

    enabled: bool = Field(
        False,
        description="Plan, log and register a two-stage pipeline (the smallest passing "
        "low-precision variant filtering for the fp32 parent) as <registry.model_name>-pipeline. "
        "Off by default: it adds timed load runs to every run date (seconds of wall time, "
        "noisy on a shared machine) and a registered pipeline model per run date.",
    )
    k: int = Field(10, ge=1, description="Length of the served list (recall@k, NDCG@k).")
    keeps: tuple[int, ...] = Field(
        (100, 300, 1000),
        min_length=1,
        description="Candidates the filter passes to the ranker, swept; those not below the "
        "catalogue's size are skipped (none left: half the catalogue).",
    )
    queries: int = Field(100, ge=1, description="Users of the run date scored for quality.")
    timing_queries: int = Field(30, ge=1, description="Queries cycled by the timing runs.")
    min_recall: float = Field(
        0.99, gt=0, le=1, description="Least recall@k against single-stage fp32 ranking."
    )
    load_rates: tuple[float, ...] = Field(
        (0.5, 2.0),
        min_length=1,
        description="Offered Poisson rates, as multiples of the single-stage capacity; "
        "percentiles are read at the lowest, queries/s is the best over all.",
    )
    load_rounds: int = Field(1, ge=1, description="Rounds per rate, the order rotated.")
    load_queries: int = Field(20, ge=1, description="Queries per load run.")
    load_seconds: float = Field(3.0, gt=0, description="Bound of each load run (s).")
    shared_context: bool = Field(
        True,
        description="Score each query's candidates with the user-side lookups, dense arch "
        "and dot products done once (models.pipeline_context), in the plan and in the "
        "registered pipeline: faster at thousands of candidates, slower at tens "
        "(quantrec bench --serving; the figures are in the README).",
    )
    item_columns: tuple[str, ...] = Field(
        (),
        description="Item-side columns of a candidate (beside the item id), taken from the "
        "item's last row in the window; the others come from the user's row of the run date. "
        "MovieLens: genres, release_bucket, item_ratings_before, item_positive_rate_before, "
        "days_since_release.",
    )


class ScaleConfig(_Section):
    """Where the work that fans out runs (``tasks.fanout``); the results do not depend on it."""

    task_runner: Literal["sequential", "dask"] = Field(
        "sequential",
        description="'sequential': in the flow's process, in order. 'dask': the precision "
        "search's per-unit sensitivity measurements as tasks on a prefect-dask "
        "DaskTaskRunner (the same plan; needs the [scale] extra).",
    )
    dask_address: str = Field(
        "",
        description="Scheduler of an existing Dask cluster (tcp://host:8786), whose workers "
        "see the same home and code; empty: a LocalCluster started for each search.",
    )
    dask_workers: int = Field(2, ge=1, description="LocalCluster worker processes.")
    dask_threads_per_worker: int = Field(1, ge=1, description="Threads of each worker.")


# The feed, the gate's policy and the drift thresholds are defined (and documented field by
# field) beside the code that applies them; the config embeds them as [feed], [gate], [drift].
class QuantrecConfig(_Section):
    feed: FeedConfig = SyntheticFeedConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    search: SearchConfig = SearchConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    validation: ValidationConfig = ValidationConfig()
    drift: DriftThresholds = DriftThresholds()
    gate: GatePolicy = GatePolicy()
    registry: RegistryConfig = RegistryConfig()
    pipeline: PipelineConfig = PipelineConfig()
    scale: ScaleConfig = ScaleConfig()

    @model_validator(mode="after")
    def _finite_and_gated(self) -> QuantrecConfig:
        # An inf budget passes every check (and is written to JSON as null, which does not
        # load again); a NaN compares false with everything.
        for field, value in _numbers(self.model_dump()):
            if not math.isfinite(value):
                raise ValueError(f"{field} must be a finite number; got {value}")
        if not self.gate.rules:
            raise ValueError(
                "gate.rules is empty: no candidate would be checked before promotion; "
                "remove the key for the default rules or list at least one rule"
            )
        return self

    def with_overrides(self, **sections: dict) -> QuantrecConfig:
        """A copy with some fields of some sections replaced, validated again.

        ``None`` values are ignored; ``feed`` follows ``with_feed`` (its ``kind`` included).
        """
        config = self.with_feed(**sections.pop("feed")) if "feed" in sections else self
        data = config.model_dump()
        for section, values in sections.items():
            data[section].update({k: v for k, v in values.items() if v is not None})
        return _validate(data, source="command-line overrides")

    def with_feed(self, kind: str | None = None, **options: Any) -> QuantrecConfig:
        """A copy reading days from the ``kind`` feed (None: this one) with ``options`` set.

        Switching kind starts from that kind's defaults plus ``options``: the current
        feed's options are not carried over, another feed may not take them. Options set
        to None are ignored (a flag not given on the command line).

        Raises:
            ConfigError: an unknown kind, an option the kind does not take (naming the
                field, the kind and the value), or a value the option refuses.
        """
        given = {name: value for name, value in options.items() if value is not None}
        if kind is None or kind == self.feed.kind:
            feed = {**self.feed.model_dump(), **given}
        else:
            feed = {"kind": kind, **given}
        return _validate({**self.model_dump(), "feed": feed}, source="command-line overrides")


def _numbers(data: Any, prefix: str = "") -> list[tuple[str, float]]:
    """Every float of a dumped config, with its dotted field name."""
    if isinstance(data, dict):
        return [pair for k, v in data.items() for pair in _numbers(v, f"{prefix}{k}.")]
    if isinstance(data, (list, tuple)):
        return [pair for k, v in enumerate(data) for pair in _numbers(v, f"{prefix}{k}.")]
    return [(prefix.rstrip("."), data)] if isinstance(data, float) else []


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
        problems = "; ".join(_problem(e) for e in err.errors())
        raise ConfigError(f"{source}: {problems}") from err


def _problem(error: dict) -> str:
    """One validation error as ``field: what is wrong (got value)``.

    A feed option's location carries the feed's kind as pydantic's union tag
    (``feed.movielens.scenario``); the field is named as the file spells it
    (``feed.scenario``) and the kind said in words.
    """
    loc = [str(part) for part in error["loc"]]
    kind = loc.pop(1) if loc[:1] == ["feed"] and len(loc) > 1 and loc[1] in FEED_KINDS else None
    field, error_type = ".".join(loc) or "(top level)", error["type"]
    if error_type == "extra_forbidden" and kind is not None:
        options = ", ".join(FEED_CONFIGS[kind].option_names())
        return (
            f"{field} is not an option of the {kind} feed (got {error['input']!r}); "
            f"options: {options}"
        )
    if error_type == "union_tag_invalid" and field == "feed":
        return (
            f"feed.kind: {error['ctx']['tag']!r} is not a feed; choose one of "
            f"{', '.join(FEED_KINDS)}"
        )
    if error_type == "union_tag_not_found" and field == "feed":
        return (
            f"feed: expected a [feed] table with kind = one of {', '.join(FEED_KINDS)} "
            f"(got {error['input']!r})"
        )
    if error_type == "missing":
        return f"{field}: required{f' by the {kind} feed' if kind else ''}, but not set"
    if error_type == "value_error" and field == "(top level)":
        # The config-wide checks name their field and value; the input is the whole file.
        return str(error["ctx"]["error"])
    return f"{field}: {error['msg']} (got {error.get('input')!r})"
