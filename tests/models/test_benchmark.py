"""Benchmark core: the Criteo-shaped model and data, and the side-by-side table's contract."""

from __future__ import annotations

import pytest
import torch

from quantrec.models.benchmark import (
    CRITEO_KAGGLE_CARDINALITIES,
    benchmark_inference,
    criteo_shaped_model,
    format_table,
    synthetic_criteo_batch,
)
from quantrec.models.quantize import build_variant, model_bytes


def test_criteo_shaped_model_caps_the_public_cardinalities() -> None:
    assert len(CRITEO_KAGGLE_CARDINALITIES) == 26
    model = criteo_shaped_model(max_rows=1000, embedding_dim=8)
    sizes = model.architecture()["table_sizes"]
    assert sizes == [min(c, 1000) for c in CRITEO_KAGGLE_CARDINALITIES]
    assert model.architecture()["num_dense"] == 13


def test_synthetic_rows_fit_the_tables_and_click_at_a_plausible_rate() -> None:
    sizes = [min(c, 500) for c in CRITEO_KAGGLE_CARDINALITIES]
    batch = synthetic_criteo_batch(sizes, 4000, seed=0)
    assert len(batch) == 4000 and len(batch.sparse.keys) == 26
    for values, size in zip(batch.sparse.values, sizes):
        assert 0 <= int(values.min()) and int(values.max()) < size
    assert 0.1 < float(batch.labels.mean()) < 0.5
    again = synthetic_criteo_batch(sizes, 4000, seed=0)
    assert torch.equal(again.labels, batch.labels)


def test_benchmark_rows_follow_the_contract() -> None:
    model = criteo_shaped_model(max_rows=200, embedding_dim=8).eval()
    batch = synthetic_criteo_batch(model.architecture()["table_sizes"], 256, seed=1)
    variants = {"fp32": model, "int8": build_variant(model, "int8")}
    rows = benchmark_inference(variants, batch, batch_sizes=(1, 16), calls={1: 3, 16: 3})
    assert [(r["variant"], r["batch"]) for r in rows] == [
        ("fp32", 1), ("int8", 1), ("fp32", 16), ("int8", 16)
    ]
    for row in rows:
        assert set(row) == {
            "variant", "batch", "samples_per_s", "p50_ms", "p99_ms", "bytes", "ne_delta_rel"
        }
        assert row["samples_per_s"] > 0 and 0 < row["p50_ms"] <= row["p99_ms"]
        assert row["bytes"] == model_bytes(variants[row["variant"]])
    assert rows[0]["ne_delta_rel"] == 0.0
    assert "x fp32" in format_table(rows)
    with pytest.raises(ValueError, match="reference 'fp32'"):
        benchmark_inference({"int8": variants["int8"]}, batch)
    with pytest.raises(ValueError, match="exceed the 256 rows"):
        benchmark_inference(variants, batch, batch_sizes=(512,))
