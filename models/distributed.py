"""Table-wise sharded DLRM training across processes: torchrun, gloo on CPU.

    torchrun --standalone --nproc-per-node 2 -m quantrec.models.torchrun --job DIR
    quantrec train --nproc-per-node 2                       # the same, on synthetic days

``train_distributed`` runs in every rank of an initialised process group (``models.torchrun``
starts one). As the DLRM reference's distributed mode and TorchRec's table-wise sharding:

* each embedding table lives on one rank (``TableSharding.table_wise``); the rank looks up
  its tables for all B samples of the global batch (every rank reads the same batches, in
  the order ``train_dlrm`` draws with the same seed) and updates their rows with row-wise
  Adagrad from the pooled gradient, as ``models.fused.FusedTrainer`` does;
* the pooled embeddings cross to the rank that owns the sample and their gradients come
  back, each in one ``all_to_all_single`` (``models.pooled_exchange``), optionally through
  the error-bounded codec on the way forward (``pooled_compression``);
* the bottom MLP, the interaction and the top MLP (``DenseTower``) run data-parallel under
  ``DistributedDataParallel`` on each rank's n_r samples (``sample_splits``).

Each rank's loss is its BCE sum x W / B; DDP averages gradients over the W ranks, so the
MLPs get the gradient of the mean over the global batch, and the pooled gradients are
divided by W before they go back: a step is ``train_dlrm``'s fused step on the same B
samples, up to fp32 summation order (tests/models/test_distributed.py). Fixed epochs only
(no early stopping on held-out rows, no resumed optimizer state); SparseAdam is not offered.
At the end every table is broadcast from its owner, so each rank holds the whole model.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from quantrec.models.batch import Batch, KeyedJaggedIds
from quantrec.models.dlrm import DLRM
from quantrec.models.fused import FusedIds, FusedTables, RowwiseAdagrad, fuse_ids
from quantrec.models.pooled_compression import (
    CompressionLog,
    PooledCompression,
    PooledCompressor,
)
from quantrec.models.pooled_exchange import (
    ExchangeStats,
    PooledExchange,
    TableSharding,
    sample_splits,
)
from quantrec.models.sizing import TrainingSize, auto_training_size
from quantrec.models.stream import BatchSource, InMemorySource, prefetched
from quantrec.models.train import DEFAULT_ROWWISE_ADAGRAD_LR, _dense_parts


@dataclass(frozen=True)
class DistributedReport:
    """What one ``train_distributed`` run did, the same on every rank.

    Attributes:
        world_size: W; owners: the rank of each table.
        steps, samples: optimizer steps and samples trained on (global).
        seconds: wall time of the epochs (rank 0); samples_per_s: samples / seconds.
        step_seconds: rank 0's wall time of every step, in order.
        final_loss: mean BCE over the last epoch's samples (all ranks).
        batch_size: global samples per step.
        exchange: the all-to-alls of every rank added up (bytes sent to other ranks).
        compression: with ``pooled_compression``, its log (bounds per table per step,
            ratios of the exchanged messages); else None.
    """

    world_size: int
    owners: tuple[int, ...]
    steps: int
    samples: int
    seconds: float
    samples_per_s: float
    step_seconds: tuple[float, ...]
    final_loss: float
    batch_size: int
    exchange: ExchangeStats
    compression: CompressionLog | None = None

    @property
    def bytes_per_step(self) -> float:
        """All-to-all bytes sent between ranks per step, all ranks together."""
        return self.exchange.total_bytes / max(self.steps, 1)


class DenseTower(nn.Module):
    """The data-parallel part of a DLRM: bottom MLP, interaction, top MLP (shared modules).

    Args:
        model: the DLRM whose ``dense_arch``, ``inter_arch`` and ``over_arch`` it runs.
    """

    def __init__(self, model: DLRM) -> None:
        super().__init__()
        self.dense_arch = model.dense_arch
        self.inter_arch = model.inter_arch
        self.over_arch = model.over_arch

    def forward(self, dense: Tensor, pooled: Tensor) -> Tensor:
        """dense float32 n X N, pooled float32 n X F X D -> logits (n,)."""
        combined = torch.cat((self.dense_arch(dense).unsqueeze(1), pooled), dim=1)
        return self.over_arch(self.inter_arch.interact(combined)).squeeze(1)


class _OwnedTables(nn.Module):
    """The tables of one rank, shared with the model (what ``FusedTables`` reads)."""

    def __init__(self, model: DLRM, owned: list[int]) -> None:
        super().__init__()
        self.embedding_bags = nn.ModuleList(model.sparse_arch.embedding_bags[f] for f in owned)


class ShardedTrainer:
    """One rank's part of table-wise sharded training (module docstring).

    Args:
        model: the DLRM, the same initial weights on every rank; trained in place.
        size: global batch size, Adam's rate, row-wise Adagrad's initial accumulator.
        sharding: the table owners; the process group's world size.
        sparse_learning_rate, weight_decay: row-wise Adagrad's (``models.fused``).
        pooled_compression: compress the forward exchange; None: exact.
        measure_error: with compression, record the largest error over bound (slower).
    """

    def __init__(
        self,
        model: DLRM,
        size: TrainingSize,
        *,
        sharding: TableSharding,
        sparse_learning_rate: float,
        weight_decay: float = 0.0,
        pooled_compression: PooledCompression | None = None,
        measure_error: bool = False,
    ) -> None:
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        if sharding.world_size != self.world or len(sharding.owners) != len(model.feature_names):
            raise ValueError(
                f"sharding of {len(sharding.owners)} tables on {sharding.world_size} ranks; "
                f"the model has {len(model.feature_names)} tables, the group {self.world} ranks"
            )
        self.model, self.sharding = model, sharding
        self.owned = sharding.tables_of(self.rank)
        self.compressor = (
            None
            if pooled_compression is None
            else PooledCompressor(pooled_compression, list(model.feature_names))
        )
        self.exchange = PooledExchange(
            sharding, self.rank, compressor=self.compressor, measure_error=measure_error
        )
        self.tables = FusedTables(_OwnedTables(model, self.owned))
        tower = DenseTower(model)
        # The fitted dense transform is equal on every rank: no buffer broadcast per step.
        self.tower = DistributedDataParallel(tower, broadcast_buffers=False)
        self.adam = torch.optim.Adam(tower.parameters(), lr=size.learning_rate, fused=True)
        self.sparse = RowwiseAdagrad(
            num_rows=self.tables.weight.shape[0],
            lr=sparse_learning_rate,
            initial_accumulator=size.initial_accumulator,
            weight_decay=weight_decay,
        )
        self.step_seconds: list[float] = []
        self.after_step: Callable[[int], None] | None = None

    def _ids(self, part: Batch) -> FusedIds:
        if part.sparse.keys != self.model.feature_names:
            raise ValueError(
                f"batch sparse keys {list(part.sparse.keys)} differ from the model's "
                f"feature_names {list(self.model.feature_names)}"
            )
        features = part.sparse
        owned = KeyedJaggedIds(
            keys=tuple(features.keys[f] for f in self.owned),
            values=tuple(features.values[f] for f in self.owned),
            offsets=tuple(features.offsets[f] for f in self.owned),
        )
        return fuse_ids(owned, first_row=self.tables.first_row, table_sizes=self.tables.table_sizes)

    def epoch(self, parts: Iterator[Batch]) -> tuple[int, float, int]:
        """One pass over the global batches: (steps, global mean loss, samples)."""
        self.model.train()
        loss_sum = torch.zeros((), dtype=torch.float64)
        seen, steps = 0, 0
        for part, ids in prefetched(parts, depth=2, transform=lambda p: (p, self._ids(p))):
            started = time.perf_counter()
            loss_sum += self.step(part, ids)
            self.step_seconds.append(time.perf_counter() - started)
            if self.after_step is not None:
                self.after_step(len(self.step_seconds))
            seen += len(part)
            steps += 1
        dist.all_reduce(loss_sum)
        return steps, float(loss_sum) / max(seen, 1), seen

    def step(self, part: Batch, ids: FusedIds) -> Tensor:
        """One optimizer step on a global batch; returns this rank's BCE sum (float64)."""
        splits = sample_splits(len(part), self.world)
        start = sum(splits[: self.rank])
        stop = start + splits[self.rank]
        pooled = self.exchange.forward(self.tables.pooled(ids), splits).requires_grad_()
        if self.compressor is not None:
            self.exchange.log_step()
        logits = self.tower(part.dense[start:stop], pooled)
        loss_sum = nn.functional.binary_cross_entropy_with_logits(
            logits, part.labels[start:stop], reduction="sum"
        )
        self.adam.zero_grad(set_to_none=True)
        (loss_sum * (self.world / len(part))).backward()
        self.adam.step()
        grad = self.exchange.backward(pooled.grad / self.world, splits)
        if self.compressor is not None:
            self._observe(grad)
        self.sparse.step(self.tables.weight, ids.rows, self.tables.row_gradients(ids, grad))
        return loss_sum.detach().double()

    def _observe(self, grad: Tensor) -> None:
        """Sensitivity of the owned tables (mean |dL/dx| x range), summed across ranks."""
        sensitivity = None
        if self.compressor.measuring:
            sensitivity = torch.zeros(len(self.sharding.owners), dtype=torch.float64)
            if self.owned:
                mean_grad = grad.double().abs().mean(dim=(0, 2))
                sensitivity[self.owned] = mean_grad * self.exchange.ranges
            dist.all_reduce(sensitivity)
        self.compressor.observe_sensitivity(sensitivity)

    def finish(self) -> None:
        """Pending weight decay applied, the rows written back, and every table broadcast
        from its owner: each rank then holds the whole trained model."""
        self.sparse.catch_up(self.tables.weight)
        self.tables.write_back(_OwnedTables(self.model, self.owned))
        with torch.no_grad():
            for bag, owner in zip(self.model.sparse_arch.embedding_bags, self.sharding.owners):
                dist.broadcast(bag.weight.data, src=owner)


