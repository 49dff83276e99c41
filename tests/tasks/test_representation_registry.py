"""A DLRM with mixed embedding representations through the MLflow registry: logged as the
lifecycle logs a variant (weights and JSON only, a manifest of its files), loaded back by
``load_version``, scoring exactly as before."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import torch

from quantrec.data_checks.schema import CategoricalFeature, FeatureSchema
from quantrec.models.batch import batch_from_frame
from quantrec.models.dlrm import DLRM
from quantrec.models.train import train_dlrm
from quantrec.tasks.registry import _log_version
from quantrec.tasks.tracking import connect, experiment_id, load_version, record_manifest

MIXED = {
    "user": {"kind": "qr", "collisions": 8, "combine": "mult"},
    "item": {"kind": "hybrid", "combine": "concat", "hashes": 16, "hidden": [16]},
    "hour": {"kind": "dhe", "hashes": 16, "hidden": [16]},
}

SCHEMA = FeatureSchema(
    dense=("clicks_7d",),
    categorical=(
        CategoricalFeature(name="user", hash_size=97),
        CategoricalFeature(name="item", hash_size=61),
        CategoricalFeature(name="hour", hash_size=24),
    ),
)


def _frame(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    user = rng.integers(0, 40, rows)
    return pd.DataFrame(
        {
            "label": (rng.random(rows) < 0.2 + 0.5 * (user % 2)).astype(np.int64),
            "clicks_7d": rng.poisson(3.0, rows).astype(np.float64),
            "user": user,
            "item": rng.integers(0, 30, rows),
            "hour": rng.integers(0, 24, rows),
        }
    )


# A fresh embedded MLflow store costs its database migrations: 5-15 s on 2 shared cores
# once torch and MLflow are imported (30 s alone, imports included).
def test_mixed_representations_round_trip_through_the_registry():
    tiny_schema = SCHEMA
    torch.manual_seed(0)
    model = DLRM(
        num_dense=len(tiny_schema.dense),
        table_sizes=tiny_schema.hash_sizes,
        embedding_dim=4,
        bottom_mlp=[8, 4],
        top_mlp=[8],
        feature_names=tiny_schema.categorical_names,
        first_order=True,
        representations=MIXED,
    )
    batch = batch_from_frame(_frame(256, 0), tiny_schema)
    train_dlrm(model, batch, seed=0, epochs=1, batch_size=64, learning_rate=0.02)
    home, client = connect()
    experiment = experiment_id(client, home, "representations")  # artifacts in the home
    run_id = client.create_run(experiment).info.run_id
    try:
        version = _log_version(
            client, run_id, "fp32", model, tiny_schema, None, "mixed", {"quantrec.variant": "fp32"}
        )
        record_manifest(client, "mixed", version, run_id)
    finally:
        mlflow.end_run()
    loaded = load_version("mixed", version)

    assert loaded.model.architecture() == model.architecture()
    test = batch_from_frame(_frame(300, 3), tiny_schema)
    with torch.inference_mode():
        assert torch.equal(loaded.model(test), model(test))
