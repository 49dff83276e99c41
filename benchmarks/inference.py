"""Inference benchmark of quantrec's precision variants on a Criteo-shaped DLRM.

    quantrec bench [--max-rows 1000000] [--threads 1] [--json]
    (or python -m quantrec.benchmarks.inference, or tests/benchmarks/bench_inference.py)

Builds the model (26 tables with Criteo Kaggle's cardinalities capped at --max-rows, 64-d,
``benchmarks.criteo``), trains it briefly on the synthetic feed's clicks, searches a
precision plan under the NE budget, then times fp32, fp16, int8 and the searched plan (and
the last two with fused table lookups, ``models.fused``) side by side in this one process.
NE deltas are scored on rows that neither training nor the search saw; training first
matters, as a random-init model's NE barely moves under any quantization.

``benchmark_inference`` runs every variant on the same slices, interleaved call by call, so
machine noise (other jobs on a shared CPU) hits all variants alike; compare ratios.
"""

from __future__ import annotations

import ctypes
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from quantrec.benchmarks.criteo import criteo_batch, criteo_shaped_model
from quantrec.benchmarks.options import InferenceOptions
from quantrec.models.batch import Batch
from quantrec.models.dlrm import DLRM
from quantrec.models.fused import fuse_lookups
from quantrec.models.quantize import build_variant, model_bytes
from quantrec.models.scorer import score
from quantrec.models.search import SearchResult, search_precision_plan
from quantrec.models.train import TrainReport, torch_threads, train_dlrm


def train_briefly(model: DLRM, batch: Batch, *, seed: int = 0) -> TrainReport:
    """One epoch at batch 512 with ``train_dlrm``'s optimizers: a model whose NE moves
    under quantization (a random-init model's barely does)."""
    return train_dlrm(model, batch, epochs=1, batch_size=512, learning_rate=0.005, seed=seed)


