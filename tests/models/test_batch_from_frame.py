"""Typed batches: frame conversion, id hashing, jagged slicing and gathering."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from quantrec.data_checks.schema import SchemaError
from quantrec.models.batch import Batch, KeyedJaggedIds, batch_from_frame, hash_ids


def _multi_valued() -> KeyedJaggedIds:
    #          s0       s1      s2         s3
    # "user"   [7]      [3]     [5]        [1]
    # "genre"  [1, 2]   []      [4, 0, 9]  [6]
    return KeyedJaggedIds(
        keys=("user", "genre"),
        values=(torch.tensor([7, 3, 5, 1]), torch.tensor([1, 2, 4, 0, 9, 6])),
        offsets=(torch.tensor([0, 1, 2, 3]), torch.tensor([0, 2, 2, 5])),
    )


def test_hash_ids_golden_values_pin_cross_process_determinism() -> None:
    # Values recorded in another process: a salted hash would change them between runs.
    assert hash_ids(np.array([0, 1, 42, -7]), 1000).tolist() == [0, 789, 962, 691]
    assert hash_ids(np.array(["a", "item-3", ""], dtype=object), 1000).tolist() == [504, 843, 774]


def test_hash_ids_range_dtype_and_int_width() -> None:
    ids = np.arange(-500, 5000)
    hashed = hash_ids(ids, 37)
    assert hashed.dtype == np.int64
    assert hashed.min() >= 0 and hashed.max() < 37
    assert len(np.unique(hashed)) == 37
    np.testing.assert_array_equal(hash_ids(ids.astype(np.int32), 37), hashed)
    unicode, objects = np.array(["x", "y"]), np.array(["x", "y"], dtype=object)
    np.testing.assert_array_equal(hash_ids(unicode, 5), hash_ids(objects, 5))


def test_hash_ids_rejects_floats_and_bad_sizes() -> None:
    with pytest.raises(ValueError, match="float64"):
        hash_ids(np.array([1.0, 2.0]), 10)
    with pytest.raises(ValueError, match="got 0"):
        hash_ids(np.array([1, 2]), 0)


def test_batch_from_frame_transforms_and_hashes(tiny_schema, make_frame) -> None:
    frame = make_frame(rows=6)
    frame.loc[0, "price"] = -3.0  # log1p(max(x, 0)) clamps negatives to 0
    batch = batch_from_frame(frame, tiny_schema)

    assert len(batch) == 6
    assert batch.dense.dtype == torch.float32 and batch.dense.shape == (6, 2)
    expected = np.log1p(np.maximum(frame[["clicks_7d", "price"]].to_numpy(), 0.0)).astype(
        np.float32
    )
    np.testing.assert_allclose(batch.dense.numpy(), expected, rtol=1e-6)
    assert batch.dense[0, 1] == 0.0
    assert batch.labels.dtype == torch.float32
    np.testing.assert_array_equal(batch.labels.numpy(), frame["label"].to_numpy())
    assert batch.sparse.keys == ("user", "item", "hour")
    np.testing.assert_array_equal(
        batch.sparse.values[1].numpy(), hash_ids(frame["item"].to_numpy(), 61)
    )
    for offsets in batch.sparse.offsets:
        assert offsets.tolist() == list(range(6))


def test_batch_from_frame_without_transform(tiny_schema, make_frame) -> None:
    schema = tiny_schema.model_copy(update={"dense_transform": "none"})
    frame = make_frame(rows=4)
    batch = batch_from_frame(frame, schema)
    np.testing.assert_allclose(
        batch.dense.numpy(), frame[["clicks_7d", "price"]].to_numpy(np.float32)
    )


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("price", np.nan, "price"),
        ("label", 2, "label"),
        ("user", 1.5, "user"),
    ],
)
def test_batch_from_frame_names_the_bad_column(
    tiny_schema, make_frame, column, value, message
) -> None:
    frame = make_frame(rows=4)
    frame[column] = frame[column].astype(float)
    frame.loc[1, column] = value
    with pytest.raises(SchemaError, match=message):
        batch_from_frame(frame, tiny_schema)


def test_batch_from_frame_missing_column(tiny_schema, make_frame) -> None:
    frame = make_frame(rows=4).drop(columns=["item"])
    with pytest.raises(ValueError, match=r"\['item'\]"):
        batch_from_frame(frame, tiny_schema)


def test_slice_of_single_valued_batch_matches_sliced_frame(tiny_schema, make_frame) -> None:
    frame = make_frame(rows=10)
    whole = batch_from_frame(frame, tiny_schema).slice(3, 7)
    part = batch_from_frame(frame.iloc[3:7].reset_index(drop=True), tiny_schema)
    assert len(whole) == 4
    torch.testing.assert_close(whole.dense, part.dense)
    torch.testing.assert_close(whole.labels, part.labels)
    for a, b in zip(
        whole.sparse.values + whole.sparse.offsets, part.sparse.values + part.sparse.offsets
    ):
        assert torch.equal(a, b)


def test_slice_of_multi_valued_bags() -> None:
    ids = _multi_valued().slice(1, 3)
    assert ids.batch_size == 2
    assert ids.values[0].tolist() == [3, 5]
    assert ids.values[1].tolist() == [4, 0, 9]
    assert ids.offsets[1].tolist() == [0, 0]
    assert [t.tolist() for t in ids.lengths()] == [[1, 1], [0, 3]]

    tail = _multi_valued().slice(2, 100)  # clamped like Python slicing
    assert tail.values[1].tolist() == [4, 0, 9, 6]
    assert tail.offsets[1].tolist() == [0, 3]
    assert _multi_valued().slice(3, 1).batch_size == 0


def test_take_gathers_multi_valued_bags_in_order() -> None:
    ids = _multi_valued().take(torch.tensor([2, 0, 3, 1]))
    assert ids.values[0].tolist() == [5, 7, 1, 3]
    assert ids.values[1].tolist() == [4, 0, 9, 1, 2, 6]
    assert ids.offsets[1].tolist() == [0, 3, 5, 6]


def test_batch_take_and_slice_keep_rows_aligned(make_batch) -> None:
    batch = make_batch(rows=8)
    order = torch.tensor([5, 1, 7])
    taken = batch.take(order)
    torch.testing.assert_close(taken.dense, batch.dense[order])
    torch.testing.assert_close(taken.labels, batch.labels[order])
    assert torch.equal(taken.sparse.values[2], batch.sparse.values[2][order])


def test_inconsistent_parts_are_rejected() -> None:
    with pytest.raises(ValueError, match="one bag per sample"):
        KeyedJaggedIds(
            keys=("a", "b"),
            values=(torch.tensor([1]), torch.tensor([1, 2])),
            offsets=(torch.tensor([0]), torch.tensor([0, 1])),
        )
    with pytest.raises(ValueError, match="int64"):
        KeyedJaggedIds(
            keys=("a",),
            values=(torch.tensor([1], dtype=torch.int32),),
            offsets=(torch.tensor([0]),),
        )
    with pytest.raises(ValueError, match="dense 4, sparse 4, labels 3"):
        Batch(dense=torch.zeros(4, 2), sparse=_multi_valued(), labels=torch.zeros(3))
