"""Multi-valued categorical columns become jagged bags, from Python lists or Parquet lists."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from quantrec.data_checks.schema import CategoricalFeature, FeatureSchema, SchemaError
from quantrec.models.batch import batch_from_frame, hash_ids

SCHEMA = FeatureSchema(
    dense=("age",),
    categorical=(
        CategoricalFeature(name="user", hash_size=100),
        CategoricalFeature(name="genres", hash_size=50, multi_valued=True),
    ),
)


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "label": np.array([1, 0, 1, 0], dtype=np.int8),
            "age": [20.0, 30.0, 40.0, 50.0],
            "user": np.array([7, 3, 5, 1]),
            "genres": [["drama", "comedy"], [], ["war", "drama", "noir"], None],
        }
    )


def test_bags_follow_the_lists_and_a_missing_bag_is_empty() -> None:
    batch = batch_from_frame(_frame(), SCHEMA)
    genres = batch.sparse.keys.index("genres")
    assert batch.sparse.offsets[genres].tolist() == [0, 2, 2, 5]
    assert batch.sparse.lengths()[genres].tolist() == [2, 0, 3, 0]
    expected = hash_ids(np.array(["drama", "comedy", "war", "drama", "noir"], dtype=object), 50)
    assert batch.sparse.values[genres].tolist() == expected.tolist()
    user = batch.sparse.keys.index("user")
    assert batch.sparse.offsets[user].tolist() == [0, 1, 2, 3]


def test_a_parquet_list_column_gives_the_same_bags(tmp_path) -> None:
    path = tmp_path / "day.parquet"
    pq.write_table(pa.Table.from_pandas(_frame(), preserve_index=False), path)
    from_file = batch_from_frame(pq.read_table(path).to_pandas(), SCHEMA)
    in_memory = batch_from_frame(_frame(), SCHEMA)
    for a, b in zip(from_file.sparse.values, in_memory.sparse.values):
        assert a.tolist() == b.tolist()
    integer_ids = _frame().assign(genres=[[1, 2], [], [3, 1, 4], None])
    assert (
        batch_from_frame(integer_ids, SCHEMA).sparse.values[1].tolist()
        == hash_ids(np.array([1, 2, 3, 1, 4]), 50).tolist()
    )


def test_bags_survive_take_and_slice() -> None:
    batch = batch_from_frame(_frame(), SCHEMA)
    import torch

    taken = batch.take(torch.tensor([2, 0]))
    assert taken.sparse.lengths()[1].tolist() == [3, 2]
    assert batch.slice(1, 3).sparse.lengths()[1].tolist() == [0, 3]


def test_a_scalar_in_a_multi_valued_column_is_a_schema_error() -> None:
    with pytest.raises(SchemaError, match="'genres'.*list of ids"):
        batch_from_frame(_frame().assign(genres=[1, 2, 3, 4]), SCHEMA)


def test_a_hundred_thousand_arrow_backed_bags_keep_their_lengths() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 4, size=100_000)
    flat = rng.integers(0, 19, size=int(lengths.sum()))
    bags = pa.ListArray.from_arrays(np.r_[0, np.cumsum(lengths)].astype(np.int32), flat)
    frame = pd.DataFrame(
        {
            "label": (rng.random(100_000) < 0.5).astype(np.int8),
            "age": rng.random(100_000),
            "user": rng.integers(0, 1000, 100_000),
            "genres": pd.Series(bags.to_pandas()),
        }
    )
    batch = batch_from_frame(frame, SCHEMA)
    assert batch.sparse.lengths()[1].tolist() == lengths.tolist()
