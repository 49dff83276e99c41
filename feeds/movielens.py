"""A daily replay of MovieLens-100K: 100k ratings, 1997-09-20 to 1998-04-22, as click days.

Source: the ``ml-100k.inter/.user/.item`` files inside the ``recbole==1.2.1`` wheel (set-up
runs ``pip install --no-deps recbole==1.2.1``; recbole is never imported, only its files
read), or a GroupLens ``ml-100k`` folder (``u.data``, ``u.user``, ``u.item``) via ``path``.
The data is never copied into the repository: its licence forbids redistribution.

Mapping to the data contract:

- label: ``rating >= 4`` (int8 0/1);
- categorical: user id, item id, gender, occupation, zip prefix (3 characters), age
  bucket, release-year bucket (5 years) and genres, a multi-valued bag of genre names;
- dense, from the PAST only: the user's and the item's ratings and positive rate on days
  before the row's day (a same-day rating never informs another), the hour and weekday of
  the rating (UTC) and days since 1 January of the release year (0 if unknown; the wheel
  holds only the year, so GroupLens folders use the year too and both sources agree);
- ``timestamp``: epoch seconds of the rating, the event-time column of the checks.

Days are UTC calendar days. A day holding fewer than ``min_rows`` ratings (12 of the 215
days hold fewer than 50; two hold none) raises ``SmallDayError``: the run skips it and
says so. Its ratings still count in the history of later days, so skipping never leaks.
"""

from __future__ import annotations

from datetime import date, timedelta
from functools import cached_property
from importlib import metadata
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field

from quantrec.data_checks.schema import CategoricalFeature, FeatureSchema
from quantrec.feeds.base import BaseFeedConfig, FeedError, check_day, require_rows

WHEEL_FOLDER = "recbole/dataset_example/ml-100k"
GROUPLENS_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
AGE_EDGES = (18, 25, 35, 45, 50, 56)  # the MovieLens-1M age groups
DENSE = (
    "user_ratings_before",
    "user_positive_rate_before",
    "item_ratings_before",
    "item_positive_rate_before",
    "hour",
    "weekday",
    "days_since_release",
)
# 943 users and 1682 items: tables ~2-4x the vocabulary keep hash collisions rare.
HASH_SIZES = {
    "user_id": 4096,
    "item_id": 4096,
    "gender": 4,
    "occupation": 32,
    "zip_prefix": 1024,
    "age_bucket": 8,
    "release_bucket": 32,
    "genres": 32,
}


class MovieLensFeed:
    """Day partitions replayed from MovieLens-100K.

    Args:
        path: a GroupLens ``ml-100k`` folder; None reads the recbole wheel's copy.
        min_rows: days with fewer ratings raise ``SmallDayError`` (see the module docstring).
    """

    def __init__(self, *, path: Path | str | None = None, min_rows: int = 50) -> None:
        if not isinstance(min_rows, int) or min_rows < 1:
            raise FeedError(f"movielens feed: min_rows must be an integer >= 1; got {min_rows!r}")
        self.path = Path(path) if path is not None else None
        self.min_rows = min_rows

    def __repr__(self) -> str:
        return f"MovieLensFeed(path={self.path}, min_rows={self.min_rows})"

    def schema(self) -> FeatureSchema:
        return movielens_schema()

    def available_days(self) -> list[date]:
        """Every calendar day from the first rating to the last (small days included)."""
        days = self._rows["day"]
        first, last = days.min(), days.max()
        return [first + timedelta(days=k) for k in range((last - first).days + 1)]

    def day(self, run_date: date) -> pd.DataFrame:
        """The ratings of ``run_date`` (UTC) in ``schema().partition_columns`` order."""
        check_day(run_date, feed="movielens")
        rows = self._rows
        frame = rows.loc[rows["day"] == run_date, self.schema().partition_columns]
        require_rows(frame, run_date, min_rows=self.min_rows, source=self.source)
        return frame.reset_index(drop=True)

    @property
    def source(self) -> str:
        return str(self.path) if self.path else f"the recbole wheel's {WHEEL_FOLDER}"

    @cached_property
    def _rows(self) -> pd.DataFrame:
        """Every rating with its features, sorted by time (built once: ~0.5 s)."""
        ratings, users, items = _read_grouplens(self.path) if self.path else _read_wheel()
        return build_rows(ratings, users, items)


