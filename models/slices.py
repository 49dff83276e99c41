"""Row slices of a day for the promotion gate: new vs returning users, head vs tail items,
and one slice per frequent value of configured columns.

A slice is a boolean mask of shape (B,) over the day's rows, named ``<dimension>=<value>``:
``users=new``, ``users=returning``, ``items=head``, ``items=tail``, ``<column>=<value>``.
Slices may overlap (a row is in one ``users=`` slice, one ``items=`` slice and one slice per
configured column); each pair ``users=new`` / ``users=returning`` and ``items=head`` /
``items=tail`` partitions the rows.

Ids are compared as raw values (before hashing into tables), so ``seen_users`` and
``head_items`` must hold the same kind of values as the frame's columns (int vs str).

Bag (list-valued) columns, e.g. a history of clicked items:

* users: a row is ``users=new`` when none of the ids in its bag was seen (an empty or
  missing bag is new: nothing about it is known);
* items: a row is ``items=tail`` when at least one of its items is a tail item, else
  ``items=head`` (an empty bag, like a missing scalar id, is head). Why "any": a quantized
  or stale model fails first on rarely-trained embedding rows, and one rare item is enough
  for a row to depend on one;
* extra columns: a row is in ``<column>=<value>`` when the value occurs in its bag.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd


class SliceError(ValueError):
    """A slice cannot be built: a missing column or an invalid setting."""


def head_ids(reference_ids: Iterable, share: float) -> np.ndarray:
    """The most frequent ids that together make ``share`` of the reference traffic.

    Ids are ranked by descending count in ``reference_ids`` (ties by ascending id, so the
    result is deterministic); the shortest prefix whose counts reach ``share`` of all
    occurrences is returned, so the id that crosses the line is head.

    Args:
        reference_ids: shape (R,) ids, one per impression; bag cells (lists) are flattened,
            missing values ignored.
        share: in (0, 1], e.g. 0.5: the ids covering the top half of traffic.

    Returns:
        shape (H,) the head ids, most frequent first (empty if there is no traffic).
    """
    if not 0.0 < share <= 1.0:
        raise SliceError(f"head traffic share must lie in (0, 1], got {share}")
    series = (
        pd.Series(reference_ids)
        if isinstance(reference_ids, (pd.Series, np.ndarray))
        else pd.Series(list(reference_ids))
    )
    counts = _flat(series).value_counts(sort=False)
    if counts.empty:
        return np.asarray([])
    ids, values = counts.index.to_numpy(), counts.to_numpy()
    order = np.lexsort((ids, -values))  # last key first: count descending, then id
    cumulative = np.cumsum(values[order])
    keep = int(np.searchsorted(cumulative, share * cumulative[-1] - 1e-9)) + 1
    return ids[order][:keep]


def slice_masks(
    frame: pd.DataFrame,
    *,
    user_column: str | None = None,
    item_column: str | None = None,
    seen_users: Iterable | None = None,
    head_items: Iterable | None = None,
    slice_columns: Sequence[str] = (),
    max_values: int = 10,
) -> dict[str, np.ndarray]:
    """Named boolean masks, each shape (len(frame),), over the rows of ``frame``.

    Args:
        frame: the day's rows, raw (unhashed) id columns.
        user_column: gives ``users=new`` / ``users=returning``; needs ``seen_users``, the
            user ids of the training window (or any reference).
        item_column: gives ``items=head`` / ``items=tail``; needs ``head_items`` (see
            ``head_ids``).
        slice_columns: one slice per value of each column, capped to its ``max_values``
            most frequent values on ``frame`` (ties by value); missing values get none.
        max_values: at least 1.

    Raises:
        SliceError: a named column is missing, a needed reference is None, or max_values < 1.
    """
    named = [c for c in (user_column, item_column, *slice_columns) if c is not None]
    missing = [c for c in named if c not in frame.columns]
    if missing:
        raise SliceError(
            f"slice column(s) {missing} are not in the frame; it has {list(frame.columns)} "
            "(fix gate.user_column / gate.item_column / gate.slice_columns)"
        )
    if max_values < 1:
        raise SliceError(f"max_values must be at least 1, got {max_values}")
    masks: dict[str, np.ndarray] = {}
    if user_column is not None:
        if seen_users is None:
            raise SliceError(f"user_column={user_column!r} needs seen_users (reference ids)")
        returning = _any_in(frame[user_column], _values(seen_users))
        masks["users=new"], masks["users=returning"] = ~returning, returning
    if item_column is not None:
        if head_items is None:
            raise SliceError(f"item_column={item_column!r} needs head_items (see head_ids)")
        tail = _any_not_in(frame[item_column], _values(head_items))
        masks["items=head"], masks["items=tail"] = ~tail, tail
    for column in slice_columns:
        values = _flat(frame[column]).value_counts(sort=False)
        order = np.lexsort((values.index.to_numpy(), -values.to_numpy()))
        for value in values.index.to_numpy()[order][:max_values]:
            masks[f"{column}={value}"] = _any_in(frame[column], np.asarray([value]))
    return masks


def _is_bag(column: pd.Series) -> bool:
    if column.dtype != object:
        return False
    first = column.dropna()
    return not first.empty and isinstance(first.iloc[0], (list, tuple, np.ndarray))


def _flat(column: pd.Series) -> pd.Series:
    """Every non-missing id of a plain or bag column, one per element."""
    return (column.explode() if _is_bag(column) else column).dropna()


def _values(ids: Iterable) -> np.ndarray:
    return ids if isinstance(ids, np.ndarray) else np.asarray(list(ids), dtype=object)


def _any_in(column: pd.Series, ids: np.ndarray) -> np.ndarray:
    """bool (B,): the row's id (or any id of its bag) is in ``ids``."""
    if not _is_bag(column):
        return column.isin(ids).to_numpy()
    exploded = column.reset_index(drop=True).explode()  # a duplicated index would merge rows
    hit = exploded.isin(ids) & exploded.notna()
    return hit.groupby(level=0, sort=True).any().to_numpy(dtype=bool)


def _any_not_in(column: pd.Series, ids: np.ndarray) -> np.ndarray:
    """bool (B,): the row's id (or any id of its bag) is present and not in ``ids``."""
    if not _is_bag(column):
        return (column.notna() & ~column.isin(ids)).to_numpy()
    exploded = column.reset_index(drop=True).explode()
    miss = exploded.notna() & ~exploded.isin(ids)
    return miss.groupby(level=0, sort=True).any().to_numpy(dtype=bool)
