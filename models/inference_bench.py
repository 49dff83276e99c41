"""Inference benchmark of quantrec's precision variants on a Criteo-shaped DLRM.

    quantrec bench [--max-rows 1000000] [--threads 1] [--json]   (or tests/benchmarks/bench_inference.py)

Builds the model (26 tables with Criteo Kaggle's cardinalities capped at --max-rows, 64-d),
trains it briefly on synthetic clicks, searches a precision plan under the NE budget, then
times fp32, fp16, int8 and the searched plan (and the last two with fused table
lookups, ``models.fused``) side by side in this one process. NE deltas
are scored on rows that neither training nor the search saw.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
import time

import torch

from quantrec.models.benchmark import (
    benchmark_inference,
    criteo_shaped_model,
    format_table,
    synthetic_criteo_batch,
    train_briefly,
)
from quantrec.models.fused import fuse_lookups
from quantrec.models.quantize import build_variant, model_bytes
from quantrec.models.search import search_precision_plan


def keep_freed_memory() -> None:
    """Stop glibc from returning large freed blocks to the OS after every batch.

    Otherwise every multi-MB activation is a fresh mmap whose pages fault in on first
    touch: measured 11 ms instead of 2.4 ms for one 14 MB concatenation. Serving processes
    set the same (MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_); it helps every variant.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 1 << 30)
    libc.mallopt(m_trim_threshold, 1 << 32)


def main(argv: list[str] | None = None) -> None:
    """`quantrec bench` and tests/benchmarks/bench_inference.py: build, search, time."""
    parser = argparse.ArgumentParser(prog="quantrec bench", description=__doc__.splitlines()[0])
    parser.add_argument("--max-rows", type=int, default=1_000_000, help="table size cap")
    parser.add_argument("--train-rows", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--budget", type=float, default=0.0005, help="relative NE budget")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    args = parser.parse_args(argv)
    keep_freed_memory()
    torch.set_num_threads(args.threads)

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    model = criteo_shaped_model(max_rows=args.max_rows)
    sizes = model.architecture()["table_sizes"]
    report = train_briefly(model, synthetic_criteo_batch(sizes, args.train_rows, seed=0))
    log(f"trained {report.samples} samples in {report.seconds:.0f} s")
    held_out = synthetic_criteo_batch(sizes, 16_384, seed=1)
    calibration = synthetic_criteo_batch(sizes, 4_096, seed=2)
    confirmation = synthetic_criteo_batch(sizes, 16_384, seed=4)
    bench = synthetic_criteo_batch(sizes, 16_384, seed=3)

    started = time.perf_counter()
    result = search_precision_plan(
        model, held_out, calibration=calibration, budget=args.budget, confirmation=confirmation
    )
    log(f"search: {len(result.evaluated)} plans in {time.perf_counter() - started:.0f} s; "
        f"{result.reason}")
    variants = {
        "fp32": model.eval(),
        "fp16": build_variant(model, "fp16"),
        "int8": build_variant(model, "int8"),
        "searched": result.chosen.apply(model, calibration=calibration),
    }
    variants["int8_fused"] = fuse_lookups(variants["int8"])
    variants["searched_fused"] = fuse_lookups(variants["searched"])
    rows = benchmark_inference(variants, bench)
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return
    print(f"threads={torch.get_num_threads()}  tables capped at {args.max_rows} rows  "
          f"fp32 {model_bytes(model) / 1e6:.0f} MB  NE fp32 (search rows) {result.ne_fp32:.4f}")
    print(format_table(rows))
    print("\nsearched plan:", json.dumps(result.chosen.precisions(), indent=1))
    print("\nsensitivity of over_arch.mlp.0 (ne_delta_rel):")
    for r in result.sensitivity:
        if r["unit"] == "over_arch.mlp.0":
            print(f"  {r['precision']:<24}{r['ne_delta_rel'] * 100:>9.3f}%")


if __name__ == "__main__":
    main()
