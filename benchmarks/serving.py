"""Serving speed: a plain PyTorch DLRM beside quantrec's serving path, on the Criteo-shaped
model, interleaved in one process.

    quantrec bench --serving [--max-rows 1000000] [--train-rows 100000] [--threads 1] [--json]
    (or python -m quantrec.benchmarks.serving)

1. The model: ``benchmarks.criteo``'s Criteo-shaped DLRM (26 tables capped at
   ``--max-rows``, D = 64, bottom 512-256-64, top 512-256-1), trained briefly on the
   synthetic feed's clicks; the precision plan searched under the NE budget over int8 /
   int4 / int2 tables and int8 MLP layers (``TABLE_CANDIDATES``, ``LINEAR_CANDIDATES``).
2. The reference (``ReferenceDLRM``): the same fp32 weights in a DLRM written the obvious
   way, so the baseline is not a strawman: one ``nn.EmbeddingBag`` per table, two
   ``nn.Sequential`` MLPs, the pairwise dot products by one ``bmm`` and the upper
   triangle's indices. Its logits equal quantrec fp32's (checked, and printed).
3. quantrec's serving path: fp32, int8 and the searched plan, each as scored
   (per-table lookups) and as ``models.pipeline_pyfunc`` serves them (``_fused``: one
   lookup call per table format, ``models.fused``).
4. Timing: at batch 1, 64 and 2048, call i of every model scores the same rows, the
   models' order rotated call by call; p50 and p95 of the per-call wall time and the
   throughput (rows over the summed call times). NE change against fp32 on 16,384 rows
   neither the training nor the search saw.
5. One query of 64 and 2048 candidates (every column but the item's equal on all rows, as
   a pipeline stage scores them), timed the same way, with ``_shared``: the fused model
   under ``models.pipeline_context.SharedContext`` (the user-side work done once).

Compare ratios: other processes on a shared machine slow every model alike.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from quantrec.benchmarks.criteo import criteo_batch, criteo_shaped_model
from quantrec.benchmarks.inference import keep_freed_memory, train_briefly
from quantrec.benchmarks.options import ServingOptions
from quantrec.models.batch import Batch, KeyedJaggedIds
from quantrec.models.dlrm import DLRM
from quantrec.models.fused import fuse_lookups
from quantrec.models.pipeline_context import SharedContext
from quantrec.models.quantize import build_variant, model_bytes
from quantrec.models.scorer import score
from quantrec.models.search import search_precision_plan
from quantrec.models.train import torch_threads

BATCH_SIZES = (1, 64, 2048)
QUERY_SIZES = (64, 2048)  # candidates of one query
QUERY_ITEM = "cat_2"  # the synthetic feed's item column: what a query's candidates vary in
CALLS = 300  # timed calls per batch size, at most 40,000 rows each
# The search's candidates: row-wise tables at 8, 4 and 2 bits and dynamic int8 MLP layers,
# on 8,192 rows. The full lists (``quantrec bench``'s) took over 10 minutes on two busy
# cores; these keep the run within minutes and still give the plan its smallest tables.
TABLE_CANDIDATES = ("int8", "int4", "int2")
LINEAR_CANDIDATES = ("int8",)
SEARCH_ROWS = 8_192
REFERENCE = "reference"


class ReferenceDLRM(nn.Module):
    """A DLRM written the obvious way (module docstring, 2), fp32.

    Args:
        table_sizes: rows of each of the F tables; embedding_dim: D.
        num_dense: N; bottom_mlp: its sizes, the last D; top_mlp: its sizes, the last 1.
        constant: with a learned D-vector joined to the interaction (quantrec's
            ``first_order``).
    """

    def __init__(
        self,
        *,
        table_sizes: Sequence[int],
        embedding_dim: int,
        num_dense: int,
        bottom_mlp: Sequence[int],
        top_mlp: Sequence[int],
        constant: bool,
    ) -> None:
        super().__init__()
        self.tables = nn.ModuleList(
            nn.EmbeddingBag(rows, embedding_dim, mode="sum") for rows in table_sizes
        )
        self.bottom = _mlp(num_dense, bottom_mlp, last_relu=True)
        vectors = len(table_sizes) + 1 + constant
        self.top = _mlp(embedding_dim + vectors * (vectors - 1) // 2, top_mlp, last_relu=False)
        self.constant = nn.Parameter(torch.zeros(embedding_dim)) if constant else None
        self.register_buffer("log1p", torch.zeros(num_dense, dtype=torch.bool))
        self.register_buffer("mean", torch.zeros(num_dense))
        self.register_buffer("inverse_std", torch.ones(num_dense))
        i, j = torch.triu_indices(vectors, vectors, offset=1)
        self.register_buffer("i", i, persistent=False)
        self.register_buffer("j", j, persistent=False)

    @classmethod
    def from_dlrm(cls, model: DLRM) -> ReferenceDLRM:
        """The reference holding ``model``'s fp32 weights."""
        arch = model.architecture()
        reference = cls(
            table_sizes=arch["table_sizes"],
            embedding_dim=arch["embedding_dim"],
            num_dense=arch["num_dense"],
            bottom_mlp=arch["bottom_mlp"],
            top_mlp=arch["top_mlp"],
            constant=bool(arch.get("first_order")),
        )
        with torch.no_grad():
            for table, bag in zip(reference.tables, model.sparse_arch.embedding_bags):
                table.weight.copy_(bag.weight)
            reference.bottom.load_state_dict(model.dense_arch.mlp.state_dict())
            reference.top.load_state_dict(model.over_arch.mlp.state_dict())
            transform = model.dense_arch.transform
            reference.log1p.copy_(transform.log1p)
            reference.mean.copy_(transform.shift)
            reference.inverse_std.copy_(transform.scale)
            if reference.constant is not None:
                reference.constant.copy_(model.inter_arch.constant)
        return reference.eval()

    def forward(self, batch: Batch) -> Tensor:
        """dense B X N and F bags of ids -> float32 logits (B,)."""
        x = batch.dense
        x = torch.where(self.log1p, torch.log1p(x.clamp(min=0.0)), x)
        x = self.bottom((x - self.mean) * self.inverse_std)
        pooled = [
            table(ids, offsets)
            for table, ids, offsets in zip(self.tables, batch.sparse.values, batch.sparse.offsets)
        ]
        vectors = [x, *pooled]
        if self.constant is not None:
            vectors.append(self.constant.expand(x.shape[0], -1))
        z = torch.stack(vectors, dim=1)  # B X K X D
        dots = torch.bmm(z, z.transpose(1, 2))[:, self.i, self.j]
        return self.top(torch.cat([x, dots], dim=1)).squeeze(1)


