"""Training a DLRM on a Batch or a stream of Batches, and warm-starting from a previous model.

Fast path (``fused=True``, the default): the F embedding tables are copied into one fp32
storage (``models.fused.FusedTables``) and looked up with one ``embedding_bag`` call per
step; the pooled output is an autograd leaf, so autograd only runs the MLPs and the
interaction, and the tables are updated by hand from the pooled gradient (duplicate ids
summed) with row-wise Adagrad (default; ``models.fused.RowwiseAdagrad``) or SparseAdam's
update (``models.fused.RowSparseAdam``). Each batch's fused ids are prepared in a
background thread while the previous step runs. At the end the fused rows are written
back into the per-table ``nn.EmbeddingBag`` weights: the state_dict layout never changes.
The MLPs get ``torch.optim.Adam`` (``fused=True`` kernel: one loop over all parameters).

``fused=False`` keeps one ``embedding_bag`` call per table with sparse gradients from
autograd (``torch.optim.SparseAdam``, or row-wise Adagrad on the coalesced gradients).

Quality: after one epoch of the Criteo-shaped benchmark, row-wise Adagrad's held-out NE
trailed SparseAdam's by about 1 % at its best learning rate, as did FBGEMM's own
row-wise Adagrad; it keeps 4 bytes of state per row instead of SparseAdam's 8 D.

Runs are reproducible: with the same seed, data, initial weights and thread count, the
trained weights are bit-identical.

Threads: the steps are many small ops, and intra-op threads wait on each other whenever
another process holds a core. On a shared 2-core machine ``torch.set_num_threads(1)`` was
3x faster for a 26-table model and 60x faster for a tiny one; the caller decides.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from quantrec.models.batch import Batch
from quantrec.models.dlrm import DLRM
from quantrec.models.fused import FusedIds, FusedTables, RowSparseAdam, RowwiseAdagrad, fuse_ids
from quantrec.models.quantize import float_state_dict
from quantrec.models.stream import BatchSource, InMemorySource, prefetched

SPARSE_OPTIMIZERS = ("rowwise_adagrad", "sparse_adam")
# Row-wise Adagrad's step for the tables when sparse_learning_rate is None: the best held-out
# NE of a sweep on the Criteo-shaped benchmark (models/train_bench.py: 26 x 100k x 16 tables,
# 400k rows, 1 epoch, batch 2048, Adam 1e-3 for the MLPs). NE at 0.001 / 0.003 / 0.005 /
# 0.01 / 0.02 / 0.03 / 0.05 / 0.1: 0.760 / 0.756 / 0.754 / 0.752 / 0.750 / 0.753 / 0.754 / 0.757.
DEFAULT_ROWWISE_ADAGRAD_LR = 0.02


@dataclass
class TrainReport:
    """What one ``train_dlrm`` call did.

    Attributes:
        steps: optimizer steps taken (epochs * ceil(rows / batch_size)).
        samples: samples seen (epochs * rows).
        seconds: wall-clock training time.
        samples_per_s: samples / seconds.
        final_loss: mean BCE (nats per sample) over the last epoch, measured during it.
        epoch_losses: mean BCE of every epoch, in order.
    """

    steps: int
    samples: int
    seconds: float
    samples_per_s: float
    final_loss: float
    epoch_losses: tuple[float, ...] = ()


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` intra-op threads (None: leave torch's choice)."""
    if threads is None:
        yield
        return
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(sparse embedding weights, every other parameter)."""
    sparse_params, dense_params = [], []
    for module in model.modules():
        own = list(module.parameters(recurse=False))
        if isinstance(module, nn.EmbeddingBag) and module.sparse:
            sparse_params.extend(own)
        else:
            dense_params.extend(own)
    return sparse_params, dense_params


def _dense_optimizer(params: list[nn.Parameter], learning_rate: float) -> torch.optim.Adam:
    # The fused CPU kernel updates every parameter in one loop: 3-4x less step time than
    # the per-parameter default for these ~20 tensors.
    return torch.optim.Adam(params, lr=learning_rate, fused=True)


def _sparse_update(
    weight: Tensor, *, name: str, learning_rate: float
) -> RowwiseAdagrad | RowSparseAdam:
    """The fused tables' optimizer: ``step(weight, rows, summed grad)`` on distinct rows."""
    if name == "rowwise_adagrad":
        return RowwiseAdagrad(num_rows=weight.shape[0], lr=learning_rate)
    return RowSparseAdam(num_rows=weight.shape[0], dim=weight.shape[1], lr=learning_rate)


