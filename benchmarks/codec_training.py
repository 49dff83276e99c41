"""Training with compressed pooled embeddings against exact training: NE and compression ratio.

    nice -n 10 python -m quantrec.benchmarks.codec_training [--rows-per-day 20000] [--days 3]
                                                            [--epochs 1] [--threads 1] [--json]

The synthetic feed's default DLRM (sized to the rows by ``models.sizing`` as
``models.lifecycle.train_fp32`` sizes it, the config's training defaults) is trained once
per variant on the same rows, seed and number of steps (``--epochs`` fixed: no early
stopping, so every variant takes the same steps), then scored on the following day:

* ``exact``: no compression;
* ``fixed 0.003`` / ``0.01`` / ``0.03``: every table at one bound, no decay;
* ``table-wise``: tight / base / loose (0.01 / 0.03 / 0.05) by measured sensitivity;
* ``dual-level``: table-wise, the bound starting at 2x and decaying (log) to it over the
  first quarter of the steps.

Printed per variant: next-day NE, its relative change against exact training with the 95 %
paired bootstrap interval (``models.noise``), the compression ratio of the exchanged pooled
bytes (all tables together; and the smallest and largest table's mean), the largest
|decoded - x| over its bound, and the training seconds (after one discarded warm-up run).
Bounds are relative to each table's pooled block's range in each step
(``models.pooled_compression``). The exchange itself is not run here (one process): the
ratio is what it would carry.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from quantrec.benchmarks.codec import TEST_DAY, write_days
from quantrec.models.batch import batch_from_frame
from quantrec.models.dlrm import DLRM
from quantrec.models.gate_policy import GatePolicy
from quantrec.models.metrics import normalized_entropy
from quantrec.models.noise import PairedIntervals
from quantrec.models.pooled_compression import PooledCompression
from quantrec.models.scorer import predict_proba
from quantrec.models.sizing import auto_model_size
from quantrec.models.stream import WindowStream
from quantrec.models.train import torch_threads, train_dlrm


@dataclass(frozen=True)
class TrainingRow:
    variant: str
    ne: float
    ne_delta_rel: float  # against exact training
    delta_low: float | None
    delta_high: float | None
    ratio: float | None  # fp32 bytes / encoded bytes of every measured exchange
    ratio_min_table: float | None
    ratio_max_table: float | None
    max_error_over_bound: float | None
    steps: int
    seconds: float


def variants(steps: int) -> dict[str, PooledCompression | None]:
    decay = max(1, steps // 4)
    return {
        "exact": None,
        "fixed 0.003": PooledCompression(base=0.003, tight=0.003, groups="fixed", schedule="none"),
        "fixed 0.01": PooledCompression(base=0.01, tight=0.01, groups="fixed", schedule="none"),
        "fixed 0.03": PooledCompression(base=0.03, groups="fixed", schedule="none"),
        "table-wise": PooledCompression(schedule="none"),
        "dual-level": PooledCompression(schedule="log", decay_steps=decay),
    }


def run(*, rows_per_day: int, days: int, epochs: int) -> tuple[list[TrainingRow], str]:
    from quantrec.tasks.config import QuantrecConfig

    config = QuantrecConfig().with_feed("synthetic", rows_per_day=rows_per_day)
    training, feed = config.training, config.feed.build(TEST_DAY)
    with tempfile.TemporaryDirectory(prefix="quantrec-codec-training-") as tmp:
        paths = write_days(Path(tmp), feed, days)
        schema = feed.schema()
        rows = WindowStream(paths, schema).rows
        size = auto_model_size(schema, rows, embedding_dim=config.model.embedding_dim)
        schema = size.apply(schema)
        test = batch_from_frame(feed.day(TEST_DAY), schema)

        def train(compression: PooledCompression | None):
            torch.manual_seed(training.seed)
            model = DLRM.from_schema(
                schema,
                embedding_dim=size.embedding_dim,
                bottom_mlp=(*config.model.bottom_mlp[:-1], size.embedding_dim),
                top_mlp=config.model.top_mlp,
            )
            report = train_dlrm(
                model,
                WindowStream(paths, schema),
                seed=training.seed,
                epochs=epochs,
                sparse_optimizer=training.sparse_optimizer,
                embedding_weight_decay=training.embedding_weight_decay,
                pooled_compression=compression,
            )
            return report, predict_proba(model, test)

        train(None)  # warm-up: the first run in a process pays allocation and thread start-up
        exact, exact_probs = train(None)
        steps = exact.steps
        reports, probs = {"exact": exact}, {"exact": exact_probs}
        for name, compression in variants(steps).items():
            if compression is not None:
                reports[name], probs[name] = train(compression)
    labels = test.labels.double().numpy()
    gate = GatePolicy()
    intervals = PairedIntervals(
        labels,
        probs,
        {"all": None},
        refs=["exact"],
        skip=[],
        samples=gate.bootstrap_samples,
        seed=gate.bootstrap_seed,
        confidence=gate.confidence,
    )
    ne = {name: normalized_entropy(labels, p) for name, p in probs.items()}
    table = []
    for name, report in reports.items():
        log = report.compression
        low, high = (
            intervals.change("ne", "rel", name, "exact", "all") if name != "exact" else None
        ) or (None, None)
        table.append(
            TrainingRow(
                variant=name,
                ne=ne[name],
                ne_delta_rel=(ne[name] - ne["exact"]) / ne["exact"],
                delta_low=low,
                delta_high=high,
                ratio=None if log is None else log.overall_ratio(),
                ratio_min_table=None if log is None else min(log.mean_ratio()),
                ratio_max_table=None if log is None else max(log.mean_ratio()),
                max_error_over_bound=None if log is None else log.max_error_over_bound,
                steps=report.steps,
                seconds=report.seconds,
            )
        )
    described = (
        f"synthetic: {rows:,} training rows ({days} days of {rows_per_day:,}), "
        f"{len(schema.categorical)} tables, D={size.embedding_dim}, {epochs} epoch(s) of "
        f"{steps} steps; tested on {TEST_DAY} ({len(test):,} rows)"
    )
    return table, described


def print_table(rows: list[TrainingRow]) -> None:
    print(
        f"{'variant':<12} {'NE':>7} {'vs exact':>9} {'95% interval':>20} {'ratio':>7} "
        f"{'table min':>9} {'table max':>9} {'err/bound':>9} {'steps':>6} {'s':>6}"
    )
    for r in rows:
        interval = "-" if r.delta_low is None else f"[{r.delta_low:+.3%}, {r.delta_high:+.3%}]"

        def num(x, spec):
            return "-" if x is None else format(x, spec)

        print(
            f"{r.variant:<12} {r.ne:>7.4f} {r.ne_delta_rel:>+9.3%} {interval:>20} "
            f"{num(r.ratio, '.1f'):>7} {num(r.ratio_min_table, '.1f'):>9} "
            f"{num(r.ratio_max_table, '.1f'):>9} {num(r.max_error_over_bound, '.6f'):>9} "
            f"{r.steps:>6} {r.seconds:>6.1f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m quantrec.benchmarks.codec_training")
    parser.add_argument("--rows-per-day", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with torch_threads(args.threads):
        rows, described = run(rows_per_day=args.rows_per_day, days=args.days, epochs=args.epochs)
    if args.json:
        for row in rows:
            print(json.dumps(asdict(row), sort_keys=True))
        return 0
    print(described)
    print(f"torch {torch.__version__}, {args.threads} thread(s)\n")
    print_table(rows)
    print(f"\n{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
