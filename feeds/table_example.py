"""A worked example of the table feed: a small ratings log and its mapping file.

    python -m quantrec.feeds.table_example /tmp/quantrec-table    # writes ratings.csv, ratings.toml
    quantrec run --feed table --spec /tmp/quantrec-table/ratings.toml --date 2024-01-08

The log holds ``days`` days from 2024-01-01 (UTC) of user-item ratings with a price, a
list position, a country and a bag of tags; a rating of 4 or more is a click.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

START = datetime(2024, 1, 1, tzinfo=UTC)
TAGS = ("new", "sale", "eco", "local", "gift", "bulk")
COUNTRIES = ("fr", "de", "it", "es", "nl", "pl")

EXAMPLE_SPEC = """\
# quantrec table feed: quantrec run --feed table --spec ratings.toml --date 2024-01-08
files = ["ratings.csv"]            # CSV or Parquet files or globs, relative to this file

[label]
rule = "rating >= 4"               # or: column = "clicked" (a 0/1 column)

[timestamp]
column = "ts"
unit = "s"                         # s | ms | us | ns | iso (datetime text)

[features]
dense = ["price", "position"]
categorical = ["user_id", "item_id", "country"]
user = "user_id"                   # slices: new vs returning users
item = "item_id"                   # slices: head vs tail items
multi_valued = ["tags"]            # a bag of ids per row: "sale|eco" in the CSV
separator = "|"
default_hash_size = 10000
dense_transform = "log1p"          # price and position are non-negative, heavy-tailed

[features.hash_sizes]
country = 64
"""


def example_frame(*, days: int = 10, rows_per_day: int = 400, seed: int = 0) -> pd.DataFrame:
    """The raw log: ts, user_id, item_id, rating, price, position, country, tags (text)."""
    rng = np.random.default_rng(seed)
    n = days * rows_per_day
    day = np.repeat(np.arange(days), rows_per_day)
    seconds = rng.integers(0, 86_400, n)
    user = rng.integers(1, 300, n)
    item = rng.zipf(1.3, n) % 500 + 1
    price = np.round(rng.lognormal(2.5, 0.8, n), 2)
    position = rng.integers(1, 30, n)
    # Cheap items near the top of the list get the good ratings: a learnable signal.
    score = 3.2 - 0.02 * position - 0.01 * price + 0.3 * (user % 3 == 0) + rng.normal(0, 1, n)
    tag_count = rng.integers(0, 4, n)
    tags = ["|".join(rng.choice(TAGS, k, replace=False)) for k in tag_count]
    return pd.DataFrame(
        {
            "ts": int(START.timestamp()) + day * 86_400 + seconds,
            "user_id": user,
            "item_id": item,
            "rating": np.clip(np.round(score), 1, 5).astype(int),
            "price": price,
            "position": position,
            "country": rng.choice(COUNTRIES, n),
            "tags": tags,
        }
    )


def write_example(folder: Path, **options: int) -> Path:
    """Write ``ratings.csv`` and ``ratings.toml`` into ``folder``; return the spec's path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    example_frame(**options).to_csv(folder / "ratings.csv", index=False)
    spec = folder / "ratings.toml"
    spec.write_text(EXAMPLE_SPEC)
    return spec


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m quantrec.feeds.table_example OUTPUT_FOLDER")
    print(write_example(Path(sys.argv[1])))
