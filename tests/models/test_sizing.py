"""Sizes from the data: batch, learning rates, embedding width and hash sizes follow the rows."""

from __future__ import annotations

import math

import pytest

from quantrec.data_checks.schema import CategoricalFeature, FeatureSchema
from quantrec.models.sizing import (
    MAX_BATCH,
    MIN_BATCH,
    auto_batch_size,
    auto_initial_accumulator,
    auto_learning_rate,
    auto_model_size,
    auto_training_size,
)


def _schema(*sizes: int) -> FeatureSchema:
    return FeatureSchema(
        dense=("x",),
        categorical=tuple(
            CategoricalFeature(name=f"c{i}", hash_size=s) for i, s in enumerate(sizes)
        ),
    )


@pytest.mark.parametrize(
    ("rows", "batch"),
    [(1, MIN_BATCH), (2_000, 64), (280_000, 1024), (1_000_000, 2048), (10**9, MAX_BATCH)],
)
def test_batch_size_grows_as_the_root_of_the_rows(rows, batch) -> None:
    assert auto_batch_size(rows) == batch
    steps = math.ceil(rows / batch)
    if 2_000 <= rows <= 1_000_000:  # neither 2 steps of a small window nor 1000s of a big one
        assert 30 <= steps <= 500


def test_learning_rate_follows_the_square_root_rule() -> None:
    assert auto_learning_rate(1024) == pytest.approx(3e-3)
    assert auto_learning_rate(256) == pytest.approx(1.5e-3)
    assert auto_initial_accumulator(1024) == pytest.approx(0.01 / 1024**2)


def test_training_size_keeps_what_the_user_set() -> None:
    auto = auto_training_size(2_000)
    assert (auto.batch_size, auto.learning_rate) == (64, pytest.approx(3e-3 * math.sqrt(64 / 1024)))
    given = auto_training_size(2_000, batch_size=256, learning_rate=0.01)
    assert (given.batch_size, given.learning_rate) == (256, 0.01)
    assert given.initial_accumulator == auto_initial_accumulator(256)


@pytest.mark.parametrize("bad", [0, -5])
def test_sizes_need_rows(bad) -> None:
    with pytest.raises(ValueError, match=f"got {bad}"):
        auto_batch_size(bad)
    with pytest.raises(ValueError, match=f"got {bad}"):
        auto_model_size(_schema(10), bad)


@pytest.mark.parametrize(("rows", "dim"), [(2_000, 8), (280_000, 16), (2_000_000, 32)])
def test_embedding_width_follows_the_rows(rows, dim) -> None:
    size = auto_model_size(_schema(50_000, 24), rows)
    assert size.embedding_dim == dim
    assert size.bottom_mlp() == (64, dim)
    assert any(r.startswith(f"embedding_dim {dim}:") for r in size.reasons)


def test_small_vocabularies_cap_the_width() -> None:
    # 6 * 8 ** 0.25 = 10.1 -> 8 even with many rows: tiny tables need no wide rows.
    assert auto_model_size(_schema(8, 4), 5_000_000).embedding_dim == 8


def test_hash_sizes_follow_the_vocabulary_and_the_rows_never_above_the_schema() -> None:
    schema = _schema(100_000, 100_000, 50)
    size = auto_model_size(schema, 2_000, vocabulary={"c0": 900})
    assert size.hash_sizes == {"c0": 4096, "c1": 8192, "c2": 50}
    shrunk = size.apply(schema)
    assert shrunk.hash_sizes == [4096, 8192, 50]
    assert shrunk.dense == schema.dense
    # Enough rows: the schema's sizes stand.
    assert auto_model_size(schema, 10**6).hash_sizes == {"c0": 100_000, "c1": 100_000, "c2": 50}


def test_user_values_are_kept_and_unknown_features_refused() -> None:
    size = auto_model_size(_schema(1000), 2_000, embedding_dim=12, hash_sizes={"c0": 77})
    assert (size.embedding_dim, size.hash_sizes) == (12, {"c0": 77})
    assert "set by the user" in size.reasons[0]
    with pytest.raises(ValueError, match=r"\['nope'\].*\['c0'\]"):
        auto_model_size(_schema(1000), 2_000, vocabulary={"nope": 3})


def test_sizes_are_a_pure_function_of_their_inputs() -> None:
    schema = _schema(50_000, 583)
    assert auto_model_size(schema, 123_456) == auto_model_size(schema, 123_456)
