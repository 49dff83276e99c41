"""Embedding representations: shapes and gradients (multi-valued bags included), QR's
exactness, DHE's determinism, and a weights-only round trip of a mixed model."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from quantrec.models.artifact import load_model, save_model
from quantrec.models.dlrm import DLRM
from quantrec.models.metrics import normalized_entropy
from quantrec.models.quantize import build_variant, precision_plan
from quantrec.models.representations import (
    DeepHashEmbedding,
    RepresentationError,
    RepresentationSpec,
    build_representation,
    representation_bytes,
    sum_pool,
)
from quantrec.models.scorer import predict_proba
from quantrec.models.train import train_dlrm

IDS, DIM = 60, 6
SPECS = {
    "table": {"kind": "table"},
    "hashed": {"kind": "hashed", "rows": 16},
    "qr-mult": {"kind": "qr", "collisions": 8, "combine": "mult"},
    "qr-add": {"kind": "qr", "collisions": 8, "combine": "add"},
    "qr-concat": {"kind": "qr", "collisions": 8, "combine": "concat"},
    "dhe": {"kind": "dhe", "hashes": 16, "hidden": [24]},
    "hybrid-add": {"kind": "hybrid", "combine": "add", "hashes": 16, "hidden": [24]},
    "hybrid-concat": {"kind": "hybrid", "combine": "concat", "hashes": 16, "hidden": [24]},
}
# Three bags of 1, 3 and 0 ids, then one of 2: a multi-valued feature with an empty bag.
VALUES = torch.tensor([5, 7, 7, 59, 0, 33])
OFFSETS = torch.tensor([0, 1, 4, 4])


def _build(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_representation(SPECS[name], num_embeddings=IDS, embedding_dim=DIM)


@pytest.mark.parametrize("name", list(SPECS))
def test_pooled_shape_is_bags_by_dim_and_an_empty_bag_is_zero(name) -> None:
    out = _build(name)(VALUES, OFFSETS)
    assert out.shape == (4, DIM) and out.dtype == torch.float32
    assert torch.equal(out[2], torch.zeros(DIM))


@pytest.mark.parametrize("name", list(SPECS))
def test_a_bag_is_the_sum_of_its_ids_own_vectors(name) -> None:
    # Combine before pooling: each bag equals the sum of its ids looked up one by one.
    module = _build(name)
    per_id = module(VALUES, torch.arange(len(VALUES)))
    expected = torch.stack([per_id[0], per_id[1:4].sum(0), torch.zeros(DIM), per_id[4:].sum(0)])
    torch.testing.assert_close(module(VALUES, OFFSETS), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", list(SPECS))
def test_every_parameter_gets_a_gradient_from_multi_valued_bags(name) -> None:
    module = _build(name)
    (module(VALUES, OFFSETS) * torch.arange(1.0, DIM + 1)).sum().backward()
    for param_name, param in module.named_parameters():
        assert param.grad is not None, param_name
        grad = param.grad.coalesce().values() if param.grad.is_sparse else param.grad
        assert grad.abs().sum() > 0, param_name
        assert torch.isfinite(grad).all(), param_name


def test_tables_inside_representations_have_sparse_gradients() -> None:
    module = _build("qr-mult")
    module(VALUES, OFFSETS).sum().backward()
    assert module.quotient.weight.grad.is_sparse and module.remainder.weight.grad.is_sparse


def test_qr_multiplies_per_id_not_the_pooled_sums() -> None:
    module = _build("qr-mult")
    bag = torch.tensor([7, 59])
    q, r = module.split(bag)
    pooled_first = module.quotient(q, torch.tensor([0])) * module.remainder(r, torch.tensor([0]))
    per_id_first = module(bag, torch.tensor([0]))
    assert not torch.allclose(pooled_first, per_id_first)


@pytest.mark.parametrize("combine", ["mult", "add", "concat"])
def test_qr_embedding_is_exactly_a_full_table(combine) -> None:
    torch.manual_seed(3)
    spec = {"kind": "qr", "collisions": 8, "combine": combine}
    module = build_representation(spec, num_embeddings=IDS, embedding_dim=DIM)
    with torch.no_grad():
        # Every id's vector from its own (quotient, remainder) pair: a full IDS x D table.
        ids = torch.arange(IDS)
        q, r = module.split(ids)
        qv, rv = module.quotient.weight[q], module.remainder.weight[r]
        table = {"mult": qv * rv, "add": qv + rv, "concat": torch.cat((qv, rv), dim=1)}[combine]
        full = nn.EmbeddingBag(IDS, DIM, mode="sum")
        full.weight.copy_(table)
        torch.testing.assert_close(module(VALUES, OFFSETS), full(VALUES, OFFSETS))
        assert torch.equal(module(ids, ids), table)
    pairs = torch.stack(module.split(ids), dim=1)
    assert torch.unique(pairs, dim=0).shape[0] == IDS  # no two ids share both rows
    if combine != "add":  # a sum of two rows can coincide; a product or a pair does not
        assert torch.unique(table, dim=0).shape[0] == IDS


def test_a_hashed_table_smaller_than_the_ids_collides() -> None:
    module = _build("hashed")
    with torch.no_grad():
        vectors = module(torch.arange(IDS), torch.arange(IDS))
    assert torch.unique(vectors, dim=0).shape[0] <= 16 < IDS


def test_qr_bytes_are_the_two_small_tables() -> None:
    module = _build("qr-mult")
    assert representation_bytes(module) == (8 + 8) * DIM * 4  # ceil(60 / 8) = 8 quotient rows
    assert representation_bytes(_build("table")) == IDS * DIM * 4


def test_dhe_code_depends_only_on_id_and_hash_seed() -> None:
    spec = RepresentationSpec.from_dict(SPECS["dhe"])
    torch.manual_seed(0)
    first = DeepHashEmbedding(num_embeddings=IDS, embedding_dim=DIM, spec=spec)
    torch.manual_seed(99)
    second = DeepHashEmbedding(num_embeddings=IDS, embedding_dim=DIM, spec=spec)
    ids = torch.tensor([0, 1, 2, 59, 1])
    assert torch.equal(first.encode(ids), second.encode(ids))
    assert torch.equal(first.encode(ids)[1], first.encode(ids)[4])
    assert first.encode(ids).abs().max() <= 1.0
    other = RepresentationSpec.from_dict({**SPECS["dhe"], "hash_seed": 1})
    reseeded = DeepHashEmbedding(num_embeddings=IDS, embedding_dim=DIM, spec=other)
    assert not torch.equal(first.encode(ids), reseeded.encode(ids))
    codes = first.encode(torch.arange(IDS))
    assert torch.unique(codes, dim=0).shape[0] == IDS  # distinct ids, distinct codes


def test_dhe_code_is_the_same_in_another_process() -> None:
    script = (
        "import json, torch\n"
        "from quantrec.models.representations import DeepHashEmbedding, RepresentationSpec\n"
        "torch.manual_seed(12345)\n"
        f"spec = RepresentationSpec.from_dict({SPECS['dhe']!r})\n"
        f"m = DeepHashEmbedding(num_embeddings={IDS}, embedding_dim={DIM}, spec=spec)\n"
        "print(json.dumps(m.encode(torch.arange(10)).tolist()))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "4242"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    spec = RepresentationSpec.from_dict(SPECS["dhe"])
    here = DeepHashEmbedding(num_embeddings=IDS, embedding_dim=DIM, spec=spec)
    assert torch.equal(torch.tensor(json.loads(done.stdout)), here.encode(torch.arange(10)))


def test_sum_pool_of_one_id_bags_is_the_identity() -> None:
    per_id = torch.rand(5, 3)
    assert sum_pool(per_id, torch.arange(5)) is per_id


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"kind": "cuckoo"}, "kind 'cuckoo'"),
        ({"kind": "qr", "combine": "mult"}, "collisions >= 2, got None"),
        ({"kind": "qr", "collisions": 4, "combine": "max"}, "combine 'max'"),
        ({"kind": "hashed", "rows": 0}, "rows >= 1, got 0"),
        ({"kind": "hashed", "rows": 4, "collisions": 2}, "unknown ['collisions']"),
    ],
)
def test_bad_specs_are_refused_naming_the_value(spec, words) -> None:
    with pytest.raises(RepresentationError, match=words.replace("[", r"\[").replace("]", r"\]")):
        build_representation(spec, num_embeddings=IDS, embedding_dim=DIM)


MIXED = {
    "user": {"kind": "qr", "collisions": 8, "combine": "mult"},
    "item": {"kind": "hybrid", "combine": "add", "hashes": 16, "hidden": [16]},
    "hour": {"kind": "dhe", "hashes": 16, "hidden": [16]},
}


def _mixed_model(schema, representations=MIXED, seed: int = 0) -> DLRM:
    torch.manual_seed(seed)
    return DLRM(
        num_dense=len(schema.dense),
        table_sizes=schema.hash_sizes,
        embedding_dim=4,
        bottom_mlp=[8, 4],
        top_mlp=[8],
        feature_names=schema.categorical_names,
        first_order=True,
        representations=representations,
    )


def test_a_feature_the_model_lacks_is_refused(tiny_schema) -> None:
    with pytest.raises(RepresentationError, match=r"features \['shop'\] the model lacks"):
        _mixed_model(tiny_schema, {"shop": {"kind": "dhe"}})


def test_a_mixed_model_learns_on_the_per_table_path(tiny_schema, make_batch) -> None:
    model = _mixed_model(tiny_schema)
    train, test = make_batch(rows=2048, seed=0), make_batch(rows=1024, seed=1)
    labels = test.labels.double().numpy()
    before = normalized_entropy(labels, predict_proba(model, test))
    report = train_dlrm(model, train, seed=0, epochs=3, batch_size=64, learning_rate=0.01)
    after = normalized_entropy(labels, predict_proba(model, test))
    assert report.steps == 3 * 32
    assert model.optimizer_state is None  # the per-table path keeps no resumable state
    assert after < 0.95 < before


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_a_mixed_model_round_trips_weights_only(tiny_schema, make_batch, tmp_path, precision):
    model = _mixed_model(tiny_schema)
    train_dlrm(model, make_batch(rows=256), seed=0, epochs=1, batch_size=64, learning_rate=0.02)
    variant = build_variant(model, precision)
    path = save_model(variant, tmp_path / "m", schema=tiny_schema, precision=precision)
    weights = torch.load(path / "weights.pt", weights_only=True)
    assert type(weights) is dict and all(type(t) is torch.Tensor for t in weights.values())
    recipe = json.loads((path / "recipe.json").read_text())
    assert recipe["architecture"]["representations"]["user"]["kind"] == "qr"
    if precision == "int8":  # the QR tables row-wise, the DHE decoder int8
        assert recipe["precision_plan"]["sparse_arch.embedding_bags.0.quotient"] == "int8"
        assert recipe["precision_plan"]["sparse_arch.embedding_bags.2.decoder.0"] == "int8"

    loaded = load_model(path)
    batch = make_batch(rows=300, seed=3)
    assert precision_plan(loaded.model) == precision_plan(variant)
    with torch.inference_mode():
        assert torch.equal(loaded.model(batch), variant(batch))


def test_default_architecture_records_no_representations(make_model) -> None:
    assert "representations" not in make_model().architecture()


def test_a_representation_changes_only_its_own_table(tiny_schema) -> None:
    full = _mixed_model(tiny_schema, None).state_dict()
    one = _mixed_model(tiny_schema, {"item": MIXED["item"]}).state_dict()
    others = [k for k in full if not k.startswith("sparse_arch.embedding_bags.1.")]
    assert others and all(torch.equal(full[k], one[k]) for k in others)


def test_a_mixed_model_serves_the_same_with_fused_lookups(tiny_schema, make_batch) -> None:
    from quantrec.models.fused import fuse_lookups

    model = _mixed_model(tiny_schema).eval()
    batch = make_batch(rows=200, seed=5)
    with torch.inference_mode():
        assert torch.equal(fuse_lookups(model)(batch), model(batch))
