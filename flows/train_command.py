"""``quantrec train``: the fp32 DLRM trained by the table-wise sharded trainer under torchrun.

    quantrec train --nproc-per-node 2 [--days 3] [--rows 20000] [--compression 0.01] [--json]

Trains the config's model (sized to the rows by ``models.sizing``, as the daily training
stage sizes it) on the ``--days`` days before ``--date`` of the chosen feed (the synthetic
feed by default), one rank per process: ``models.torchrun`` writes the job into a folder
and starts ``torchrun --standalone --nproc-per-node N -m quantrec.models.torchrun``. Prints
samples/s, the all-to-all bytes per step and the final loss; ``--out`` keeps the job
folder (``trained.pt``, ``report.json``). Fixed epochs; the daily flow's training stage
(early stopping on held-out rows) is unchanged.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import asdict
from datetime import date, timedelta
from pathlib import Path

HELP = "train the fp32 DLRM with tables sharded across torchrun ranks (gloo)"
DEFAULT_DATE = date(2024, 1, 4)  # the day after the synthetic window the benchmarks train on
DEFAULT_DAYS = 3


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    """Add ``quantrec train``'s options to its sub-parser."""
    parser.add_argument("--nproc-per-node", type=_positive, default=1, help="ranks (default: 1)")
    parser.add_argument(
        "--date",
        type=date.fromisoformat,
        default=DEFAULT_DATE,
        help=f"train on the days before this one (default: {DEFAULT_DATE})",
    )
    parser.add_argument(
        "--days", type=_positive, default=DEFAULT_DAYS, help="days of rows (default: 3)"
    )
    parser.add_argument(
        "--epochs", type=_positive, default=1, help="passes over the rows (default: 1)"
    )
    parser.add_argument("--max-steps", type=_positive, help="stop each epoch after this many steps")
    parser.add_argument(
        "--batch-size", type=_positive, help="global rows per step (default: sized)"
    )
    parser.add_argument("--max-table-rows", type=_positive, help="cap on every table's rows")
    parser.add_argument(
        "--compression",
        type=float,
        help="relative error bound of the exchanged pooled embeddings (fixed for every "
        "table; default: exact exchange)",
    )
    parser.add_argument("--out", type=Path, help="keep the job folder here (default: temporary)")


def synthetic_job(folder: Path, config, *, run_date: date, days: int, max_table_rows, settings):
    """Write the job of the config's model on the ``days`` days before ``run_date`` into
    ``folder``; returns a one-line description of the rows and the model."""
    import pandas as pd
    import torch

    from quantrec.models.batch import batch_from_frame
    from quantrec.models.dlrm import DLRM
    from quantrec.models.sizing import auto_model_size
    from quantrec.models.torchrun import write_job

    feed = config.feed.build(run_date)
    frame = pd.concat(
        [feed.day(run_date - timedelta(days=k)) for k in range(days, 0, -1)], ignore_index=True
    )
    schema = feed.schema()
    size = auto_model_size(schema, len(frame), embedding_dim=config.model.embedding_dim)
    schema = size.apply(schema)
    if max_table_rows is not None:
        capped = tuple(
            f.model_copy(update={"hash_size": min(f.hash_size, max_table_rows)})
            for f in schema.categorical
        )
        schema = schema.model_copy(update={"categorical": capped})
    torch.manual_seed(config.training.seed)
    model = DLRM.from_schema(
        schema,
        embedding_dim=size.embedding_dim,
        bottom_mlp=(*config.model.bottom_mlp[:-1], size.embedding_dim),
        top_mlp=config.model.top_mlp,
    )
    batch = batch_from_frame(frame, schema)
    write_job(folder, model, batch, settings)
    return (
        f"{len(batch):,} rows ({days} days before {run_date}), {len(schema.hash_sizes)} tables "
        f"of {min(schema.hash_sizes):,}-{max(schema.hash_sizes):,} rows, D={size.embedding_dim}"
    )


def run(args: argparse.Namespace, config) -> int:
    """Write the job, run it under torchrun, print what it did; the exit status."""
    from quantrec.models.torchrun import JobSettings, launch

    compression = None
    if args.compression is not None:
        bound = args.compression
        compression = {
            "base": bound,
            "tight": bound,
            "loose": max(bound, 0.05),
            "groups": "fixed",
            "schedule": "none",
        }
    settings = JobSettings(
        seed=config.training.seed,
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size or config.training.batch_size,
        sparse_learning_rate=config.training.sparse_learning_rate,
        embedding_weight_decay=config.training.embedding_weight_decay,
        compression=compression,
    )
    with tempfile.TemporaryDirectory(prefix="quantrec-train-") as tmp:
        folder = args.out or Path(tmp)
        described = synthetic_job(
            folder,
            config,
            run_date=args.date,
            days=args.days,
            max_table_rows=args.max_table_rows,
            settings=settings,
        )
        report, _ = launch(folder, nproc_per_node=args.nproc_per_node)
    if args.json:
        print(json.dumps({**asdict(report), "bytes_per_step": report.bytes_per_step}))
        return 0
    exchange, steps = report.exchange, max(report.steps, 1)
    tables = [report.owners.count(r) for r in range(report.world_size)]
    print(described)
    print(
        f"{report.world_size} rank(s), tables per rank {tables}: {report.steps} steps of "
        f"{report.batch_size} rows, {report.samples_per_s:,.0f} samples/s, "
        f"final loss {report.final_loss:.5f}"
    )
    print(
        f"all-to-all bytes per step (all ranks): forward {exchange.forward_bytes / steps:,.0f}, "
        f"backward {exchange.backward_bytes / steps:,.0f}, "
        f"sizes {exchange.count_bytes / steps:,.0f}"
    )
    if report.compression is not None and exchange.forward_bytes:
        print(
            f"forward compression ratio {exchange.raw_forward_bytes / exchange.forward_bytes:.1f}"
        )
    if args.out:
        print(f"trained weights and report in {args.out}")
    return 0
