"""Ranking queries of one day and the typed candidate rows a DLRM scores for them.

A *query* is one user of day D with a candidate set: MovieLens-100K scores the whole
catalogue, the synthetic feed the item ids seen in the training window. Its relevant items
are the items the user clicked (label 1) on D.

Candidate rows: the model scores (user, item) rows, so each candidate needs every feature
the model reads. The choice made here, and why:

* user-side columns (every column the catalogue does not hold: the user id, the user's
  profile, the user's history counts, hour and weekday, the other ids of the synthetic
  feed) come from the query's *context*, the user's first row of D (in the day's row
  order). A user's history features are counted over the days before D, so every row of
  the user on D holds the same values; the first row fixes the time-of-day ones.
* item-side columns come from the *catalogue*, one row per candidate item: its id and
  every item-derived column (MovieLens: genres, release bucket, the item's history counts
  and days since release as of D). The caller builds it, since which columns are
  item-derived is the feed's knowledge.

``CandidateBatcher`` hashes the catalogue once and broadcasts each query's context over it,
so building a 14k-candidate batch costs one 1-row ``batch_from_frame`` and a few tensor
fills instead of hashing 14k x F ids per query. The result is exactly
``batch_from_frame(candidate_frame(context, catalogue), schema)`` (a test checks it).
Candidate rows' labels are 1.0 for the query's relevant items, else 0.0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from quantrec.data_checks.schema import FeatureSchema
from quantrec.models.batch import Batch, KeyedJaggedIds, batch_from_frame


class QueryError(ValueError):
    """Queries cannot be built: a column is missing, a candidate is not in the catalogue."""


@dataclass(frozen=True)
class Query:
    """One user of one day.

    Attributes:
        user: the raw user id (as in the user column).
        day: the day's label, e.g. "1997-10-21".
        context: the user's first row of the day, a 1-row frame (every partition column,
            dtypes kept: an id hashes by its dtype).
        relevant: raw item ids the user clicked on the day (at least one).
    """

    user: object
    day: str
    context: pd.DataFrame
    relevant: frozenset


def day_queries(
    frame: pd.DataFrame, *, day: str, user_column: str, item_column: str, label_column: str
) -> list[Query]:
    """One query per user of ``frame`` (one day) with at least one click, by user id.

    Users without a click are left out: NDCG and HR are undefined without a relevant item.
    """
    missing = [c for c in (user_column, item_column, label_column) if c not in frame.columns]
    if missing:
        raise QueryError(
            f"day {day}: column(s) {missing} missing for queries; the frame has "
            f"{list(frame.columns)} (check gate.user_column / gate.item_column)"
        )
    clicked = frame[frame[label_column] == 1]
    relevant = clicked.groupby(user_column, sort=True)[item_column].agg(frozenset)
    first = frame.drop_duplicates(user_column, keep="first").reset_index(drop=True)
    row_of = pd.Series(first.index, index=first[user_column])
    return [
        Query(user=user, day=day, context=first.iloc[[row_of[user]]], relevant=items)
        for user, items in relevant.items()
    ]


def sample_queries(queries: Sequence[Query], count: int, *, seed: int) -> list[Query]:
    """``count`` queries drawn without replacement (all when fewer), in their given order."""
    if count < 1:
        raise QueryError(f"count must be at least 1, got {count}")
    if len(queries) <= count:
        return list(queries)
    chosen = np.sort(np.random.default_rng(seed).choice(len(queries), count, replace=False))
    return [queries[i] for i in chosen]


def candidate_frame(context: pd.DataFrame, catalogue: pd.DataFrame) -> pd.DataFrame:
    """The N candidate rows of one query: the catalogue's columns, the context's others.

    Args:
        context: one row (the user's first row of the day), a 1-row frame.
        catalogue: N rows, the item id column and every item-derived column.

    Returns:
        N rows with the context's columns, in the context's order.
    """
    if len(context) != 1:
        raise QueryError(f"a query's context is one row, got {len(context)}")
    frame = catalogue.reset_index(drop=True).copy()
    for column in context.columns:
        if column not in frame.columns:
            value = context[column].iloc[0]
            # A list cell (a bag of ids) must be repeated per row, not spread over rows.
            frame[column] = [value] * len(frame) if _is_bag(value) else value
            frame[column] = frame[column].astype(context[column].dtype)
    return frame[list(context.columns)]


class CandidateBatcher:
    """Typed candidate rows of the queries of one day over one catalogue.

    Args:
        catalogue: N rows (candidate order), the item column and the item-derived columns.
        schema: the contract of the model(s) that will score the rows.
        item_column: the raw item id column; its values must be unique.
        template: any context (1-row frame) with every column of the schema (fills the catalogue's
            other columns once, to hash it; its values are overwritten per query).
    """

    def __init__(
        self,
        catalogue: pd.DataFrame,
        schema: FeatureSchema,
        *,
        item_column: str,
        template: pd.DataFrame,
    ) -> None:
        if item_column not in catalogue.columns:
            raise QueryError(
                f"the catalogue lacks the item column {item_column!r}; it has "
                f"{list(catalogue.columns)}"
            )
        items = catalogue[item_column].to_numpy()
        if pd.Series(items).duplicated().any():
            raise QueryError(f"the catalogue repeats item ids in {item_column!r}")
        self.schema, self.item_column = schema, item_column
        self.items = items
        self._position = pd.Index(items)
        self._item_side = set(catalogue.columns)
        self._catalogue = batch_from_frame(candidate_frame(template, catalogue), schema)
        # Which dense columns the context overwrites (a schema without dense columns has
        # one constant column, which no context changes).
        self._context_dense = [
            j for j, name in enumerate(schema.dense) if name not in self._item_side
        ]

    def __len__(self) -> int:
        return len(self.items)

    def batch(self, query: Query) -> Batch:
        """The N candidate rows of ``query``, in catalogue order (see the module docstring)."""
        context = batch_from_frame(query.context, self.schema)
        n = len(self.items)
        dense = self._catalogue.dense.clone()
        if self._context_dense:
            dense[:, self._context_dense] = context.dense[0, self._context_dense]
        values, offsets = [], []
        for key, v, o, cv in zip(
            self._catalogue.sparse.keys,
            self._catalogue.sparse.values,
            self._catalogue.sparse.offsets,
            context.sparse.values,
        ):
            if key in self._item_side:
                values.append(v)
                offsets.append(o)
            else:  # the context's bag, repeated for every candidate
                values.append(cv.repeat(n))
                offsets.append(torch.arange(n, dtype=torch.int64) * cv.numel())
        labels = np.isin(self.items, list(query.relevant)).astype(np.float32)
        return Batch(
            dense=dense,
            sparse=KeyedJaggedIds(
                keys=self._catalogue.sparse.keys, values=tuple(values), offsets=tuple(offsets)
            ),
            labels=torch.from_numpy(labels),
        )

    def positions(self, items: Sequence) -> np.ndarray:
        """Catalogue positions of raw item ids (int64), refusing ids it does not hold."""
        found = self._position.get_indexer(list(items))
        if (found < 0).any():
            unknown = [i for i, p in zip(items, found) if p < 0][:5]
            raise QueryError(
                f"{int((found < 0).sum())} candidate item(s) are not in the catalogue, e.g. "
                f"{unknown}; the catalogue holds {len(self.items)} items"
            )
        return found.astype(np.int64)


def _is_bag(value: object) -> bool:
    return isinstance(value, list | tuple | np.ndarray)