def benchmark_inference(
    variants: Mapping[str, nn.Module],
    batch: Batch,
    *,
    batch_sizes: Sequence[int] = (1, 64, 2048),
    reference: str = "fp32",
    calls: Mapping[int, int] | None = None,
    score_batch_size: int = 8192,
) -> list[dict]:
    """Throughput, latency, bytes and NE delta of each variant at each batch size.

    Args:
        variants: name -> eval-mode model; must include ``reference`` (the fp32 parent).
        batch: labelled rows; NE is scored on all of them, timing slices come from them.
        batch_sizes: rows per forward call.
        calls: timed calls per batch size (default: about 2 s of fp32 work per size).

    Returns:
        One dict per (variant, batch size): ``variant``, ``batch``, ``samples_per_s``,
        ``p50_ms``, ``p99_ms`` (per-call wall clock), ``bytes`` (state_dict bytes),
        ``ne_delta_rel`` (relative NE change against ``reference``; 0.0005 = 0.05 %).
    """
    if reference not in variants:
        raise ValueError(f"variants must include the reference {reference!r}; got {list(variants)}")
    too_big = [b for b in batch_sizes if b > len(batch)]
    if too_big:
        raise ValueError(f"batch sizes {too_big} exceed the {len(batch)} rows given")
    ne = {n: score(m, batch, batch_size=score_batch_size).ne for n, m in variants.items()}
    rows = []
    for size in batch_sizes:
        count = (calls or {}).get(size, max(10, min(300, 20000 // size)))
        times = _interleaved_times(variants, batch, size, count)
        for name, model in variants.items():
            ms = sorted(times[name])
            rows.append(
                {
                    "variant": name,
                    "batch": size,
                    "samples_per_s": size * len(ms) / (sum(ms) / 1e3),
                    "p50_ms": ms[len(ms) // 2],
                    "p99_ms": ms[min(len(ms) - 1, math.ceil(0.99 * len(ms)) - 1)],
                    "bytes": model_bytes(model),
                    "ne_delta_rel": (ne[name] - ne[reference]) / ne[reference],
                }
            )
    return rows


def _interleaved_times(
    variants: Mapping[str, nn.Module], batch: Batch, size: int, count: int
) -> dict[str, list[float]]:
    """ms per call of each variant; call i of every variant scores the same slice."""
    starts = [(i * size * 7919) % (len(batch) - size + 1) for i in range(count)]
    slices = [batch.slice(s, s + size) for s in starts]
    times: dict[str, list[float]] = {name: [] for name in variants}
    with torch.inference_mode():
        for model in variants.values():
            model(slices[0])  # warm-up: allocation and kernel dispatch caches
        for part in slices:
            for name, model in variants.items():
                started = time.perf_counter()
                model(part)
                times[name].append((time.perf_counter() - started) * 1e3)
    return times


def format_table(rows: list[dict]) -> str:
    """The benchmark rows as an aligned text table, with throughput and bytes vs fp32."""
    base = {r["batch"]: r for r in rows if r["variant"] == "fp32"}
    lines = [
        f"{'variant':<16}{'batch':>6}{'samples/s':>12}{'x fp32':>8}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'MB':>9}{'x bytes':>9}{'NE delta':>10}"
    ]
    for r in rows:
        ref = base.get(r["batch"], r)
        lines.append(
            f"{r['variant']:<16}{r['batch']:>6}{r['samples_per_s']:>12.0f}"
            f"{r['samples_per_s'] / ref['samples_per_s']:>8.2f}{r['p50_ms']:>9.3f}"
            f"{r['p99_ms']:>9.3f}{r['bytes'] / 1e6:>9.1f}{r['bytes'] / ref['bytes']:>9.3f}"
            f"{r['ne_delta_rel'] * 100:>9.3f}%"
        )
    return "\n".join(lines)


def keep_freed_memory() -> None:
    """Stop glibc from returning large freed blocks to the OS after every batch.

    Otherwise every multi-MB activation is a fresh mmap whose pages fault in on first
    touch: measured 11 ms instead of 2.4 ms for one 14 MB concatenation. Serving processes
    set the same (MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_); it helps every variant.
    It changes this whole process's allocator, which is why it is called by the benchmark's
    run and never at import.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 1 << 30)
    libc.mallopt(m_trim_threshold, 1 << 32)


def run_inference(options: InferenceOptions) -> int:
    """Build, train briefly, search, time; print the table (or JSON lines). Returns 0."""
    keep_freed_memory()
    with torch_threads(options.threads):
        model, result, rows = _build_search_and_time(options)
    if options.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    print(
        f"threads={options.threads}  tables capped at {options.max_rows} rows  "
        f"fp32 {model_bytes(model) / 1e6:.0f} MB  NE fp32 (search rows) {result.ne_fp32:.4f}"
    )
    print(format_table(rows))
    print("\nsearched plan:", json.dumps(result.chosen.precisions(), indent=1))
    print("\nsensitivity of over_arch.mlp.0 (ne_delta_rel):")
    for r in result.sensitivity:
        if r["unit"] == "over_arch.mlp.0":
            print(f"  {r['precision']:<24}{r['ne_delta_rel'] * 100:>9.3f}%")
    return 0


def _build_search_and_time(options: InferenceOptions) -> tuple[DLRM, SearchResult, list[dict]]:
    """(the trained fp32 model, the search result, ``benchmark_inference``'s rows)."""
    model = criteo_shaped_model(max_rows=options.max_rows)
    sizes = model.architecture()["table_sizes"]
    report = train_briefly(model, criteo_batch(sizes, options.train_rows, seed=0))
    _log(f"trained {report.samples} samples in {report.seconds:.0f} s")
    # Each seed is another day of the feed: no row is both trained on and scored.
    held_out = criteo_batch(sizes, 16_384, seed=1)
    calibration = criteo_batch(sizes, 4_096, seed=2)
    bench = criteo_batch(sizes, 16_384, seed=3)
    confirmation = criteo_batch(sizes, 16_384, seed=4)

    started = time.perf_counter()
    result = search_precision_plan(
        model,
        held_out,
        calibration=calibration,
        budget=options.budget,
        confirmation=confirmation,
    )
    _log(
        f"search: {len(result.evaluated)} plans in {time.perf_counter() - started:.0f} s; "
        f"{result.reason}"
    )
    variants = {
        "fp32": model.eval(),
        "fp16": build_variant(model, "fp16"),
        "int8": build_variant(model, "int8"),
        "searched": result.chosen.apply(model, calibration=calibration),
    }
    variants["int8_fused"] = fuse_lookups(variants["int8"])
    variants["searched_fused"] = fuse_lookups(variants["searched"])
    return model, result, benchmark_inference(variants, bench)


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    from quantrec.benchmarks.cli import main

    sys.exit(main(sys.argv[1:], prog="python -m quantrec.benchmarks.inference"))
