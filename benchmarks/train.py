"""Training benchmark: a naive per-table DLRM trainer and quantrec's, side by side.

    quantrec bench --train [--rows 400000] [--threads 1] [--json]
    (or python -m quantrec.benchmarks.train, or tests/benchmarks/bench_train.py)

Every implementation trains a copy of the same initial model (13 dense features, --tables
tables of --table-rows x --dim, bottom MLP 512-256-64-D, top 512-256-1) for one epoch on
the same rows of the synthetic feed (``benchmarks.criteo``), in the same order, in this
one process, then scores the same held-out rows (the feed's next day):

* ``naive``: the reference, kept here on purpose: one ``nn.EmbeddingBag(sparse=True)`` per
  table, SparseAdam for the tables and Adam for the MLPs, a plain per-batch loop.
* ``quantrec``: ``models.train.train_dlrm`` (fused tables, row-wise Adagrad, ids prepared
  in a background thread); inference through ``models.fused.fuse_lookups``.
* ``quantrec_adam``: the same with ``sparse_optimizer="sparse_adam"`` (SparseAdam's
  update on the fused storage, at the naive reference's learning rate).
* ``torchrec``: FBGEMM's table-batched embedding with row-wise Adagrad fused into its
  backward (the CPU kernel under torchrec's fused EmbeddingBagCollection) around the same
  MLPs; run only when the optional ``fbgemm_gpu`` (pip ``fbgemm-gpu-cpu``) imports.

Reported per implementation: training and inference samples/s (fp32, no grad, batches of
--batch-size), NE on the held-out rows, and peak RSS: the process's high-water mark
(VmHWM) while that implementation ran, reset before it via ``/proc/self/clear_refs``
after returning freed heap to the OS (``malloc_trim``). It includes what the process
already held (``start_rss_mb``: the data, the initial model), so compare differences;
without /proc it falls back to getrusage's whole-process peak (``peak_rss_method``).
"""

from __future__ import annotations

import copy
import ctypes
import gc
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from quantrec.benchmarks.criteo import criteo_batch, criteo_model
from quantrec.benchmarks.options import IMPLS, TrainOptions
from quantrec.models.batch import Batch
from quantrec.models.dlrm import DLRM
from quantrec.models.fused import fuse_lookups
from quantrec.models.metrics import normalized_entropy
from quantrec.models.stream import InMemorySource
from quantrec.models.train import DEFAULT_ROWWISE_ADAGRAD_LR, torch_threads, train_dlrm


def train_naive(
    model: DLRM, batch: Batch, *, batch_size: int, learning_rate: float, seed: int
) -> float:
    """The reference loop: per-table sparse gradients, SparseAdam + Adam. Returns seconds."""
    sparse = [p for m in model.modules() if isinstance(m, nn.EmbeddingBag) for p in m.parameters()]
    sparse_ids = {id(p) for p in sparse}
    dense = [p for p in model.parameters() if id(p) not in sparse_ids]
    optimizers = [
        torch.optim.SparseAdam(sparse, lr=learning_rate),
        torch.optim.Adam(dense, lr=learning_rate),
    ]
    loss_fn = nn.BCEWithLogitsLoss()
    model.train()
    started = time.perf_counter()
    # The same loader and order as train_dlrm, so only the training step differs.
    generator = torch.Generator().manual_seed(seed)  # train_dlrm's first epoch order
    parts = InMemorySource(batch).epoch(batch_size=batch_size, generator=generator)
    for part in parts:
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss_fn(model(part), part.labels).backward()
        for optimizer in optimizers:
            optimizer.step()
    seconds = time.perf_counter() - started
    model.eval()
    return seconds


def inference(model: nn.Module, batch: Batch, *, batch_size: int) -> tuple[float, float]:
    """(samples/s of fp32 no-grad forward passes, NE) over ``batch``."""
    slices = [batch.slice(s, s + batch_size) for s in range(0, len(batch), batch_size)]
    # no_grad rather than inference_mode: FBGEMM's training TBE has no inference-mode kernel,
    # and every implementation is timed under the same mode.
    with torch.no_grad():
        model(slices[0])  # warm-up: allocator and dispatch caches
        started = time.perf_counter()
        logits = torch.cat([model(part) for part in slices])
        seconds = time.perf_counter() - started
    probs = torch.sigmoid(logits.double()).numpy()
    return len(batch) / seconds, normalized_entropy(batch.labels.numpy(), probs)


