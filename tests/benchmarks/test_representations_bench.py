"""``quantrec bench --representations``: its options, the path choice, and (slow) a small
synthetic run end to end."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from quantrec.benchmarks.cli import configure, run
from quantrec.benchmarks.representations import path_choice


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="quantrec bench")
    configure(parser)
    status = run(parser.parse_args(list(argv)))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (("--representations", "--p95-ms", "0"), "--p95-ms > 0; got 0.001, 0.0"),
        (("--representations", "--feeds", "criteo"), "--feeds"),
        (("--p95-ms", "5"), "--p95-ms: only the representations benchmark takes it"),
        (("--representations", "--train"), "choose different benchmarks"),
    ],
)
def test_bad_options_are_refused_in_one_line(capsys, argv, words) -> None:
    status, out, err = _run(capsys, *argv)
    assert status == 2 and out == ""
    assert words in err and err.count("\n") == 1


def _timing(variant: str, batch: int, p95: float, cpt: float) -> dict:
    return {"feed": "f", "variant": variant, "batch": batch, "p95_ms": p95, "cpt": cpt}


def test_each_query_size_takes_the_best_cpt_that_meets_the_target() -> None:
    timing = [
        _timing("table", 1, 1.0, 900.0),
        _timing("qr", 1, 1.2, 1000.0),
        _timing("dhe", 1, 3.0, 2000.0),  # over the target
        _timing("table", 64, 4.0, 0.0),  # outside the NE budget: counts nothing
        _timing("qr", 64, 2.0, 30_000.0),
        _timing("table", 2048, 40.0, 9e4),
        _timing("qr", 2048, 30.0, 1e5),
    ]
    choices = {c["batch"]: c for c in path_choice(timing, p95_ms=2.5)}
    assert choices[1]["variant"] == "qr" and choices[1]["cpt_over_table"] == pytest.approx(10 / 9)
    assert choices[64]["variant"] == "qr" and choices[64]["cpt_over_table"] is None
    assert choices[2048]["variant"] == "qr" and not choices[2048]["meets_p95"]


@pytest.mark.slow
def test_a_small_synthetic_run_reports_every_variant_and_batch(capsys) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        status, out, _ = _run(
            capsys, "--representations", "--feeds", "synthetic", "--rows-per-day", "3000", "--json"
        )
    finally:
        torch.set_num_threads(threads)
    assert status == 0
    records = [json.loads(line) for line in out.splitlines()]
    variants = {r["variant"]: r for r in records if "ne" in r}
    assert set(variants) == {
        "table",
        "hashed",
        "qr-mult",
        "qr-concat",
        "dhe",
        "hybrid-add",
        "searched",
    }
    assert variants["table"]["ne_delta_rel"] == 0.0 and variants["table"]["tables_ratio"] == 1.0
    for name in ("hashed", "qr-mult", "qr-concat", "dhe"):
        assert variants[name]["tables_ratio"] <= 0.25
    assert 1.0 < variants["hybrid-add"]["tables_ratio"] <= 1.25
    timed = {(r["variant"], r["batch"]) for r in records if "p95_ms" in r and "cpt" in r}
    assert timed >= {(v, b) for v in variants for b in (1, 64, 2048)}
    search = next(r["search"] for r in records if "search" in r)
    assert search["searched_bytes"] <= search["searched_table_bytes"]
