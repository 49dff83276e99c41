"""The per-bitwidth reference table: its variants, their bytes, and its options."""

from __future__ import annotations

import argparse
import json
import re

import pytest
import torch

from quantrec.benchmarks.cli import configure, run
from quantrec.benchmarks.precision import VARIANTS


@pytest.fixture(autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="quantrec bench")
    configure(parser)
    status = run(parser.parse_args(list(argv)))
    out, err = capsys.readouterr()
    return status, out, err


def test_a_small_synthetic_table_has_every_variant_and_their_byte_order(capsys) -> None:
    status, out, _ = _run(
        capsys, "--precision", "--feeds", "synthetic", "--rows-per-day", "3000", "--json"
    )
    assert status == 0
    rows = {r["variant"]: r for r in map(json.loads, out.splitlines())}
    assert list(rows) == list(VARIANTS)
    fp32 = rows["fp32"]
    assert fp32["ne_delta_rel"] == 0.0 and fp32["bytes_ratio"] == 1.0
    assert fp32["output_sqnr_db"] == float("inf") and 0.5 < fp32["ne"] < 1.2
    ratio = {name: row["bytes_ratio"] for name, row in rows.items()}
    assert ratio["int2 tables"] < ratio["int4 tables"] < ratio["int8 tables"] < 1.0
    assert ratio["int4 greedy tables"] == ratio["int4 tables"]
    assert ratio["int8 MLP + int4 tables"] < ratio["int4 tables"]
    assert ratio["int8 MLP"] < 1.0 and ratio["fp16"] == pytest.approx(0.5, abs=0.01)
    sqnr = {name: row["output_sqnr_db"] for name, row in rows.items()}
    # Fewer bits, more noise in the logits.
    assert sqnr["fp16"] > sqnr["int8 tables"] > sqnr["int4 tables"] > sqnr["int2 tables"]
    assert all(row["test_rows"] == 3000 for row in rows.values())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--precision", "--feeds", "criteo"), r"--feeds: unknown \['criteo'\]"),
        (("--precision", "--train"), "--train and --precision choose different benchmarks"),
        (("--feeds", "synthetic"), "--feeds: only the precision benchmark takes it"),
        (("--precision", "--max-rows", "10"), "--max-rows: only the inference benchmark"),
        (("--precision", "--rows-per-day", "10"), "--rows-per-day must be at least 1000"),
    ],
)
def test_bad_precision_options_exit_2_with_one_line(capsys, argv, message) -> None:
    status, _, err = _run(capsys, *argv)
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert re.search(message, err), err
