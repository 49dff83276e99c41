"""Benchmarks: the Criteo-shaped model and rows, the side-by-side table's contract, the CLI."""

from __future__ import annotations

import argparse
import ast
import json
import re
from pathlib import Path

import pytest
import torch

from quantrec.benchmarks.cli import configure, run
from quantrec.benchmarks.criteo import (
    CRITEO_KAGGLE_CARDINALITIES,
    criteo_batch,
    criteo_shaped_model,
    schema_for_tables,
)
from quantrec.benchmarks.inference import benchmark_inference, format_table
from quantrec.feeds.synthetic import SyntheticFeed
from quantrec.models.quantize import build_variant, model_bytes

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny ops on shared cores: one intra-op thread, restored after each test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_criteo_shaped_model_caps_the_public_cardinalities() -> None:
    assert len(CRITEO_KAGGLE_CARDINALITIES) == 26
    model = criteo_shaped_model(max_rows=1000, embedding_dim=8)
    sizes = model.architecture()["table_sizes"]
    assert sizes == [min(c, 1000) for c in CRITEO_KAGGLE_CARDINALITIES]
    assert model.architecture()["num_dense"] == 13


def test_synthetic_rows_fit_the_tables_and_click_at_a_plausible_rate() -> None:
    sizes = [min(c, 500) for c in CRITEO_KAGGLE_CARDINALITIES]
    batch = criteo_batch(sizes, 4000, seed=0)
    assert len(batch) == 4000 and len(batch.sparse.keys) == 26
    for values, size in zip(batch.sparse.values, sizes):
        assert 0 <= int(values.min()) and int(values.max()) < size
    assert 0.1 < float(batch.labels.mean()) < 0.5
    again = criteo_batch(sizes, 4000, seed=0)
    assert torch.equal(again.labels, batch.labels)


def test_rows_are_the_synthetic_feeds_with_the_benchmarks_table_sizes() -> None:
    """One generator: a benchmark batch is a feed day, only hashed into other tables."""
    feed_schema = SyntheticFeed().schema()
    schema = schema_for_tables([1_000_000, 7])
    assert schema.dense == feed_schema.dense
    assert schema.categorical_names == feed_schema.categorical_names[:2]
    assert schema.hash_sizes == [1_000_000, 7]
    big = criteo_batch([1_000_000], 2000, seed=0)
    # The feed's ids (< 2k here) are scattered over the whole table, as production ids are.
    assert int(big.sparse.values[0].max()) > 100_000
    assert not torch.equal(
        criteo_batch([50], 500, seed=1).labels, criteo_batch([50], 500, seed=2).labels
    )
    with pytest.raises(ValueError, match="1 to 26 tables; got 27"):
        schema_for_tables([10] * 27)


def test_benchmark_rows_follow_the_contract() -> None:
    model = criteo_shaped_model(max_rows=200, embedding_dim=8).eval()
    batch = criteo_batch(model.architecture()["table_sizes"], 256, seed=1)
    variants = {"fp32": model, "int8": build_variant(model, "int8")}
    rows = benchmark_inference(variants, batch, batch_sizes=(1, 16), calls={1: 3, 16: 3})
    assert [(r["variant"], r["batch"]) for r in rows] == [
        ("fp32", 1),
        ("int8", 1),
        ("fp32", 16),
        ("int8", 16),
    ]
    for row in rows:
        assert set(row) == {
            "variant",
            "batch",
            "samples_per_s",
            "p50_ms",
            "p99_ms",
            "bytes",
            "ne_delta_rel",
        }
        assert row["samples_per_s"] > 0 and 0 < row["p50_ms"] <= row["p99_ms"]
        assert row["bytes"] == model_bytes(variants[row["variant"]])
    assert rows[0]["ne_delta_rel"] == 0.0
    assert "x fp32" in format_table(rows)
    with pytest.raises(ValueError, match="reference 'fp32'"):
        benchmark_inference({"int8": variants["int8"]}, batch)
    with pytest.raises(ValueError, match="exceed the 256 rows"):
        benchmark_inference(variants, batch, batch_sizes=(512,))


def _bench_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="quantrec bench")
    configure(parser)
    return parser.parse_args(list(argv))


def test_a_tiny_training_benchmark_runs_through_the_cli(capsys) -> None:
    args = _bench_args(
        "--train",
        "--rows",
        "512",
        "--holdout-rows",
        "256",
        "--batch-size",
        "128",
        "--tables",
        "3",
        "--table-rows",
        "50",
        "--dim",
        "4",
        "--impls",
        "naive,quantrec",
        "--json",
    )
    assert run(args) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["impl"] for r in rows] == ["naive", "quantrec"]
    for row in rows:
        assert row["train_samples_per_s"] > 0 and row["infer_samples_per_s"] > 0
        assert 0 < row["ne"] < 1.5 and row["threads"] == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--rows", "10"), "--rows: only the training benchmark takes it; add --train"),
        (("--train", "--max-rows", "10"), "--max-rows: only the inference benchmark"),
        (("--train", "--impls", "naive,fast"), r"--impls: unknown \['fast'\]"),
        (("--train", "--tables", "27"), "--tables must be at most 26"),
        (("--train", "--rows", "100"), r"--rows \(100\) and --holdout-rows"),
        (("--threads", "0"), "--threads must be at least 1; got 0"),
    ],
)
def test_bad_bench_options_exit_2_with_one_line(argv, message, capsys) -> None:
    assert run(_bench_args(*argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith("quantrec bench: ") and len(err.strip().splitlines()) == 1
    assert re.search(message, err), err


def test_every_option_of_the_former_mains_is_still_taken() -> None:
    args = _bench_args(
        "--json", "--max-rows", "10", "--train-rows", "20", "--threads", "2", "--budget", "0.001"
    )
    assert (args.json, args.max_rows, args.train_rows, args.threads, args.budget) == (
        True,
        10,
        20,
        2,
        0.001,
    )
    args = _bench_args(
        "--train",
        "--rows",
        "1",
        "--holdout-rows",
        "1",
        "--batch-size",
        "1",
        "--tables",
        "1",
        "--table-rows",
        "1",
        "--dim",
        "1",
        "--lr",
        "0.1",
        "--sparse-lr",
        "0.2",
        "--impls",
        "naive",
        "--seed",
        "3",
    )
    assert args.impls == ("naive",) and args.sparse_lr == 0.2 and args.train


def test_the_pure_core_holds_no_benchmark_or_process_code() -> None:
    """Benchmarks and ``ctypes`` (allocator settings) stay out of models/, data_checks/ and
    feeds/, so importing the core changes nothing in the process (tests/test_layers.py
    checks Prefect and MLflow)."""
    forbidden = ("ctypes", "benchmarks", "quantrec.benchmarks")
    offenders = []
    for folder in ("models", "data_checks", "feeds"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                else:
                    continue
                offenders += [
                    f"{path.relative_to(ROOT)}: {name}"
                    for name in names
                    if any(name == f or name.startswith(f"{f}.") for f in forbidden)
                ]
    assert offenders == []
