"""MovieLens-100K as a user would bring it: one raw ratings CSV and a table-feed spec.

    .venv/bin/python -m quantrec.benchmarks.movielens_table /tmp/ml-table
    .venv/bin/python benchmarks/quality.py --feed table --spec /tmp/ml-table/ratings.toml \
        --start 1997-10-01 --days 14 --continual

The CSV holds what a ratings log with a user and an item table joined onto it holds:
``ts``, ``user_id``, ``item_id``, ``rating``, the user's ``age``, ``gender`` and
``occupation``, the item's ``release_year`` and its ``genres`` as a bag ("Action|Comedy").
None of the shipped feed's engineered history features (ratings before, positive rate
before, days since release): the spec maps raw columns only, with the table feed's defaults.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from quantrec.feeds.movielens import _read_wheel

SPEC = """\
# MovieLens-100K ratings through the table feed (benchmarks/movielens_table.py)
files = ["ratings.csv"]

[label]
rule = "rating >= 4"

[timestamp]
column = "ts"
unit = "s"

[features]
dense = ["age", "release_year"]
categorical = ["user_id", "item_id", "gender", "occupation"]
user = "user_id"
item = "item_id"
multi_valued = ["genres"]
separator = "|"
"""


def export(folder: Path) -> Path:
    """Write ``ratings.csv`` and ``ratings.toml`` into ``folder``; return the spec's path."""
    ratings, users, items = _read_wheel()
    rows = ratings.merge(users[["user_id", "age", "gender", "occupation"]], on="user_id")
    rows = rows.merge(items, on="item_id")
    frame = pd.DataFrame(
        {
            "ts": rows["timestamp"].astype("int64"),
            "user_id": rows["user_id"],
            "item_id": rows["item_id"],
            "rating": rows["rating"],
            "age": rows["age"],
            "gender": rows["gender"],
            "occupation": rows["occupation"],
            "release_year": pd.to_numeric(rows["release_year"], errors="coerce").fillna(0),
            "genres": rows["genres"].map("|".join),
        }
    ).sort_values("ts", kind="stable")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / "ratings.csv", index=False)
    (folder / "ratings.toml").write_text(SPEC)
    return folder / "ratings.toml"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m quantrec.benchmarks.movielens_table FOLDER")
    print(export(Path(sys.argv[1])))