def train_distributed(
    model: DLRM,
    batch: Batch | BatchSource,
    *,
    seed: int,
    epochs: int = 1,
    max_steps: int | None = None,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    sparse_learning_rate: float | None = None,
    embedding_weight_decay: float = 0.0,
    fit_dense_transform: bool = True,
    pooled_compression: PooledCompression | None = None,
    measure_error: bool = False,
    after_step: Callable[[int], None] | None = None,
) -> DistributedReport:
    """Train ``model`` in place on every rank of the initialised process group.

    Every rank must call it with the same model weights and rows. Sizes, shuffling and the
    dense transform's fit are ``train_dlrm``'s for the same arguments.

    Args:
        batch: all training rows, or a ``BatchSource``; every rank reads all of it.
        seed: shuffling seed.
        epochs: passes over the rows, >= 1; max_steps: stop each epoch after this many.
        batch_size: global samples per step (None: ``models.sizing``'s, from the rows).
        learning_rate, sparse_learning_rate, embedding_weight_decay: as ``train_dlrm``.
        fit_dense_transform: fit the dense transform on the rows first (``train_dlrm``'s
            "fit"); False keeps it.
        pooled_compression: compress the exchanged pooled embeddings; None: exact.
        measure_error: with compression, decode each sent message again to log the largest
            error over its bound.
        after_step: called with the number of steps taken after each step (e.g. to read
            a network counter between steps).

    Raises:
        RuntimeError: no process group (start the ranks with torchrun).
    """
    if not dist.is_initialized():
        raise RuntimeError(
            "train_distributed runs inside a process group; start it with torchrun "
            "(python -m quantrec.models.torchrun) or call dist.init_process_group first"
        )
    source = InMemorySource(batch) if isinstance(batch, Batch) else batch
    if epochs < 1 or (max_steps is not None and max_steps < 1):
        raise ValueError(f"need epochs >= 1 and max_steps >= 1; got {epochs}, {max_steps}")
    size = auto_training_size(source.rows, batch_size=batch_size, learning_rate=learning_rate)
    if fit_dense_transform:
        model.dense_arch.transform.fit(_dense_parts(source, seed))
    sharding = TableSharding.table_wise(
        [bag.num_embeddings for bag in model.sparse_arch.embedding_bags], dist.get_world_size()
    )
    trainer = ShardedTrainer(
        model,
        size,
        sharding=sharding,
        sparse_learning_rate=sparse_learning_rate or DEFAULT_ROWWISE_ADAGRAD_LR,
        weight_decay=embedding_weight_decay,
        pooled_compression=pooled_compression,
        measure_error=measure_error,
    )
    trainer.after_step = after_step
    generator = torch.Generator().manual_seed(seed)
    steps, samples, loss = 0, 0, float("nan")
    started = time.perf_counter()
    try:
        for _ in range(epochs):
            parts = source.epoch(batch_size=size.batch_size, generator=generator)
            if max_steps is not None:
                parts = itertools.islice(parts, max_steps)
            epoch_steps, loss, seen = trainer.epoch(parts)
            steps, samples = steps + epoch_steps, samples + seen
    finally:
        trainer.finish()
    seconds = time.perf_counter() - started
    model.eval()
    return DistributedReport(
        world_size=sharding.world_size,
        owners=sharding.owners,
        steps=steps,
        samples=samples,
        seconds=seconds,
        samples_per_s=samples / seconds if seconds > 0 else float("inf"),
        step_seconds=tuple(trainer.step_seconds),
        final_loss=loss,
        batch_size=size.batch_size,
        exchange=trainer.exchange.stats.summed(),
        compression=None if trainer.compressor is None else trainer.compressor.log,
    )
