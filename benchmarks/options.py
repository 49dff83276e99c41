"""The settings of the benchmarks, each default documented once, here.

Light on purpose (no torch): ``quantrec``'s argument parser reads these defaults for its
help text on every command, not only ``bench``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

# Training implementations, run in this order. "torchrec" is torchrec's CPU embedding
# kernel (FBGEMM's table-batched embedding) without torchrec's module wrappers, which need
# tensordict and more; it runs only when the optional fbgemm_gpu imports.
IMPLS = ("naive", "quantrec", "quantrec_adam", "torchrec")
FEED_TABLES = 26  # id columns of the synthetic feed: at most one table each
# The shipped feeds whose default models the precision table measures, in this order.
PRECISION_FEEDS = ("synthetic", "movielens")


class BenchmarkOptionsError(ValueError):
    """A benchmark setting out of range, or one the chosen benchmark does not take."""


@dataclass(frozen=True)
class InferenceOptions:
    """``quantrec bench``: fp32, fp16, int8 and the searched plan side by side.

    Attributes:
        max_rows: cap on each of the 26 Criteo Kaggle table sizes (1 M: 5.6 M rows, 1.4 GB).
        train_rows: rows of the brief fp32 training before the search.
        budget: relative NE budget of the precision search (0.0005 = 0.05 %).
        threads: torch intra-op threads while building, searching and timing.
        json: one JSON object per benchmark row instead of the table.
    """

    max_rows: int = 1_000_000
    train_rows: int = 100_000
    budget: float = 0.0005
    threads: int = 1
    json: bool = False

    def __post_init__(self) -> None:
        _at_least(self, max_rows=1, train_rows=1, threads=1)
        if not self.budget > 0:
            raise BenchmarkOptionsError(f"--budget must be > 0; got {self.budget}")


@dataclass(frozen=True)
class ServingOptions:
    """``quantrec bench --serving``: a plain PyTorch DLRM (the same fp32 weights) beside
    quantrec's fp32, int8 and searched serving paths, per-table and fused; the settings
    mean what they mean for ``InferenceOptions``, with the same defaults."""

    max_rows: int = InferenceOptions.max_rows
    train_rows: int = InferenceOptions.train_rows
    budget: float = InferenceOptions.budget
    threads: int = InferenceOptions.threads
    json: bool = False

    def __post_init__(self) -> None:
        InferenceOptions.__post_init__(self)  # type: ignore[arg-type]


@dataclass(frozen=True)
class TrainOptions:
    """``quantrec bench --train``: a naive per-table trainer and quantrec's, side by side.

    Attributes:
        rows: training rows (one epoch); holdout_rows: rows scored after training.
        batch_size: rows per training step and per inference call.
        tables, table_rows, dim: ``tables`` tables of ``table_rows`` x ``dim``.
        lr: Adam's step for the MLPs (every implementation) and SparseAdam's for the tables.
        sparse_lr: row-wise Adagrad's step for the tables (None: ``train_dlrm``'s default).
        impls: implementations to run, in this order (see ``IMPLS``).
        seed: initial model and training order; the held-out rows are the next day's.
        threads: torch intra-op threads; json: one JSON object per implementation.
    """

    rows: int = 400_000
    holdout_rows: int = 65_536
    batch_size: int = 2048
    tables: int = FEED_TABLES
    table_rows: int = 100_000
    dim: int = 16
    lr: float = 1e-3
    sparse_lr: float | None = None
    impls: tuple[str, ...] = IMPLS
    seed: int = 0
    threads: int = 1
    json: bool = False

    def __post_init__(self) -> None:
        _at_least(
            self,
            rows=1,
            holdout_rows=1,
            batch_size=1,
            tables=1,
            table_rows=1,
            dim=1,
            seed=0,
            threads=1,
        )
        if self.tables > FEED_TABLES:
            raise BenchmarkOptionsError(
                f"--tables must be at most {FEED_TABLES}, the synthetic feed's id columns; "
                f"got {self.tables}"
            )
        unknown = [name for name in self.impls if name not in IMPLS]
        if unknown or not self.impls:
            raise BenchmarkOptionsError(
                f"--impls: unknown {unknown or 'none given'}; choose from {list(IMPLS)}"
            )
        if self.rows < self.batch_size or self.holdout_rows < self.batch_size:
            raise BenchmarkOptionsError(
                f"--rows ({self.rows}) and --holdout-rows ({self.holdout_rows}) must be at "
                f"least --batch-size ({self.batch_size})"
            )
        for name in ("lr", "sparse_lr"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise BenchmarkOptionsError(f"--{name.replace('_', '-')} must be > 0; got {value}")


@dataclass(frozen=True)
class PrecisionOptions:
    """``quantrec bench --precision``: NE change and bytes per bit width (int8 / int4 / int2
    tables, the int8 MLP, fp16, and together) on the shipped feeds' default models.

    Attributes:
        feeds: feeds to measure, in this order (see ``PRECISION_FEEDS``).
        rows_per_day: rows of each synthetic day (the synthetic feed's default).
        threads: torch intra-op threads; json: one JSON object per variant.
    """

    feeds: tuple[str, ...] = PRECISION_FEEDS
    rows_per_day: int = 100_000
    threads: int = 1
    json: bool = False

    def __post_init__(self) -> None:
        _at_least(self, rows_per_day=1000, threads=1)
        unknown = [name for name in self.feeds if name not in PRECISION_FEEDS]
        if unknown or not self.feeds:
            raise BenchmarkOptionsError(
                f"--feeds: unknown {unknown or 'none given'}; choose from {list(PRECISION_FEEDS)}"
            )


@dataclass(frozen=True)
class RepresentationOptions:
    """``quantrec bench --representations``: table, hashed, quotient-remainder, DHE, hybrid
    and the searched representation side by side (``benchmarks.representations``).

    Attributes:
        feeds: feeds to measure, in this order (see ``PRECISION_FEEDS``).
        rows_per_day: rows of each synthetic day: 20,000, as the lifecycle's flow tests (the
            search trains 18 models, so the precision table's 100,000 would take ~30 min).
        ne_budget: relative NE budget: the search's (within it of the full tables, the
            issue's 0.1 %) and correct-prediction throughput's (within it of the best NE).
        p95_ms: the latency target of the path choice per batch size (50 ms: what batch
            2048 of a full-table synthetic model takes here, so the choice is not trivial).
        threads: torch intra-op threads; json: one JSON object per row.
    """

    feeds: tuple[str, ...] = PRECISION_FEEDS
    rows_per_day: int = 20_000
    ne_budget: float = 0.001
    p95_ms: float = 50.0
    threads: int = 1
    json: bool = False

    def __post_init__(self) -> None:
        PrecisionOptions.__post_init__(self)  # type: ignore[arg-type]
        if not self.ne_budget >= 0 or not self.p95_ms > 0:
            raise BenchmarkOptionsError(
                f"--ne-budget must be >= 0 and --p95-ms > 0; got {self.ne_budget}, {self.p95_ms}"
            )


# Links of the exchange benchmark: tc rates, then this host's loopback.
EXCHANGE_RATES = ("100mbit", "1gbit", "loopback")
EXCHANGE_VARIANTS = ("fixed 0.01", "dual-level")  # besides exact (benchmarks.exchange)


@dataclass(frozen=True)
class ExchangeOptions:
    """``quantrec bench --exchange``: the sharded trainer's all-to-all of pooled embeddings,
    exact and compressed, at each link rate (``benchmarks.exchange``; 2 ranks, then 1).

    Attributes:
        rates: tc rates (veth pair between two network namespaces; needs root) and/or
            "loopback", measured in this order.
        variants: compressed variants run after exact (see ``EXCHANGE_VARIANTS``).
        steps: timed steps per variant (after 5 untimed), global batch 2048.
        threads: torch intra-op threads per rank; json: one JSON object per row.
    """

    rates: tuple[str, ...] = EXCHANGE_RATES
    variants: tuple[str, ...] = EXCHANGE_VARIANTS
    steps: int = 30
    threads: int = 1
    json: bool = False

    def __post_init__(self) -> None:
        _at_least(self, steps=1, threads=1)
        unknown = [name for name in self.variants if name not in EXCHANGE_VARIANTS]
        if unknown or not self.rates:
            raise BenchmarkOptionsError(
                f"--variants: unknown {unknown}; choose from {list(EXCHANGE_VARIANTS)}; "
                f"--rates: at least one (e.g. {','.join(EXCHANGE_RATES)})"
            )


def option_names(options: type) -> tuple[str, ...]:
    """The settings of one benchmark's options class, in declaration order."""
    return tuple(field.name for field in fields(options))


def _at_least(options: object, **minimum: int) -> None:
    for name, low in minimum.items():
        value = getattr(options, name)
        if value < low:
            flag = "--" + name.replace("_", "-")
            raise BenchmarkOptionsError(f"{flag} must be at least {low}; got {value}")
