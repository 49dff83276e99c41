"""Tiny synthetic days for the models tests: a schema, a learnable frame, a small DLRM.

Helpers are fixtures returning functions (not importable modules) because several test
folders carry their own conftest.py and a bare ``import conftest`` could pick the wrong one.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
import torch

from quantrec.data_checks.schema import CategoricalFeature, FeatureSchema
from quantrec.models.batch import Batch, batch_from_frame
from quantrec.models.dlrm import DLRM


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny ops on 2 shared cores: intra-op threads wait on each other for milliseconds per op
    when another process holds a core (60x slower measured), and one thread keeps runs
    bit-reproducible. Restored after each test so other test folders keep their setting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_schema() -> FeatureSchema:
    """Two dense columns, integer user ids, string item ids, integer hour ids."""
    return FeatureSchema(
        dense=("clicks_7d", "price"),
        categorical=(
            CategoricalFeature(name="user", hash_size=97),
            CategoricalFeature(name="item", hash_size=61),
            CategoricalFeature(name="hour", hash_size=24),
        ),
    )


def _learnable_frame(rows: int, seed: int) -> pd.DataFrame:
    """Clicks follow a logistic model of user, item and clicks_7d, so a DLRM can learn them."""
    rng = np.random.default_rng(seed)
    # Fixed (seed-independent) ground truth so every day of the toy feed has the same signal.
    truth = np.random.default_rng(1234)
    user_effect, item_effect = truth.normal(0, 1.2, 40), truth.normal(0, 1.2, 30)
    user, item = rng.integers(0, 40, rows), rng.integers(0, 30, rows)
    clicks_7d = rng.poisson(3.0, rows).astype(np.float64)
    logit = user_effect[user] + item_effect[item] + 0.6 * np.log1p(clicks_7d) - 1.5
    label = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    return pd.DataFrame(
        {
            "label": label,
            "clicks_7d": clicks_7d,
            "price": rng.normal(10.0, 3.0, rows),
            "user": user,
            "item": np.array([f"item-{i}" for i in range(30)], dtype=object)[item],
            "hour": rng.integers(0, 24, rows),
        }
    )


@pytest.fixture
def make_frame() -> Callable[..., pd.DataFrame]:
    """``make_frame(rows=..., seed=...)`` -> a frame matching ``tiny_schema``."""
    return lambda *, rows=512, seed=0: _learnable_frame(rows, seed)


@pytest.fixture
def make_batch(tiny_schema: FeatureSchema) -> Callable[..., Batch]:
    """``make_batch(rows=..., seed=...)`` -> ``batch_from_frame`` of a learnable frame."""
    return lambda *, rows=512, seed=0: batch_from_frame(_learnable_frame(rows, seed), tiny_schema)


@pytest.fixture
def make_model(tiny_schema: FeatureSchema) -> Callable[..., DLRM]:
    """``make_model(seed=...)`` -> a small DLRM for ``tiny_schema``, seeded."""

    def build(*, seed: int = 0, embedding_dim: int = 4) -> DLRM:
        torch.manual_seed(seed)
        return DLRM.from_schema(
            tiny_schema, embedding_dim=embedding_dim, bottom_mlp=[8, embedding_dim], top_mlp=[8]
        )

    return build