def _mlp(inputs: int, sizes: Sequence[int], *, last_relu: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for k, size in enumerate(sizes):
        layers.append(nn.Linear(inputs, size))
        if last_relu or k < len(sizes) - 1:
            layers.append(nn.ReLU())
        inputs = size
    return nn.Sequential(*layers)


def query_batch(batch: Batch, start: int, size: int, *, item_feature: str) -> Batch:
    """Rows ``start:start + size`` as one query's candidates: row ``start``'s dense values
    and ids on every row (the user's), ``item_feature``'s ids as they are (single-valued
    bags, as the Criteo-shaped rows hold)."""
    part = batch.slice(start, start + size)
    ids = part.sparse
    values = tuple(
        v if key == item_feature else v[:1].repeat(size) for key, v in zip(ids.keys, ids.values)
    )
    return Batch(
        dense=part.dense[:1].expand(size, -1).clone(),
        sparse=KeyedJaggedIds(keys=ids.keys, values=values, offsets=ids.offsets),
        labels=part.labels,
    )


def time_models(
    models: Mapping[str, nn.Module],
    batch: Batch,
    *,
    batch_sizes: Sequence[int],
    calls: int,
    query_item: str | None = None,
) -> list[dict]:
    """One row per (model, batch size): p50/p95 ms per call and rows per second. With
    ``query_item``, every call scores one query's candidates (``query_batch``)."""
    rows = []
    names = list(models)
    for size in batch_sizes:
        count = max(10, min(calls, 40_000 // size))
        starts = [(i * size * 7919) % (len(batch) - size + 1) for i in range(count)]
        parts = [
            batch.slice(s, s + size)
            if query_item is None
            else query_batch(batch, s, size, item_feature=query_item)
            for s in starts
        ]
        times: dict[str, list[float]] = {name: [] for name in names}
        with torch.inference_mode():
            for model in models.values():
                model(parts[0])  # warm-up: allocation and dispatch caches
            for i, part in enumerate(parts):
                shift = i % len(names)
                for name in names[shift:] + names[:shift]:
                    started = time.perf_counter()
                    models[name](part)
                    times[name].append((time.perf_counter() - started) * 1e3)
        for name in names:
            ms = np.asarray(times[name])
            rows.append(
                {
                    "case": "rows" if query_item is None else "query",
                    "variant": name,
                    "batch": size,
                    "calls": count,
                    "p50_ms": float(np.percentile(ms, 50)),
                    "p95_ms": float(np.percentile(ms, 95)),
                    "samples_per_s": size * len(ms) / (ms.sum() / 1e3),
                }
            )
    return rows


def format_table(rows: list[dict]) -> str:
    """Rows as a table, throughput against the reference and against quantrec fp32."""
    by = {(r["variant"], r["batch"]): r for r in rows}
    lines = [
        f"{'model':<16}{'batch':>6}{'p50 ms':>9}{'p95 ms':>9}{'rows/s':>11}{'x ref':>7}"
        f"{'x fp32':>7}{'MB':>8}{'x bytes':>8}{'NE delta':>10}"
    ]
    for r in rows:
        ref, fp32 = by[(REFERENCE, r["batch"])], by[("fp32", r["batch"])]
        lines.append(
            f"{r['variant']:<16}{r['batch']:>6}{r['p50_ms']:>9.3f}{r['p95_ms']:>9.3f}"
            f"{r['samples_per_s']:>11.0f}{r['samples_per_s'] / ref['samples_per_s']:>7.2f}"
            f"{r['samples_per_s'] / fp32['samples_per_s']:>7.2f}{r['bytes'] / 1e6:>8.1f}"
            f"{r['bytes'] / ref['bytes']:>8.3f}{r['ne_delta_rel'] * 100:>9.3f}%"
        )
    return "\n".join(lines)


def run_serving(options: ServingOptions) -> int:
    """Build, train briefly, search, time; print the table (or JSON lines). Returns 0."""
    keep_freed_memory()
    with torch_threads(options.threads):
        models, rows, header = _build_and_time(options)
    if options.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    print(header)
    print(format_table([r for r in rows if r["case"] == "rows"]))
    print(
        f"\none query of N candidates (every column but {QUERY_ITEM} the user's, as a "
        "pipeline stage scores them); _shared: SharedContext over the fused model"
    )
    print(format_table([r for r in rows if r["case"] == "query"]))
    return 0


def _build_and_time(options: ServingOptions):
    model = criteo_shaped_model(max_rows=options.max_rows)
    sizes = model.architecture()["table_sizes"]
    report = train_briefly(model, criteo_batch(sizes, options.train_rows, seed=0))
    _log(f"trained {report.samples} samples in {report.seconds:.0f} s")
    held_out, calibration = (
        criteo_batch(sizes, SEARCH_ROWS, seed=1),
        criteo_batch(sizes, 4_096, seed=2),
    )
    fresh, confirmation = (
        criteo_batch(sizes, 16_384, seed=3),
        criteo_batch(sizes, SEARCH_ROWS, seed=4),
    )
    result = search_precision_plan(
        model,
        held_out,
        calibration=calibration,
        budget=options.budget,
        confirmation=confirmation,
        linear_candidates=LINEAR_CANDIDATES,
        table_candidates=TABLE_CANDIDATES,
    )
    _log(f"search: {result.reason}")
    model.eval()
    int8 = build_variant(model, "int8")
    searched = result.chosen.apply(model, calibration=calibration)
    models = {
        REFERENCE: ReferenceDLRM.from_dlrm(model),
        "fp32": model,
        "fp32_fused": fuse_lookups(model),
        "int8": int8,
        "int8_fused": fuse_lookups(int8),
        "searched": searched,
        "searched_fused": fuse_lookups(searched),
    }
    with torch.inference_mode():
        part = fresh.slice(0, 2048)
        gap = (models[REFERENCE](part) - model(part)).abs().max().item()
    ne = {name: score(m, fresh).ne for name, m in models.items()}
    rows = time_models(models, fresh, batch_sizes=BATCH_SIZES, calls=CALLS)
    per_query = {name: models[name] for name in (REFERENCE, "fp32", "fp32_fused", "int8_fused")}
    per_query["searched_fused"] = models["searched_fused"]
    for name in ("fp32", "int8", "searched"):
        per_query[f"{name}_shared"] = SharedContext(models[f"{name}_fused"])
    query = query_batch(fresh, 0, 2048, item_feature=QUERY_ITEM)
    with torch.inference_mode():
        shared_gap = max(
            (per_query[f"{n}_shared"](query) - models[f"{n}_fused"](query)).abs().max().item()
            for n in ("fp32", "int8", "searched")
        )
    rows += time_models(
        per_query, fresh, batch_sizes=QUERY_SIZES, calls=CALLS, query_item=QUERY_ITEM
    )
    for row in rows:
        name = row["variant"]
        base = name.removesuffix("_shared").removesuffix("_fused")
        row["bytes"] = model_bytes(per_query.get(name, models.get(name)))
        row["ne_delta_rel"] = (ne.get(base, ne["fp32"]) - ne["fp32"]) / ne["fp32"]
    header = (
        f"threads={options.threads}  tables capped at {options.max_rows} rows  fp32 "
        f"{model_bytes(model) / 1e6:.0f} MB  NE fp32 (fresh rows) {ne['fp32']:.4f}  "
        f"reference vs quantrec fp32: max |logit difference| {gap:.2e}; _shared vs _fused on a "
        f"query: {shared_gap:.2e}  torch {torch.__version__}"
    )
    if not math.isfinite(gap) or gap > 1e-3:
        raise RuntimeError(f"the reference does not compute quantrec's fp32 model: {gap}")
    return models, rows, header


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    from quantrec.benchmarks.cli import main

    sys.exit(main(["--serving", *sys.argv[1:]], prog="python -m quantrec.benchmarks.serving"))
