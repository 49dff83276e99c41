"""A version whose tables are stored with the error-bounded codec, through the MLflow
registry: logged as the lifecycle logs a variant (the tables as their encoded bytes, a
manifest of the files), loaded back by ``load_version``, scoring the NE it had when logged."""

from __future__ import annotations

import mlflow
import torch

from quantrec.models.batch import batch_from_frame
from quantrec.models.dlrm import DLRM
from quantrec.models.quantize import apply_precision_plan, quantizable_units
from quantrec.models.scorer import score
from quantrec.models.train import train_dlrm
from quantrec.tasks.registry import _log_version
from quantrec.tasks.tracking import connect, experiment_id, load_version, record_manifest

from .test_representation_registry import SCHEMA, _frame


def test_a_codec_stored_version_reloads_from_the_registry_with_its_ne():
    torch.manual_seed(0)
    model = DLRM(
        num_dense=len(SCHEMA.dense),
        table_sizes=SCHEMA.hash_sizes,
        embedding_dim=4,
        bottom_mlp=[8, 4],
        top_mlp=[8],
        feature_names=SCHEMA.categorical_names,
        first_order=True,
    )
    train_dlrm(model, batch_from_frame(_frame(512, 0), SCHEMA), seed=0, epochs=2, batch_size=64)
    plan = {
        unit: "ebc_0.01" if unit.startswith("sparse_arch.") else "fp32"
        for unit in quantizable_units(model)
    }
    variant = apply_precision_plan(model, plan)
    day = batch_from_frame(_frame(400, 5), SCHEMA)
    logged = score(variant, day, batch_size=128)
    home, client = connect()
    run_id = client.create_run(experiment_id(client, home, "codec-storage")).info.run_id
    try:
        version = _log_version(
            client, run_id, "searched", variant, SCHEMA, None, "codec", {"quantrec.variant": "x"}
        )
        record_manifest(client, "codec", version, run_id)
    finally:
        mlflow.end_run()

    loaded = load_version("codec", version)

    weights = loaded.model.state_dict()
    assert all(f"sparse_arch.embedding_bags.{i}.encoded" in weights for i in range(3))
    assert score(loaded.model, day, batch_size=128) == logged  # the NE it was logged with
