"""Per-bitwidth reference table: NE change and bytes of each precision on the feeds' default models.

    quantrec bench --precision [--feeds synthetic,movielens] [--rows-per-day 100000] [--json]
    (or python -m quantrec.benchmarks.precision)

For each shipped feed, the lifecycle's default fp32 DLRM (``QuantrecConfig``'s ``[model]``
and ``[training]``, sized to the rows by ``models.sizing``) is trained by the lifecycle's own
``models.lifecycle.train_fp32`` on a few days written to a temporary lake, then every
variant below is scored on the *following* day's rows, which neither training nor early
stopping saw:

* row-wise int8, int4, int2 tables (every table; the MLPs stay fp32), and the greedy
  range-searched int4 / int2;
* the int8 MLP alone (every linear dynamic int8, per channel; the tables stay fp32);
* fp16 everywhere;
* everything together: the int8 MLP with int8, int4 or int2 tables.

Printed per variant: NE, its relative change against fp32 with the 95 % paired bootstrap
interval of that change (``models.noise``, as the gate computes it: an interval that holds 0
is a change these rows cannot tell from noise), the state_dict bytes and their ratio to
fp32, and the SQNR of the logits against fp32 (``models.numerics``). One process, one
thread, every variant on the same rows: compare within a feed.

Training days: synthetic, 2 days of ``rows_per_day`` before 2024-01-04 (the default 3-day
window would only take longer); MovieLens, the 21 days before 1997-10-20 with 3 epochs at
batch 256, as ``deploy/movielens.toml`` ships (a few hundred ratings a day: a shorter window
learns next to nothing). A MovieLens day is small, so its NE changes are noisy.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path

import torch

from quantrec.benchmarks.options import PrecisionOptions
from quantrec.feeds.base import FeedError, SmallDayError
from quantrec.feeds.lake import DayLake
from quantrec.models.batch import batch_from_frame
from quantrec.models.dlrm import DLRM
from quantrec.models.gate_policy import GatePolicy
from quantrec.models.lifecycle import Trained, train_fp32
from quantrec.models.metrics import normalized_entropy
from quantrec.models.noise import PairedIntervals
from quantrec.models.numerics import OUTPUT, compare_numerics
from quantrec.models.quantize import apply_precision_plan, model_bytes, quantizable_units
from quantrec.models.scorer import predict_proba
from quantrec.models.train import torch_threads


@dataclass(frozen=True)
class FeedSetting:
    """Which days train a feed's model, and the training overrides of its shipped config."""

    test_day: date
    train_days: int
    training: dict


FEED_SETTINGS = {
    "synthetic": FeedSetting(date(2024, 1, 4), 2, {}),
    # deploy/movielens.toml's [training]: three weeks, three epochs, batch 256.
    "movielens": FeedSetting(date(1997, 10, 20), 21, {"epochs": 3, "batch_size": 256}),
}

# Variant name -> (precision of every linear, precision of every table).
VARIANTS = {
    "fp32": ("fp32", "fp32"),
    "int8 tables": ("fp32", "int8"),
    "int4 tables": ("fp32", "int4"),
    "int4 greedy tables": ("fp32", "int4_greedy"),
    "int2 tables": ("fp32", "int2"),
    "int2 greedy tables": ("fp32", "int2_greedy"),
    "int8 MLP": ("int8", "fp32"),
    "fp16": ("fp16", "fp16"),
    "int8 MLP + int8 tables": ("int8", "int8"),
    "int8 MLP + int4 tables": ("int8", "int4"),
    "int8 MLP + int2 tables": ("int8", "int2"),
}


@dataclass(frozen=True)
class PrecisionRow:
    """One variant of one feed's model, scored on the day after its training days."""

    feed: str
    variant: str
    ne: float
    ne_delta_rel: float  # (NE - NE fp32) / NE fp32
    ne_delta_low: float | None  # its paired bootstrap interval (None: too few clicks)
    ne_delta_high: float | None
    bytes: int
    bytes_ratio: float  # bytes / fp32 bytes
    output_sqnr_db: float  # logits against fp32's
    test_rows: int


def variant_plan(model: DLRM, linear: str, table: str) -> dict[str, str]:
    """Every linear of ``model`` at ``linear``, every table at ``table``."""
    return {
        name: linear if hasattr(unit, "in_features") else table
        for name, unit in quantizable_units(model).items()
    }


def _write_days(lake: DayLake, feed, days: list[date]) -> list[Path]:
    """The feed's days in the lake, oldest first; days the feed has too few rows for skipped."""
    paths = []
    for day in days:
        try:
            paths.append(lake.write(day, feed.day(day)))
        except SmallDayError:
            continue
    return paths


