"""Training a DLRM on one in-memory Batch, and warm-starting from a previous model.

Embedding tables get sparse gradients and ``torch.optim.SparseAdam`` (only the rows a
step touched are updated); the MLPs get ``torch.optim.Adam``. Runs are reproducible: with
the same seed, data, initial weights and thread count, the trained weights are
bit-identical.

Threads: the steps are many small ops, and intra-op threads wait on each other whenever
another process holds a core. On a shared 2-core machine ``torch.set_num_threads(1)`` was
3x faster for a 26-table model and 60x faster for a tiny one; the caller decides.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from models.batch import Batch
from models.dlrm import DLRM
from models.quantize import float_state_dict


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


def _optimizers(model: nn.Module, learning_rate: float) -> list[torch.optim.Optimizer]:
    sparse_params, dense_params = [], []
    for module in model.modules():
        own = list(module.parameters(recurse=False))
        if isinstance(module, nn.EmbeddingBag) and module.sparse:
            sparse_params.extend(own)
        else:
            dense_params.extend(own)
    optimizers: list[torch.optim.Optimizer] = []
    if sparse_params:
        optimizers.append(torch.optim.SparseAdam(sparse_params, lr=learning_rate))
    if dense_params:
        optimizers.append(torch.optim.Adam(dense_params, lr=learning_rate))
    return optimizers


def train_dlrm(
    model: DLRM,
    batch: Batch,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
) -> TrainReport:
    """Train ``model`` in place with BCE-with-logits; leaves it in eval mode.

    Each epoch visits the rows in a fresh order drawn from a ``torch.Generator`` seeded
    with ``seed`` (the global RNG is not used), in slices of ``batch_size`` (the last slice
    may be smaller).

    Args:
        batch: all training rows, B samples.
        epochs: passes over ``batch``, at least 1.
        batch_size: samples per optimizer step, at least 1.
        learning_rate: for both optimizers, positive.
        seed: shuffling seed.
    """
    rows = len(batch)
    if rows == 0:
        raise ValueError("cannot train on an empty batch (0 rows)")
    if epochs < 1 or batch_size < 1 or not learning_rate > 0:
        raise ValueError(
            f"need epochs >= 1, batch_size >= 1, learning_rate > 0; got epochs={epochs}, "
            f"batch_size={batch_size}, learning_rate={learning_rate}"
        )
    generator = torch.Generator().manual_seed(seed)
    optimizers = _optimizers(model, learning_rate)
    loss_fn = nn.BCEWithLogitsLoss(reduction="mean")
    model.train()
    epoch_losses: list[float] = []
    started = time.perf_counter()
    for _ in range(epochs):
        # One gather per epoch, then contiguous slices: no per-row Python in the step loop.
        shuffled = batch.take(torch.randperm(rows, generator=generator))
        loss_sum = torch.zeros((), dtype=torch.float64)
        for start in range(0, rows, batch_size):
            part = shuffled.slice(start, start + batch_size)
            for optimizer in optimizers:
                optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(part), part.labels)
            loss.backward()
            for optimizer in optimizers:
                optimizer.step()
            loss_sum += loss.detach().double() * len(part)
        epoch_losses.append(float(loss_sum) / rows)
    seconds = time.perf_counter() - started
    model.eval()
    return TrainReport(
        steps=epochs * math.ceil(rows / batch_size),
        samples=epochs * rows,
        seconds=seconds,
        samples_per_s=epochs * rows / seconds if seconds > 0 else float("inf"),
        final_loss=epoch_losses[-1],
        epoch_losses=tuple(epoch_losses),
    )


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