def train_dlrm(
    model: DLRM,
    batch: Batch | BatchSource,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    sparse_optimizer: str = "rowwise_adagrad",
    sparse_learning_rate: float | None = None,
    fused: bool = True,
) -> TrainReport:
    """Train ``model`` in place with BCE-with-logits; leaves it in eval mode.

    Each epoch visits the rows in a fresh order drawn from a ``torch.Generator`` seeded
    with ``seed`` (the global RNG is not used), in batches of ``batch_size`` (the last
    may be smaller).

    Args:
        batch: all training rows as one Batch (B samples), or a ``BatchSource`` such as
            ``models.stream.WindowStream`` (a window of day files, streamed).
        epochs: passes over the rows, at least 1.
        batch_size: samples per optimizer step, at least 1.
        learning_rate: Adam's for the MLPs, positive; also SparseAdam's for the tables
            when ``sparse_learning_rate`` is None.
        seed: shuffling seed.
        sparse_optimizer: "rowwise_adagrad" (one accumulator per row) or "sparse_adam".
        sparse_learning_rate: the tables' step; None: ``DEFAULT_ROWWISE_ADAGRAD_LR`` for
            row-wise Adagrad, ``learning_rate`` for SparseAdam.
        fused: look all tables up in one fused storage (the fast path).
    """
    source = InMemorySource(batch) if isinstance(batch, Batch) else batch
    if not isinstance(source, BatchSource):
        raise TypeError(
            f"train_dlrm needs a Batch or a BatchSource (rows, epoch(batch_size=, seed=)); "
            f"got {type(batch).__name__}"
        )
    rows = source.rows
    if rows == 0:
        raise ValueError("cannot train on an empty batch (0 rows)")
    if epochs < 1 or batch_size < 1 or not learning_rate > 0:
        raise ValueError(
            f"need epochs >= 1, batch_size >= 1, learning_rate > 0; got epochs={epochs}, "
            f"batch_size={batch_size}, learning_rate={learning_rate}"
        )
    if sparse_optimizer not in SPARSE_OPTIMIZERS:
        raise ValueError(
            f"sparse_optimizer must be one of {SPARSE_OPTIMIZERS}, got {sparse_optimizer!r}"
        )
    if sparse_learning_rate is not None and not sparse_learning_rate > 0:
        raise ValueError(f"sparse_learning_rate must be > 0 or None, got {sparse_learning_rate}")
    if sparse_learning_rate is None:
        rowwise = sparse_optimizer == "rowwise_adagrad"
        sparse_learning_rate = DEFAULT_ROWWISE_ADAGRAD_LR if rowwise else learning_rate
    run = _run_fused if fused else _run_per_table
    model.train()
    started = time.perf_counter()
    steps, epoch_losses = run(
        model, source, epochs=epochs, seed=seed, batch_size=batch_size,
        learning_rate=learning_rate, sparse_optimizer=sparse_optimizer,
        sparse_learning_rate=sparse_learning_rate,
    )
    seconds = time.perf_counter() - started
    model.eval()
    return TrainReport(
        steps=steps,
        samples=epochs * rows,
        seconds=seconds,
        samples_per_s=epochs * rows / seconds if seconds > 0 else float("inf"),
        final_loss=epoch_losses[-1],
        epoch_losses=tuple(epoch_losses),
    )