def train_default_model(name: str, *, rows_per_day: int, folder: Path) -> tuple[Trained, object]:
    """(the trained fp32 parent, the following day's batch) of feed ``name``."""
    from quantrec.tasks.config import QuantrecConfig

    setting = FEED_SETTINGS[name]
    options = {"rows_per_day": rows_per_day} if name == "synthetic" else {}
    config = QuantrecConfig().with_feed(name, **options)
    config = config.with_overrides(training={**setting.training, "threads": 1})
    feed = config.feed.build(setting.test_day)
    days = [setting.test_day - timedelta(days=k) for k in range(setting.train_days, 0, -1)]
    paths = _write_days(DayLake(folder), feed, days)
    if not paths:
        raise FeedError(f"feed {name}: no training day has rows before {setting.test_day}")
    trained = train_fp32(
        paths,
        feed.schema(),
        model=config.model,
        training=config.training,
        holdout_fraction=config.search.holdout_fraction,
    )
    return trained, batch_from_frame(feed.day(setting.test_day), trained.schema)


def measure_feed(name: str, *, rows_per_day: int) -> tuple[list[PrecisionRow], str]:
    """Every variant of feed ``name``'s default model; and a line describing the model."""
    with tempfile.TemporaryDirectory(prefix="quantrec-precision-") as tmp:
        trained, test = train_default_model(name, rows_per_day=rows_per_day, folder=Path(tmp))
    fp32, labels = trained.model, test.labels.double().numpy()
    probs, sizes, sqnr = {}, {}, {}
    for variant, (linear, table) in VARIANTS.items():
        model = apply_precision_plan(fp32, variant_plan(fp32, linear, table))
        probs[variant], sizes[variant] = predict_proba(model, test), model_bytes(model)
        sqnr[variant] = compare_numerics(fp32, model, test).unit(OUTPUT).sqnr_db
    reference = next(iter(VARIANTS))
    gate = GatePolicy()  # its bootstrap defaults: the gate's reading of noise
    intervals = PairedIntervals(
        labels,
        probs,
        {"all": None},
        refs=[reference],
        skip=[],
        samples=gate.bootstrap_samples,
        seed=gate.bootstrap_seed,
        confidence=gate.confidence,
    )
    ne = {variant: normalized_entropy(labels, p) for variant, p in probs.items()}
    rows = []
    for variant in VARIANTS:
        interval = (
            intervals.change("ne", "rel", variant, reference, "all")
            if variant != reference
            else (0.0, 0.0)
        )
        low, high = interval or (None, None)
        rows.append(
            PrecisionRow(
                feed=name,
                variant=variant,
                ne=ne[variant],
                ne_delta_rel=(ne[variant] - ne[reference]) / ne[reference],
                ne_delta_low=low,
                ne_delta_high=high,
                bytes=sizes[variant],
                bytes_ratio=sizes[variant] / sizes[reference],
                output_sqnr_db=sqnr[variant],
                test_rows=len(test),
            )
        )
    arch = fp32.architecture()
    described = (
        f"{name}: {trained.rows:,} training rows ({trained.report.epochs} epochs, kept "
        f"{trained.report.best_epoch}), {len(arch['table_sizes'])} tables of "
        f"{sum(arch['table_sizes']):,} rows in all, D={arch['embedding_dim']}, bottom "
        f"{arch['bottom_mlp']}, top {arch['top_mlp']}; scored on {FEED_SETTINGS[name].test_day} "
        f"({len(test):,} rows)"
    )
    return rows, described


def print_table(rows: list[PrecisionRow]) -> None:
    print(
        f"{'feed':<10} {'variant':<24} {'NE':>7} {'NE vs fp32':>11} {'95% interval':>20} "
        f"{'bytes':>12} {'x fp32':>7} {'SQNR dB':>8}"
    )
    for r in rows:
        sqnr = "inf" if r.output_sqnr_db == float("inf") else f"{r.output_sqnr_db:.1f}"
        interval = (
            "-" if r.ne_delta_low is None else f"[{r.ne_delta_low:+.3%}, {r.ne_delta_high:+.3%}]"
        )
        print(
            f"{r.feed:<10} {r.variant:<24} {r.ne:>7.4f} {r.ne_delta_rel:>+11.3%} "
            f"{interval:>20} {r.bytes:>12,} {r.bytes_ratio:>7.3f} {sqnr:>8}"
        )


def run_precision(options: PrecisionOptions) -> int:
    """Measure every feed of ``options`` and print the table (or JSON lines); exit 0."""
    started = time.perf_counter()
    results, lines = [], []
    with torch_threads(options.threads):
        for feed in options.feeds:
            rows, described = measure_feed(feed, rows_per_day=options.rows_per_day)
            results += rows
            lines.append(described)
    if options.json:
        for row in results:
            print(json.dumps(asdict(row), sort_keys=True))
        return 0
    for line in lines:
        print(line)
    print(f"torch {torch.__version__}, {options.threads} thread(s)\n")
    print_table(results)
    print(f"\n{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    from quantrec.benchmarks.cli import main

    sys.exit(main(["--precision", *sys.argv[1:]], prog="python -m quantrec.benchmarks.precision"))
