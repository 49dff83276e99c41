"""A feed with ids only (a table spec without a dense column) trains, quantizes and
scores: its batches carry one constant dense column, so the bottom MLP learns a bias."""

import numpy as np
import pandas as pd
import torch

from quantrec.data_checks.schema import CategoricalFeature, FeatureSchema
from quantrec.models.batch import batch_from_frame, dense_width
from quantrec.models.dlrm import DLRM
from quantrec.models.plan import PrecisionPlan
from quantrec.models.quantize import uniform_plan
from quantrec.models.scorer import predict_proba
from quantrec.models.train import train_dlrm

SCHEMA = FeatureSchema(
    dense=(),
    categorical=(
        CategoricalFeature(name="user", hash_size=64),
        CategoricalFeature(name="item", hash_size=32),
    ),
)


def _frame(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    user, item = rng.integers(0, 50, rows), rng.integers(0, 20, rows)
    p = 1 / (1 + np.exp(-(0.15 * (user % 7) - 0.1 * (item % 5))))
    return pd.DataFrame(
        {"label": (rng.random(rows) < p).astype(np.int8), "user": user, "item": item}
    )


def test_an_id_only_feed_trains_quantizes_and_scores():
    batch = batch_from_frame(_frame(2000, 0), SCHEMA)
    assert dense_width(SCHEMA) == 1 and batch.dense.shape == (2000, 1)
    assert torch.equal(batch.dense, torch.ones(2000, 1))
    torch.manual_seed(0)
    model = DLRM.from_schema(SCHEMA, embedding_dim=8, bottom_mlp=(16, 8), top_mlp=(16, 1))
    report = train_dlrm(model, batch, seed=0, epochs=2, batch_size=256)
    assert report.steps == 16
    held = batch_from_frame(_frame(500, 1), SCHEMA)
    fp32 = predict_proba(model, held)
    int8 = PrecisionPlan.from_precisions(uniform_plan(model, "int8")).apply(model, calibration=held)
    assert np.isfinite(fp32).all() and np.abs(predict_proba(int8, held) - fp32).max() < 0.05
