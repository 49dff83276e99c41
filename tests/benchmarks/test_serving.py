"""The serving table's plain PyTorch reference computes quantrec's fp32 model, and the
table times every model at every batch size (a tiny run: no speed is asserted)."""

from __future__ import annotations

import argparse

import pytest
import torch

from quantrec.benchmarks.cli import configure, run
from quantrec.benchmarks.criteo import criteo_batch, criteo_model
from quantrec.benchmarks.serving import ReferenceDLRM, query_batch, time_models


@pytest.fixture(autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_reference_computes_the_same_logits_from_the_same_weights() -> None:
    sizes = [50, 20, 7, 300]
    model = criteo_model(sizes, embedding_dim=8, bottom_mlp=[16, 8], seed=3)
    batch = criteo_batch(sizes, 512, seed=1)
    model.dense_arch.transform.fit([batch.dense])  # not the identity: the copy must carry it
    with torch.no_grad():
        model.inter_arch.constant.add_(0.5)
    reference = ReferenceDLRM.from_dlrm(model.eval())
    with torch.inference_mode():
        torch.testing.assert_close(reference(batch), model(batch), rtol=1e-5, atol=1e-5)
        model.over_arch.mlp[0].weight.mul_(1.01)  # a reference that ignores a weight fails
        assert not torch.allclose(reference(batch), model(batch), rtol=1e-5, atol=1e-5)


def test_time_models_gives_p50_p95_and_throughput_per_batch_size() -> None:
    sizes = [50, 20]
    model = criteo_model(sizes, embedding_dim=4, bottom_mlp=[4], seed=0).eval()
    batch = criteo_batch(sizes, 256, seed=1)
    models = {"reference": ReferenceDLRM.from_dlrm(model), "fp32": model}
    rows = time_models(models, batch, batch_sizes=(1, 64), calls=12)
    assert [(r["variant"], r["batch"]) for r in rows] == [
        ("reference", 1),
        ("fp32", 1),
        ("reference", 64),
        ("fp32", 64),
    ]
    for row in rows:
        assert 0 < row["p50_ms"] <= row["p95_ms"] and row["samples_per_s"] > 0
        assert row["calls"] == 12


def test_serving_switch_takes_the_inference_settings_and_refuses_others(capsys) -> None:
    parser = argparse.ArgumentParser(prog="quantrec bench")
    configure(parser)
    assert run(parser.parse_args(["--serving", "--rows", "10"])) == 2
    assert "only the training benchmark takes it" in capsys.readouterr().err
    assert run(parser.parse_args(["--serving", "--precision"])) == 2
    assert "--precision and --serving choose different benchmarks" in capsys.readouterr().err
    assert run(parser.parse_args(["--serving", "--max-rows", "0"])) == 2
    assert "--max-rows must be at least 1" in capsys.readouterr().err


def test_a_query_batch_shares_every_column_but_the_items() -> None:
    sizes = [50, 20, 30]
    batch = criteo_batch(sizes, 256, seed=1)
    query = query_batch(batch, 5, 40, item_feature="cat_2")
    assert len(query) == 40 and torch.equal(query.dense, batch.dense[5:6].expand(40, -1))
    for key, got, given in zip(query.sparse.keys, query.sparse.values, batch.sparse.values):
        want = given[5:45] if key == "cat_2" else given[5].repeat(40)
        assert torch.equal(got, want), key
    model = criteo_model(sizes, embedding_dim=4, bottom_mlp=[4], seed=0).eval()
    rows = time_models(
        {"reference": ReferenceDLRM.from_dlrm(model), "fp32": model},
        batch,
        batch_sizes=(64,),
        calls=10,
        query_item="cat_2",
    )
    assert {r["case"] for r in rows} == {"query"} and len(rows) == 2