class PeakRss:
    """Peak resident memory of a block, in MB (module docstring)."""

    def __init__(self) -> None:
        self.status = Path("/proc/self/status")
        self.method = "VmHWM" if self._reset() else "getrusage"

    def _reset(self) -> bool:
        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:
            pass
        try:
            Path("/proc/self/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def __enter__(self) -> PeakRss:
        self._reset()
        self.start_mb = self._current_mb()
        return self

    def _current_mb(self) -> float:
        if self.method != "VmHWM":
            return float("nan")
        line = next(x for x in self.status.read_text().splitlines() if x.startswith("VmRSS"))
        return int(line.split()[1]) / 1024

    def __exit__(self, *exc: object) -> None:
        if self.method == "VmHWM":
            line = next(x for x in self.status.read_text().splitlines() if x.startswith("VmHWM"))
            self.mb = int(line.split()[1]) / 1024
        else:
            self.mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class TbeDLRM(nn.Module):
    """``model``'s MLPs around FBGEMM's table-batched embedding (TBE), the kernel torchrec's
    fused ``EmbeddingBagCollection`` runs on CPU, with row-wise Adagrad fused into its
    backward. Needs ``fbgemm_gpu`` (imported here: an optional benchmark dependency).

    Args:
        model: its tables initialise the TBE's; its MLPs are shared, not copied.
        learning_rate: row-wise Adagrad's step.
    """

    def __init__(self, model: DLRM, *, learning_rate: float) -> None:
        super().__init__()
        from fbgemm_gpu.split_embedding_configs import EmbOptimType
        from fbgemm_gpu.split_table_batched_embeddings_ops_common import PoolingMode
        from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
            ComputeDevice,
            EmbeddingLocation,
            SplitTableBatchedEmbeddingBagsCodegen,
        )

        bags = list(model.sparse_arch.embedding_bags)
        self.model, self.dim = model, bags[0].embedding_dim
        specs = [
            (b.num_embeddings, self.dim, EmbeddingLocation.HOST, ComputeDevice.CPU) for b in bags
        ]
        self.tbe = SplitTableBatchedEmbeddingBagsCodegen(
            specs,
            optimizer=EmbOptimType.EXACT_ROWWISE_ADAGRAD,
            learning_rate=learning_rate,
            eps=1e-8,
            pooling_mode=PoolingMode.SUM,
        )
        with torch.no_grad():
            for weight, bag in zip(self.tbe.split_embedding_weights(), bags):
                weight.copy_(bag.weight)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Batch of B samples -> float32 logits (B,)."""
        ids = batch.sparse
        starts = np.cumsum([0] + [v.shape[0] for v in ids.values]).tolist()
        # Table-major bags; TBE shifts each table's ids itself.
        offsets = torch.cat(
            [o + s for o, s in zip(ids.offsets, starts)] + [torch.tensor([starts[-1]])]
        )
        pooled = self.tbe(torch.cat(ids.values), offsets).view(len(batch), -1, self.dim)
        dense = self.model.dense_arch(batch.dense)
        combined = torch.cat((dense.unsqueeze(1), pooled), dim=1)
        return self.model.over_arch(self.model.inter_arch.interact(combined)).squeeze(1)


def train_tbe(
    model: DLRM,
    batch: Batch,
    *,
    batch_size: int,
    learning_rate: float,
    sparse_learning_rate: float,
    seed: int,
) -> tuple[float, TbeDLRM]:
    """quantrec's loop with FBGEMM's TBE for the tables. Returns (seconds, trained model)."""
    tbe_model = TbeDLRM(model, learning_rate=sparse_learning_rate)
    tables = {id(p) for p in model.sparse_arch.parameters()}
    dense = [p for p in model.parameters() if id(p) not in tables]
    adam = torch.optim.Adam(dense, lr=learning_rate, fused=True)
    loss_fn = nn.BCEWithLogitsLoss()
    tbe_model.train()
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)  # train_dlrm's first epoch order
    parts = InMemorySource(batch).epoch(batch_size=batch_size, generator=generator)
    for part in parts:
        adam.zero_grad(set_to_none=True)
        loss_fn(tbe_model(part), part.labels).backward()  # the TBE updates its rows here
        adam.step()
    return time.perf_counter() - started, tbe_model.eval()


def tbe_available() -> bool:
    """Whether fbgemm_gpu imports (a wheel built for another torch fails to load)."""
    try:
        import fbgemm_gpu  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


def run_impl(name: str, model: DLRM, train: Batch, held_out: Batch, options: TrainOptions) -> dict:
    """Train ``model`` (a copy per implementation) with ``name``'s trainer, then score it."""
    sparse_lr = DEFAULT_ROWWISE_ADAGRAD_LR if options.sparse_lr is None else options.sparse_lr
    with PeakRss() as rss:
        cpu_started = time.process_time()
        if name == "naive":
            seconds = train_naive(
                model,
                train,
                batch_size=options.batch_size,
                learning_rate=options.lr,
                seed=options.seed,
            )
            served: nn.Module = model
        elif name in ("quantrec", "quantrec_adam"):
            adam = name == "quantrec_adam"
            report = train_dlrm(
                model,
                train,
                epochs=1,
                batch_size=options.batch_size,
                learning_rate=options.lr,
                seed=options.seed,
                sparse_optimizer="sparse_adam" if adam else "rowwise_adagrad",
                sparse_learning_rate=options.lr if adam else sparse_lr,
            )
            seconds, served = report.seconds, fuse_lookups(model)
        else:
            seconds, served = train_tbe(
                model,
                train,
                batch_size=options.batch_size,
                learning_rate=options.lr,
                sparse_learning_rate=sparse_lr,
                seed=options.seed,
            )
        cpu_seconds = time.process_time() - cpu_started
        infer_per_s, ne = inference(served, held_out, batch_size=options.batch_size)
    return {
        "impl": name,
        "train_samples_per_s": len(train) / seconds,
        "infer_samples_per_s": infer_per_s,
        "peak_rss_mb": rss.mb,
        "ne": ne,
        "start_rss_mb": rss.start_mb,
        "train_seconds": seconds,
        # CPU seconds of all threads while training: steadier than wall time when other
        # processes share the cores (equal to it for 1 busy thread on an idle machine).
        "train_samples_per_cpu_s": len(train) / cpu_seconds,
        "threads": torch.get_num_threads(),
        "peak_rss_method": rss.method,
    }


