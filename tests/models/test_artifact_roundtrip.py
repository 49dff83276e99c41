"""Artifacts: tensors and JSON only, reloaded bit-identical for fp32, int8 and compressed tables."""

from __future__ import annotations

import json

import pytest
import torch

from quantrec.data_checks.schema import SchemaError
from quantrec.models.artifact import ArtifactError, load_model, save_model
from quantrec.models.codec import decode_table
from quantrec.models.quantize import (
    apply_precision_plan,
    build_variant,
    precision_plan,
    quantizable_units,
)
from quantrec.models.scorer import score
from quantrec.models.train import train_dlrm


@pytest.fixture
def trained(make_model, make_batch):
    model = make_model(seed=7)
    train_dlrm(model, make_batch(rows=256), epochs=1, batch_size=64, learning_rate=0.02, seed=0)
    return model


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_reloaded_model_reproduces_outputs_bit_for_bit(
    trained, make_batch, tiny_schema, tmp_path, precision
) -> None:
    variant = build_variant(trained, precision)
    path = save_model(variant, tmp_path / "model", schema=tiny_schema, precision=precision)
    loaded = load_model(path)

    assert loaded.precision == precision
    assert loaded.schema == tiny_schema
    assert precision_plan(loaded.model) == precision_plan(variant)
    assert not loaded.model.training
    batch = make_batch(rows=300, seed=3)
    with torch.inference_mode():
        assert torch.equal(loaded.model(batch), variant(batch))
    assert score(loaded.model, batch, batch_size=128) == score(variant, batch, batch_size=128)


def test_weights_are_a_plain_tensor_dict_readable_with_weights_only(
    trained, tiny_schema, tmp_path
) -> None:
    int8 = build_variant(trained, "int8")
    path = save_model(int8, tmp_path, schema=tiny_schema, precision="int8")
    weights = torch.load(path / "weights.pt", weights_only=True)
    assert type(weights) is dict
    assert all(type(t) is torch.Tensor for t in weights.values())
    assert weights["sparse_arch.embedding_bags.0.packed_weight"].dtype == torch.uint8
    assert weights["over_arch.mlp.0.weight_int8"].dtype == torch.int8

    recipe = json.loads((path / "recipe.json").read_text())
    assert recipe["format_version"] == 1
    assert recipe["precision"] == "int8"
    assert recipe["architecture"] == trained.architecture()
    assert set(recipe["precision_plan"].values()) == {"int8"}
    assert not list(path.glob("*.tmp"))


def test_loading_does_not_shift_the_callers_random_stream(trained, tiny_schema, tmp_path) -> None:
    save_model(trained, tmp_path, schema=tiny_schema, precision="fp32")
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    load_model(tmp_path)
    assert torch.equal(torch.rand(3), expected)


def test_precision_label_must_describe_the_model(trained, tiny_schema, tmp_path) -> None:
    with pytest.raises(ArtifactError, match="precision 'int8' does not describe the model"):
        save_model(trained, tmp_path, schema=tiny_schema, precision="int8")


def test_schema_must_match_the_model(trained, tiny_schema, tmp_path) -> None:
    other = tiny_schema.model_copy(update={"dense": ("clicks_7d",)})
    with pytest.raises(SchemaError, match="model has 2, schema has 1"):
        save_model(trained, tmp_path, schema=other, precision="fp32")


def test_incomplete_or_foreign_artifacts_are_rejected(trained, tiny_schema, tmp_path) -> None:
    with pytest.raises(ArtifactError, match="lacks"):
        load_model(tmp_path)
    save_model(trained, tmp_path, schema=tiny_schema, precision="fp32")
    recipe = json.loads((tmp_path / "recipe.json").read_text())
    (tmp_path / "recipe.json").write_text(json.dumps({**recipe, "format_version": 99}))
    with pytest.raises(ArtifactError, match="format_version 99"):
        load_model(tmp_path)


def test_compressed_tables_are_stored_encoded_and_reload_to_the_same_outputs(
    trained, make_batch, tiny_schema, tmp_path
) -> None:
    plan = {
        name: "ebc_0.01" if name.startswith("sparse_arch.") else "fp32"
        for name in quantizable_units(trained)
    }
    variant = apply_precision_plan(trained, plan)
    path = save_model(variant, tmp_path / "model", schema=tiny_schema, precision="searched")
    weights = torch.load(path / "weights.pt", weights_only=True)
    tables = {k: t for k, t in weights.items() if k.startswith("sparse_arch.")}
    assert sorted(tables) == [f"sparse_arch.embedding_bags.{i}.encoded" for i in range(3)]
    assert all(t.dtype == torch.uint8 and t.dim() == 1 for t in tables.values())
    for i, bag in enumerate(trained.sparse_arch.embedding_bags):
        # The bytes on disk are the codec's plain bytes: they decode without the model.
        decoded = decode_table(tables[f"sparse_arch.embedding_bags.{i}.encoded"].numpy().tobytes())
        bound = 0.01 * float(bag.weight.detach().max() - bag.weight.detach().min())
        assert (decoded - bag.weight.detach()).abs().max() <= bound

    loaded = load_model(path)
    assert precision_plan(loaded.model) == plan
    batch = make_batch(rows=300, seed=3)
    with torch.inference_mode():
        assert torch.equal(loaded.model(batch), variant(batch))
    assert score(loaded.model, batch, batch_size=128) == score(variant, batch, batch_size=128)

    cut = {
        **weights,
        "sparse_arch.embedding_bags.1.encoded": tables["sparse_arch.embedding_bags.1.encoded"][:-5],
    }
    torch.save(cut, path / "weights.pt")
    with pytest.raises(ArtifactError, match=r"table sparse_arch.embedding_bags.1: frame has"):
        load_model(path)