def _run_fused(
    model: DLRM, source: BatchSource, *, epochs: int, seed: int, batch_size: int,
    learning_rate: float, sparse_optimizer: str, sparse_learning_rate: float,
) -> tuple[int, list[float]]:
    """The epochs on fused tables; returns (steps, mean loss of each epoch)."""
    tables = FusedTables(model.sparse_arch)
    _, dense_params = _split_parameters(model)
    adam = _dense_optimizer(dense_params, learning_rate)
    sparse = _sparse_update(tables.weight, name=sparse_optimizer,
                            learning_rate=sparse_learning_rate)
    loss_fn = nn.BCEWithLogitsLoss(reduction="mean")

    def prepare(part: Batch) -> tuple[Batch, FusedIds]:
        if part.sparse.keys != model.feature_names:
            raise ValueError(
                f"batch sparse keys {list(part.sparse.keys)} differ from the model's "
                f"feature_names {list(model.feature_names)}"
            )
        return part, fuse_ids(
            part.sparse, first_row=tables.first_row, table_sizes=tables.table_sizes
        )

    steps, epoch_losses = 0, []
    try:
        generator = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            loss_sum, seen = torch.zeros((), dtype=torch.float64), 0
            parts = source.epoch(batch_size=batch_size, generator=generator)
            for part, ids in prefetched(parts, depth=2, transform=prepare):
                pooled = tables.pooled(ids).requires_grad_()
                dense = model.dense_arch(part.dense)
                combined = torch.cat((dense.unsqueeze(1), pooled), dim=1)
                logits = model.over_arch(model.inter_arch.interact(combined)).squeeze(1)
                loss = loss_fn(logits, part.labels)
                adam.zero_grad(set_to_none=True)
                loss.backward()
                adam.step()
                sparse.step(tables.weight, ids.rows, tables.row_gradients(ids, pooled.grad))
                loss_sum += loss.detach().double() * len(part)
                seen += len(part)
                steps += 1
            epoch_losses.append(float(loss_sum) / max(seen, 1))
    finally:
        # Even after an error the model holds the rows trained so far, in its own layout.
        tables.write_back(model.sparse_arch)
    return steps, epoch_losses


def _run_per_table(
    model: DLRM, source: BatchSource, *, epochs: int, seed: int, batch_size: int,
    learning_rate: float, sparse_optimizer: str, sparse_learning_rate: float,
) -> tuple[int, list[float]]:
    """The epochs with one lookup per table and sparse gradients from autograd."""
    sparse_params, dense_params = _split_parameters(model)
    # torch's default Adam, as before the fused path existed: with SparseAdam this path
    # reproduces earlier releases' weights bit for bit.
    optimizers: list[torch.optim.Optimizer] = [torch.optim.Adam(dense_params, lr=learning_rate)]
    adagrads = []
    if sparse_optimizer == "sparse_adam":
        optimizers.append(torch.optim.SparseAdam(sparse_params, lr=sparse_learning_rate))
    else:
        adagrads = [RowwiseAdagrad(num_rows=p.shape[0], lr=sparse_learning_rate)
                    for p in sparse_params]
    loss_fn = nn.BCEWithLogitsLoss(reduction="mean")
    steps, epoch_losses = 0, []
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        loss_sum, seen = torch.zeros((), dtype=torch.float64), 0
        for part in source.epoch(batch_size=batch_size, generator=generator):
            for optimizer in optimizers:
                optimizer.zero_grad(set_to_none=True)
            for param in sparse_params:
                param.grad = None
            loss = loss_fn(model(part), part.labels)
            loss.backward()
            for optimizer in optimizers:
                optimizer.step()
            for param, adagrad in zip(sparse_params, adagrads):
                grad = param.grad.coalesce()  # sums duplicate ids
                adagrad.step(param.data, grad.indices()[0], grad.values().clone())
            loss_sum += loss.detach().double() * len(part)
            seen += len(part)
            steps += 1
        epoch_losses.append(float(loss_sum) / max(seen, 1))
    return steps, epoch_losses


def warm_start(model: nn.Module, from_model: nn.Module) -> list[str]:
    """Copy ``from_model``'s weights into ``model`` wherever name and shape match.

    A quantized ``from_model`` (e.g. an int8 champion) is dequantized first. Tensors whose
    shape changed (a resized table, a new layer) keep ``model``'s own initialisation.

    Returns:
        The names of the copied tensors.
    """
    source = float_state_dict(from_model)
    target = model.state_dict()
    copied = []
    with torch.no_grad():
        for name, tensor in target.items():
            if name in source and source[name].shape == tensor.shape:
                tensor.copy_(source[name].to(tensor.dtype))
                copied.append(name)
    return copied