def format_rows(rows: list[dict]) -> str:
    """A readable table and, when both ran, the quantrec / naive ratios."""
    lines = [
        f"{'impl':<15}{'train/s':>10}{'train/cpu-s':>12}{'infer/s':>11}{'peak MB':>9}"
        f"{'start MB':>9}{'NE':>9}"
    ]
    for r in rows:
        lines.append(
            f"{r['impl']:<15}{r['train_samples_per_s']:>10.0f}"
            f"{r['train_samples_per_cpu_s']:>12.0f}"
            f"{r['infer_samples_per_s']:>11.0f}{r['peak_rss_mb']:>9.0f}"
            f"{r['start_rss_mb']:>9.0f}{r['ne']:>9.4f}"
        )
    by = {r["impl"]: r for r in rows}
    for other in IMPLS[1:]:
        if not {"naive", other} <= by.keys():
            continue
        q, n = by[other], by["naive"]
        lines.append(
            f"{other}/naive: train x{q['train_samples_per_s'] / n['train_samples_per_s']:.2f} "
            f"(per cpu-s x{q['train_samples_per_cpu_s'] / n['train_samples_per_cpu_s']:.2f}), "
            f"infer x{q['infer_samples_per_s'] / n['infer_samples_per_s']:.2f}, "
            f"peak RSS x{q['peak_rss_mb'] / n['peak_rss_mb']:.2f}, "
            f"NE delta {(q['ne'] - n['ne']) / n['ne'] * 100:+.2f}%"
        )
    return "\n".join(lines)


def run_training(options: TrainOptions) -> int:
    """Draw the rows, train each implementation on a copy of one model, print. Returns 0."""
    impls = list(options.impls)
    if "torchrec" in impls and not tbe_available():
        print(
            "skipping torchrec: fbgemm_gpu does not import (pip install fbgemm-gpu-cpu)",
            file=sys.stderr,
        )
        impls.remove("torchrec")
    sizes = [options.table_rows] * options.tables
    # The next day of the same world: held-out rows, the same ground truth.
    train = criteo_batch(sizes, options.rows, seed=options.seed)
    held_out = criteo_batch(sizes, options.holdout_rows, seed=options.seed + 1)
    initial = criteo_model(
        sizes, embedding_dim=options.dim, bottom_mlp=[512, 256, 64, options.dim], seed=options.seed
    )
    rows = []
    with torch_threads(options.threads):
        for name in impls:
            row = run_impl(name, copy.deepcopy(initial), train, held_out, options)
            rows.append(row)
            if options.json:
                print(json.dumps(row), flush=True)
    if not options.json:
        print(
            f"threads={options.threads}  rows={options.rows}  batch={options.batch_size}  "
            f"{options.tables} tables x {options.table_rows} x {options.dim}  "
            f"load average {' '.join(f'{x:.2f}' for x in _load_average())}"
        )
        print(format_rows(rows))
    return 0


def _load_average() -> tuple[float, ...]:
    try:
        return os.getloadavg()
    except OSError:
        return ()


if __name__ == "__main__":
    from quantrec.benchmarks.cli import main

    sys.exit(main(["--train", *sys.argv[1:]], prog="python -m quantrec.benchmarks.train"))