class MovieLensFeedConfig(BaseFeedConfig):
    """``[feed] kind = "movielens"``: settings of ``MovieLensFeed``."""

    kind: Literal["movielens"] = "movielens"
    path: str | None = Field(
        None,
        description="A GroupLens ml-100k folder (u.data, u.user, u.item); unset: the copy "
        "inside the recbole wheel.",
    )
    min_rows: int = Field(
        50,
        ge=1,
        description="Days with fewer ratings are skipped (12 of the 215 days hold fewer than 50).",
    )

    def build(self, run_date: date) -> MovieLensFeed:
        """The feed; it replays fixed days, whatever ``run_date``."""
        return MovieLensFeed(**self.options())


def movielens_schema() -> FeatureSchema:
    return FeatureSchema(
        dense=DENSE,
        categorical=tuple(
            CategoricalFeature(name=n, hash_size=s, multi_valued=n == "genres")
            for n, s in HASH_SIZES.items()
        ),
        timestamp="timestamp",
        user="user_id",
        item="item_id",
    )


def build_rows(ratings: pd.DataFrame, users: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """Contract rows from normalised tables (pure: the no-leakage tests call it directly).

    Args:
        ratings: user_id, item_id (int64), rating (number), timestamp (epoch seconds).
        users: user_id, age (int), gender, occupation, zip_code (str).
        items: item_id, release_year (float, NaN if unknown), genres (list of str).
    """
    rows = ratings.sort_values("timestamp", kind="stable").reset_index(drop=True)
    when = pd.to_datetime(rows["timestamp"], unit="s", utc=True)
    rows["day"] = when.dt.date
    rows["label"] = (rows["rating"] >= 4).astype(np.int8)
    for key, prefix in (("user_id", "user"), ("item_id", "item")):
        count, rate = _history(rows, key)
        rows[f"{prefix}_ratings_before"], rows[f"{prefix}_positive_rate_before"] = count, rate
    rows["hour"], rows["weekday"] = when.dt.hour, when.dt.day_of_week
    rows = rows.merge(_user_columns(users), on="user_id", how="left", validate="many_to_one")
    rows = rows.merge(_item_columns(items), on="item_id", how="left", validate="many_to_one")
    if rows["gender"].isna().any() or rows["genres"].isna().any():
        raise FeedError(
            "movielens: some ratings name users or items missing from the user "
            "or item file; the three files come from different releases"
        )
    release = pd.to_datetime(rows["release_year"].fillna(1970).astype(int).astype(str), utc=True)
    since = (when - release).dt.days.clip(lower=0)
    rows["days_since_release"] = since.where(rows["release_year"].notna(), 0)
    rows[list(DENSE)] = rows[list(DENSE)].astype(np.float32)
    rows["timestamp"] = rows["timestamp"].astype(np.int64)
    return rows


def _history(rows: pd.DataFrame, key: str) -> tuple[np.ndarray, np.ndarray]:
    """Per row: ratings and positive rate of its ``key`` on days strictly before its day."""
    daily = rows.groupby([key, "day"], sort=True)["label"].agg(["size", "sum"])
    before = daily.groupby(level=0).cumsum() - daily  # exclude the day itself: no leakage
    at = pd.MultiIndex.from_arrays([rows[key], rows["day"]])
    count = before["size"].reindex(at).to_numpy(dtype=np.float64)
    positive = before["sum"].reindex(at).to_numpy(dtype=np.float64)
    rate = np.divide(positive, count, out=np.zeros_like(count), where=count > 0)
    return count, rate


def _user_columns(users: pd.DataFrame) -> pd.DataFrame:
    labels = [f"<{AGE_EDGES[0]}"] + [f"{a}-{b - 1}" for a, b in zip(AGE_EDGES, AGE_EDGES[1:])]
    age = np.searchsorted(np.array(AGE_EDGES), users["age"].to_numpy(), side="right")
    return pd.DataFrame(
        {
            "user_id": users["user_id"].astype(np.int64),
            "gender": users["gender"].astype(str),
            "occupation": users["occupation"].astype(str),
            "zip_prefix": users["zip_code"].astype(str).str[:3],
            "age_bucket": np.array([*labels, f"{AGE_EDGES[-1]}+"], dtype=object)[age],
        }
    )


def _item_columns(items: pd.DataFrame) -> pd.DataFrame:
    year = pd.to_numeric(items["release_year"], errors="coerce")
    start = (year // 5 * 5).astype("Int64").astype(str)
    bucket = ("y" + start).where(year.notna(), "unknown")
    return pd.DataFrame(
        {
            "item_id": items["item_id"].astype(np.int64),
            "release_year": year,
            "release_bucket": bucket.astype(str),
            "genres": items["genres"],
        }
    )


def _read_wheel() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    try:
        folder = Path(str(metadata.distribution("recbole").locate_file(WHEEL_FOLDER)))
    except metadata.PackageNotFoundError as err:
        raise FeedError(
            "movielens feed: the recbole wheel that ships MovieLens-100K is not installed; "
            "run `pip install --no-deps recbole==1.2.1` or pass path= a GroupLens ml-100k "
            "folder (u.data, u.user, u.item)"
        ) from err
    inter = _read(folder / "ml-100k.inter", sep="\t")
    ratings = inter.rename(columns=lambda c: c.split(":")[0])[
        ["user_id", "item_id", "rating", "timestamp"]
    ]
    users = _read(folder / "ml-100k.user", sep="\t").rename(columns=lambda c: c.split(":")[0])
    raw = _read(folder / "ml-100k.item", sep="\t", encoding="latin-1", dtype=str)
    raw = raw.rename(columns=lambda c: c.split(":")[0])
    genres = raw["class"].fillna("").str.split()
    items = pd.DataFrame(
        {
            "item_id": raw["item_id"].astype(np.int64),
            "release_year": raw["release_year"],
            "genres": genres,
        }
    )
    return ratings, users, items


def _read_grouplens(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    names = ["user_id", "item_id", "rating", "timestamp"]
    ratings = _read(folder / "u.data", sep="\t", header=None, names=names)
    user_names = ["user_id", "age", "gender", "occupation", "zip_code"]
    users = _read(folder / "u.user", sep="|", header=None, names=user_names, dtype={4: str})
    item_names = ["item_id", "title", "release_date", "video_date", "url", *GROUPLENS_GENRES]
    raw = _read(folder / "u.item", sep="|", header=None, names=item_names, encoding="latin-1")
    flags = raw[list(GROUPLENS_GENRES)].to_numpy(dtype=bool)
    genres = np.array(GROUPLENS_GENRES, dtype=object)
    items = pd.DataFrame(
        {
            "item_id": raw["item_id"].astype(np.int64),
            "release_year": raw["release_date"].astype(str).str[-4:],
            "genres": [list(genres[row]) for row in flags],  # 1682 items: a loop is fine
        }
    )
    return ratings, users, items


def _read(path: Path, **options) -> pd.DataFrame:
    try:
        return pd.read_csv(path, **options)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise FeedError(
            f"movielens feed: cannot read {path}: {err}. Pass path= a GroupLens ml-100k "
            "folder holding u.data, u.user and u.item, or reinstall recbole==1.2.1"
        ) from err
