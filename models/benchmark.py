"""Inference benchmark core: a Criteo-shaped DLRM, a short training, variants side by side.

``criteo_shaped_model`` follows the Criteo Kaggle (Display Advertising Challenge) layout:
13 dense features, 26 categorical features whose tables have the public per-feature
cardinalities of that data set (capped at ``max_rows``), 64-d embeddings, and the DLRM
reference's Kaggle MLPs (bottom 512-256-64, top 512-256-1). ``synthetic_criteo_batch``
draws learnable clicks for it, so that after ``train_briefly`` NE deltas mean something
(a random-init model's NE barely moves under any quantization).

``benchmark_inference`` runs every variant on the same slices, interleaved call by call, so
machine noise (other jobs on a shared CPU) hits all variants alike; compare ratios.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from quantrec.models.batch import Batch, KeyedJaggedIds
from quantrec.models.dlrm import DLRM
from quantrec.models.quantize import model_bytes
from quantrec.models.scorer import score
from quantrec.models.train import TrainReport, train_dlrm

# Distinct values of C1..C26 in Criteo Kaggle's train.txt, as used by the DLRM reference.
CRITEO_KAGGLE_CARDINALITIES = (
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
    27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572,
)
NUM_DENSE = 13
_HOT_IDS = 2000  # ids per table that carry signal (a power law over them)
_SIGNAL_TABLES = 10  # the first tables with a click effect; the others are noise


def criteo_shaped_model(
    *, max_rows: int = 1_000_000, embedding_dim: int = 64, seed: int = 0
) -> DLRM:
    """An untrained DLRM with Criteo Kaggle's 26 table sizes capped at ``max_rows``.

    At the default cap the tables hold 5.6 M rows: 1.43 GB of float32 weights at D = 64.
    """
    torch.manual_seed(seed)
    return DLRM(
        num_dense=NUM_DENSE,
        table_sizes=[min(rows, max_rows) for rows in CRITEO_KAGGLE_CARDINALITIES],
        embedding_dim=embedding_dim,
        bottom_mlp=[512, 256, embedding_dim],
        top_mlp=[512, 256, 1],
        feature_names=[f"C{i}" for i in range(1, 27)],
    )


def synthetic_criteo_batch(table_sizes: Sequence[int], rows: int, *, seed: int) -> Batch:
    """``rows`` labelled samples for a model with ``table_sizes``: one id per bag.

    Ids follow a power law over each table's first ``_HOT_IDS`` ranks, spread across the
    whole table by a fixed multiplicative hash (lookups touch scattered rows, as in
    production). Clicks follow a fixed logistic model of the first ten features' ids and
    three dense features, with a click rate near Criteo's 25 %.
    """
    generator = torch.Generator().manual_seed(seed)
    truth = torch.Generator().manual_seed(20190101)  # the same ground truth for every seed
    dense = torch.log1p(torch.rand(rows, NUM_DENSE, generator=generator).pow(3) * 100)
    logit = 0.5 * (dense[:, 0] - dense[:, 1] + 0.5 * dense[:, 2]) - 1.6
    values = []
    for table, size in enumerate(table_sizes):
        hot = min(size, _HOT_IDS)
        rank = (torch.rand(rows, generator=generator).pow(2.0) * hot).long()
        effect = torch.randn(hot, generator=truth) * (0.8 if table < _SIGNAL_TABLES else 0.0)
        logit = logit + effect[rank]
        values.append((rank * 2654435761 + table) % size)
    labels = (torch.rand(rows, generator=generator) < torch.sigmoid(logit)).float()
    offsets = torch.arange(rows, dtype=torch.int64)
    sparse = KeyedJaggedIds(
        keys=tuple(f"C{i}" for i in range(1, len(table_sizes) + 1)),
        values=tuple(values),
        offsets=tuple(offsets for _ in table_sizes),
    )
    return Batch(dense=dense, sparse=sparse, labels=labels)


def train_briefly(model: DLRM, batch: Batch, *, seed: int = 0) -> TrainReport:
    """One epoch at batch 512 (SparseAdam for tables, Adam for MLPs): enough for NE < 0.9."""
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
