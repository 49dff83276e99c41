"""Slices of a day's rows: head ids by traffic share, masks on a hand-made frame."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from quantrec.models.slices import SliceError, head_ids, slice_masks


def test_head_ids_cover_the_share_of_traffic_most_frequent_first() -> None:
    reference = ["a"] * 5 + ["b"] * 3 + ["c"] + ["d"]  # 10 impressions
    assert head_ids(reference, 0.5).tolist() == ["a"]  # 5 / 10 reaches 50 % exactly
    assert head_ids(reference, 0.6).tolist() == ["a", "b"]  # the id crossing the line is head
    assert head_ids(reference, 1.0).tolist() == ["a", "b", "c", "d"]  # ties: ascending id


def test_head_ids_flatten_bags_and_refuse_a_bad_share() -> None:
    assert head_ids(pd.Series([[1, 2], [1], [], None]), 0.5).tolist() == [1]
    assert head_ids([], 0.5).size == 0
    with pytest.raises(SliceError, match="share"):
        head_ids([1, 2], 0.0)


def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user": [1, 2, 3, 1, 4],
            "item": ["x", "y", "x", "z", "x"],
            "history": [["x", "y"], ["x"], [], None, ["z"]],
            "country": ["de", "fr", "de", "us", "de"],
        }
    )


def test_new_and_returning_users_and_head_and_tail_items() -> None:
    masks = slice_masks(
        frame(), user_column="user", item_column="item", seen_users={1, 3}, head_items=["x"]
    )
    assert masks["users=new"].tolist() == [False, True, False, False, True]
    assert masks["users=returning"].tolist() == [True, False, True, True, False]
    assert masks["items=head"].tolist() == [True, False, True, False, True]
    assert masks["items=tail"].tolist() == [False, True, False, True, False]
    assert all(m.dtype == bool and m.shape == (5,) for m in masks.values())


def test_item_bags_are_tail_when_any_item_is_tail_and_empty_bags_are_head() -> None:
    masks = slice_masks(frame(), item_column="history", head_items=["x"])
    assert masks["items=tail"].tolist() == [True, False, False, False, True]
    assert masks["items=head"].tolist() == [False, True, True, True, False]


def test_user_bags_are_new_when_no_id_was_seen() -> None:
    users = pd.DataFrame({"users": [[1, 9], [9], [], None]})
    masks = slice_masks(users, user_column="users", seen_users=[1])
    assert masks["users=new"].tolist() == [False, True, True, True]


def test_extra_columns_give_one_slice_per_frequent_value() -> None:
    masks = slice_masks(frame(), slice_columns=["country"], max_values=2)
    assert list(masks) == ["country=de", "country=fr"]  # de (3), then fr/us tie: by value
    assert masks["country=de"].tolist() == [True, False, True, False, True]
    bags = slice_masks(frame(), slice_columns=["history"], max_values=1)
    assert bags["history=x"].tolist() == [True, True, False, False, False]


def test_duplicated_index_keeps_rows_apart() -> None:
    day = frame().set_index(pd.Index([0, 0, 1, 1, 2]))
    masks = slice_masks(day, item_column="history", head_items=["x"])
    assert masks["items=tail"].tolist() == [True, False, False, False, True]


def test_missing_columns_and_references_are_named() -> None:
    with pytest.raises(SliceError, match="'device'"):
        slice_masks(frame(), slice_columns=["device"])
    with pytest.raises(SliceError, match="seen_users"):
        slice_masks(frame(), user_column="user")
    with pytest.raises(SliceError, match="head_items"):
        slice_masks(frame(), item_column="item")
    assert slice_masks(frame()) == {}
    assert isinstance(head_ids(np.array([3, 3, 1]), 0.5), np.ndarray)


def test_a_day_without_rows_or_ids_gives_masks_not_errors() -> None:
    empty = pd.DataFrame(
        {"user": pd.Series([], dtype="int64"), "item": pd.Series([], dtype=object)}
    )
    masks = slice_masks(
        empty,
        user_column="user",
        item_column="item",
        seen_users=[],
        head_items=head_ids([], 0.8),
        slice_columns=["item"],
    )
    assert set(masks) == {"users=new", "users=returning", "items=head", "items=tail"}
    assert all(m.shape == (0,) and m.dtype == bool for m in masks.values())
    missing = pd.DataFrame({"user": [None, None], "item": [None, None]})
    masks = slice_masks(
        missing,
        user_column="user",
        item_column="item",
        seen_users=[1],
        head_items=head_ids(pd.Series([None]), 0.8),
        slice_columns=["item"],
    )
    assert masks["users=new"].all() and masks["items=head"].all()  # nothing known: new, head
    assert not any(k.startswith("item=") for k in masks)
