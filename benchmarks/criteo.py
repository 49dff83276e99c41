"""Criteo-shaped rows and models for the benchmarks, drawn from the synthetic feed.

Rows are days of ``quantrec.feeds.synthetic.SyntheticFeed``, the feed the lifecycle and
the demo run on (13 count columns, 26 Zipf-popular id columns, a learnable ground truth),
made into batches by ``batch_from_frame`` as the lifecycle makes them. Only two settings
differ from the lifecycle's: the click rate is Criteo Kaggle's, and the tables take the
benchmark's sizes, so the feed's ids are hashed over the whole of each table (lookups
touch scattered rows, as in production, even in tables far larger than the vocabulary).

``criteo_shaped_model`` follows the Criteo Kaggle (Display Advertising Challenge) layout:
26 tables with the public per-feature cardinalities of that data set (capped at
``max_rows``), 64-d embeddings, and the DLRM reference's Kaggle MLPs (bottom 512-256-64,
top 512-256-1).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

import torch

from quantrec.data_checks.schema import CategoricalFeature, FeatureSchema
from quantrec.feeds.synthetic import SyntheticFeed
from quantrec.models.batch import Batch, batch_from_frame
from quantrec.models.dlrm import DLRM

# Distinct values of C1..C26 in Criteo Kaggle's train.txt, as used by the DLRM reference.
CRITEO_KAGGLE_CARDINALITIES = (
    1460,
    583,
    10131227,
    2202608,
    305,
    24,
    12517,
    633,
    3,
    93145,
    5683,
    8351593,
    3194,
    27,
    14992,
    5461306,
    10,
    5652,
    2173,
    4,
    7046547,
    18,
    15,
    286181,
    105,
    142572,
)
CRITEO_KAGGLE_CLICK_RATE = 0.256  # clicks in Criteo Kaggle's train.txt
# Every benchmark draws from one world of the feed; a batch's seed picks its day in it.
FEED_SEED = 0
FIRST_DAY = date(2024, 1, 1)


def schema_for_tables(table_sizes: Sequence[int]) -> FeatureSchema:
    """The synthetic feed's schema, its first ``len(table_sizes)`` id columns hashed into
    tables of ``table_sizes`` rows (the other id columns are left out).

    Raises:
        ValueError: no table, more tables than the feed has id columns, or a size < 1.
    """
    feed_schema = SyntheticFeed().schema()
    available = len(feed_schema.categorical)
    if not 1 <= len(table_sizes) <= available:
        raise ValueError(
            f"the synthetic feed has {available} id columns, so 1 to {available} tables; "
            f"got {len(table_sizes)}"
        )
    if min(table_sizes) < 1:
        raise ValueError(f"every table needs at least 1 row; got sizes {list(table_sizes)}")
    return FeatureSchema(
        label=feed_schema.label,
        dense=feed_schema.dense,
        dense_transform=feed_schema.dense_transform,
        categorical=tuple(
            CategoricalFeature(name=column.name, hash_size=int(size))
            for column, size in zip(feed_schema.categorical, table_sizes)
        ),
    )


def criteo_batch(table_sizes: Sequence[int], rows: int, *, seed: int) -> Batch:
    """``rows`` labelled samples for a model with ``table_sizes``: one id per bag.

    Each ``seed`` is another day of the same stable world, so rows of one seed are held
    out from rows of another: same ground truth, fresh draws. Dense columns are
    log1p-transformed counts, shape (rows, 13); clicks come at Criteo Kaggle's rate.
    """
    feed = SyntheticFeed(seed=FEED_SEED, rows_per_day=rows, click_rate=CRITEO_KAGGLE_CLICK_RATE)
    frame = feed.day(FIRST_DAY + timedelta(days=seed))
    return batch_from_frame(frame, schema_for_tables(table_sizes))


def criteo_model(
    table_sizes: Sequence[int], *, embedding_dim: int, bottom_mlp: Sequence[int], seed: int
) -> DLRM:
    """An untrained DLRM reading ``criteo_batch(table_sizes, ...)``; top MLP 512-256-1.

    ``bottom_mlp`` ends at ``embedding_dim`` (the dense vector meets the embeddings).
    """
    torch.manual_seed(seed)
    return DLRM.from_schema(
        schema_for_tables(table_sizes),
        embedding_dim=embedding_dim,
        bottom_mlp=list(bottom_mlp),
        top_mlp=[512, 256, 1],
    )


def criteo_shaped_model(
    *, max_rows: int = 1_000_000, embedding_dim: int = 64, seed: int = 0
) -> DLRM:
    """An untrained DLRM with Criteo Kaggle's 26 table sizes capped at ``max_rows``.

    At the default cap the tables hold 5.6 M rows: 1.43 GB of float32 weights at D = 64.
    """
    sizes = [min(rows, max_rows) for rows in CRITEO_KAGGLE_CARDINALITIES]
    return criteo_model(
        sizes, embedding_dim=embedding_dim, bottom_mlp=[512, 256, embedding_dim], seed=seed
    )
