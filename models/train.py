"""Training a DLRM on a Batch or a stream of Batches, and warm-starting from a previous model.

One run of ``train_dlrm``:

1. Sizes: a batch size and learning rates not given follow the rows
   (``models.sizing.auto_training_size``: batch ~ 2 sqrt(rows), Adam's rate by the
   square-root rule, row-wise Adagrad's initial accumulator ~ 1 / batch^2).
2. Dense transform: the model's ``DenseTransform`` is fitted on the training rows
   (``dense_transform="fit"``, one pass over them: 1.3 s for a 300k-row window streamed
   from Parquet, about a tenth of its training) or kept as it is (``"keep"``: a
   warm-started model keeps the inputs its MLPs learned on).
3. Epochs: a fixed number (``epochs``), or early stopping on ``validation`` rows: after
   every epoch their mean log loss is measured; training stops when ``patience`` epochs in
   a row brought no improvement, or after ``max_epochs``, and the best epoch's weights are
   kept (at least one epoch: a continued model that kept its starting weights would drop
   the new days for good; whether it is better than the champion is the gate's question).
   Without validation rows, one epoch.
4. Resumed optimizers: a continued run given the parent's ``optimizer_state`` (Adam's
   moments and the row-wise Adagrad accumulators of the run that trained it, kept in its
   fp32 artifact) resumes them, at this run's learning rates, for one pass over the new
   rows: the days of a model line are then trained as one long pass in time order, as a
   streaming production trainer does. Synthetic feed, 10 run dates from 2024-01-04 with
   3-day windows (``benchmarks/quality.py --continual [--restart-optimizers]``, one
   process each, same data): mean next-day NE 0.8493 resumed against 0.8497 with restarted
   optimizers at a tenth of the rates (logistic regression 0.8551), the last day 0.8387
   against 0.8470, one epoch a day instead of 2-3; but the first continued days are worse
   (the logistic regression is beaten on 7 days of 10 against 9). After the sudden
   scenario's shift (``--scenario sudden``), resumed was better on 4 of the 5 shifted days
   (0.963 / 0.892 / 0.882 / 0.898 / 0.864 against 0.986 / 0.905 / 0.891 / 0.887 / 0.870);
   neither recovers quickly without the lifecycle's full retrain on severe drift. The state
   saved is that of the epoch whose weights are kept.

Why early stopping and not a fixed count: on the synthetic feed (280k rows, 300k ids) the
held-out NE is best after epoch 1 and worse after every further one (0.860 -> 0.88 -> 0.96:
every epoch after the first meets rows whose embeddings already moved towards their own
labels), while a 1,000-row MovieLens window is best after about 5. One rule serves both.

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
A model with a representation other than full tables (``models.representations``: hashed,
quotient-remainder, DHE, hybrid) always trains on this per-table path: the fused storage
holds plain tables only. Such a run keeps no ``optimizer_state`` to resume.

Runs are reproducible: with the same seed, data, initial weights and thread count, the
trained weights are bit-identical (the sizes are pure functions of the row count, the
validation loss is summed in a fixed order, and shuffling draws only from the seeded
generator).

Threads: the steps are many small ops, and intra-op threads wait on each other whenever
another process holds a core. On a shared 2-core machine ``torch.set_num_threads(1)`` was
3x faster for a 26-table model and 60x faster for a tiny one; the caller decides.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from quantrec.models.batch import Batch
from quantrec.models.dlrm import DLRM
from quantrec.models.fused import FusedTrainer, RowwiseAdagrad
from quantrec.models.pooled_compression import CompressionLog, PooledCompression
from quantrec.models.progress import progress
from quantrec.models.quantize import float_state_dict
from quantrec.models.representations import uses_representations
from quantrec.models.sizing import TrainingSize, auto_training_size
from quantrec.models.stream import BatchSource, InMemorySource, batches_of

SPARSE_OPTIMIZERS = ("rowwise_adagrad", "sparse_adam")
# Row-wise Adagrad's step for the tables when sparse_learning_rate is None. Next-day NE on
# the synthetic feed (3 days of 100k rows, 2024-01-04 / 01-05, benchmarks/quality.py, the
# other defaults) at 0.02 / 0.05 / 0.1: 0.8618 / 0.8601 / 0.8621 and 0.8623 / 0.8603 / 0.8605.
DEFAULT_ROWWISE_ADAGRAD_LR = 0.05
# Epochs at most with early stopping. MovieLens-100K, 14 days from 1997-10-01: the held-out
# rows share the last day's user sessions with its training rows, so their loss kept
# falling for tens of epochs while the next day's NE rose; at most 30 / 10 / 5 epochs gave
# mean next-day NE 1.013 / 0.992 / 0.981 (continual, 3-day window). The synthetic feed stops
# after 1-2 epochs either way.
DEFAULT_MAX_EPOCHS = 5
# Epochs without a better held-out loss before stopping. 1 and 2 kept the same epochs on
# the synthetic feed and on MovieLens replayed continually; 1 costs one epoch less.
DEFAULT_PATIENCE = 1
# A continued run (after warm_start) restarts the optimizers' state: Adam's and row-wise
# Adagrad's first steps are normalised, as large for a well-trained row as for a new one.
# Its learning rates are scaled by this. Synthetic feed, continuing daily on one new day of
# 100k rows: at 1 (no scaling) the first epoch made the held-out loss worse than the
# parent's on 3 of 4 days; mean next-day NE over 6 days at 0.3 / 0.1 / 0.03: 0.8526 /
# 0.8513 / 0.8518 (logistic baseline 0.8551).
CONTINUED_LEARNING_RATE_SCALE = 0.1
_SCORING_ROWS = 8192  # validation rows scored per forward pass
DenseTransformMode = Literal["fit", "keep"]


@dataclass
class TrainReport:
    """What one ``train_dlrm`` call did.

    Attributes:
        steps: optimizer steps taken (epochs run * ceil(rows / batch_size)).
        samples: samples seen (epochs run * rows).
        seconds: wall-clock training time (fitting the dense transform and the validation
            passes included).
        samples_per_s: samples / seconds.
        final_loss: mean BCE (nats per sample) over the last epoch run, measured during it.
        epoch_losses: mean BCE of every epoch run, in order.
        best_epoch: the epoch whose weights the model holds.
        validation_losses: mean BCE on the validation rows before training and after every
            epoch (empty without validation rows).
        stop_reason: why training stopped.
        batch_size: samples per step used.
        learning_rate: Adam's rate used for the MLPs.
        sparse_learning_rate: the tables' rate used.
        compression: with ``pooled_compression``, what it did (bounds per table per step,
            compression ratios per table); else None.
        exchange_bytes_per_step: trained on several ranks (``models.torchrun``), the
            all-to-all bytes sent between them per step, all ranks; else None.
    """

    steps: int
    samples: int
    seconds: float
    samples_per_s: float
    final_loss: float
    epoch_losses: tuple[float, ...] = ()
    best_epoch: int = 0
    validation_losses: tuple[float, ...] = ()
    stop_reason: str = ""
    batch_size: int = 0
    learning_rate: float = 0.0
    sparse_learning_rate: float = 0.0
    resumed: bool = False  # the optimizers continued the parent run's state
    compression: CompressionLog | None = None
    exchange_bytes_per_step: float | None = None

    @property
    def epochs(self) -> int:
        """Epochs run (the kept weights are those of ``best_epoch``)."""
        return len(self.epoch_losses)


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


def train_dlrm(
    model: DLRM,
    batch: Batch | BatchSource,
    *,
    seed: int,
    epochs: int | None = None,
    max_epochs: int = DEFAULT_MAX_EPOCHS,
    validation: Batch | None = None,
    patience: int = DEFAULT_PATIENCE,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    sparse_optimizer: str = "rowwise_adagrad",
    sparse_learning_rate: float | None = None,
    embedding_weight_decay: float = 0.0,
    continued: bool = False,
    optimizer_state: dict | None = None,
    dense_transform: DenseTransformMode | None = None,
    fused: bool = True,
    pooled_compression: PooledCompression | None = None,
) -> TrainReport:
    """Train ``model`` in place with BCE-with-logits; leaves it in eval mode.

    Each epoch visits the rows in a fresh order drawn from a ``torch.Generator`` seeded
    with ``seed`` (the global RNG is not used), in batches of ``batch_size`` (the last
    may be smaller). See the module docstring for the steps of a run.

    Args:
        batch: all training rows as one Batch (B samples), or a ``BatchSource`` such as
            ``models.stream.WindowStream`` (a window of day files, streamed).
        seed: shuffling seed.
        epochs: a fixed number of passes (>= 1, no early stopping); None: early stopping
            on ``validation`` (one pass when there are no validation rows).
        max_epochs: most passes with early stopping, >= 1.
        validation: held-out rows (never trained on) for early stopping.
        patience: epochs without a better validation loss before stopping, >= 1.
        batch_size: samples per optimizer step; None: ``models.sizing.auto_batch_size``.
        learning_rate: Adam's for the MLPs (also SparseAdam's for the tables when
            ``sparse_learning_rate`` is None); None: ``models.sizing.auto_learning_rate``.
        sparse_optimizer: "rowwise_adagrad" (one accumulator per row) or "sparse_adam".
        sparse_learning_rate: the tables' step; None: ``DEFAULT_ROWWISE_ADAGRAD_LR`` for
            row-wise Adagrad, the MLPs' rate for SparseAdam.
        embedding_weight_decay: row-wise Adagrad's lazy L2 on the tables (``RowwiseAdagrad``).
        continued: the model continues earlier training (``warm_start``): its dense
            transform is kept and both learning rates are scaled by
            ``CONTINUED_LEARNING_RATE_SCALE`` unless ``optimizer_state`` is given.
        optimizer_state: with ``continued``, the parent's ``DLRM.optimizer_state`` (step 4 of
            the module docstring): resumed at full rates, one epoch unless ``epochs`` says
            otherwise. Needs the fused path and row-wise Adagrad.
        dense_transform: "fit" the model's dense transform on the training rows, or "keep"
            it (its MLPs learned on those inputs); None: "keep" when ``continued``.
        fused: look all tables up in one fused storage (the fast path).
        pooled_compression: compress the pooled embeddings of every training step with the
            error-bounded codec, as a table-wise sharded trainer would before its
            all-to-all (``models.pooled_compression``); needs ``fused``. None: exact.
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
    _check_arguments(
        epochs,
        max_epochs,
        patience,
        batch_size,
        learning_rate,
        sparse_optimizer,
        sparse_learning_rate,
        embedding_weight_decay,
        dense_transform,
        validation,
    )
    size = auto_training_size(rows, batch_size=batch_size, learning_rate=learning_rate)
    if fused and pooled_compression is None and uses_representations(model):
        fused = False  # the fused storage holds full tables only (module docstring)
    if sparse_learning_rate is None:
        rowwise = sparse_optimizer == "rowwise_adagrad"
        sparse_learning_rate = DEFAULT_ROWWISE_ADAGRAD_LR if rowwise else size.learning_rate
    if optimizer_state is not None and not (
        continued and fused and sparse_optimizer == "rowwise_adagrad"
    ):
        raise ValueError(
            "optimizer_state resumes a continued run (continued=True) on the fused path with "
            f"rowwise_adagrad; got continued={continued}, fused={fused}, {sparse_optimizer}"
        )
    if pooled_compression is not None and not fused:
        raise ValueError(
            "pooled_compression runs on the fused path (fused=True), where the pooled "
            "embeddings are one tensor per step"
        )
    if optimizer_state is not None and epochs is None:
        epochs = 1
    if continued and optimizer_state is None:
        scale = CONTINUED_LEARNING_RATE_SCALE
        size = TrainingSize(size.batch_size, size.learning_rate * scale, size.initial_accumulator)
        sparse_learning_rate *= scale
    if validation is not None and len(validation) == 0:
        validation = None
    for rows_of in ([batch] if isinstance(batch, Batch) else []) + (
        [validation] if validation is not None else []
    ):
        if rows_of.sparse.keys != model.feature_names:  # before anything changes the model
            raise ValueError(
                f"batch sparse keys {list(rows_of.sparse.keys)} differ from the model's "
                f"feature_names {list(model.feature_names)}"
            )
    if dense_transform is None:
        dense_transform = "keep" if continued else "fit"
    started = time.perf_counter()
    if dense_transform == "fit":
        model.dense_arch.transform.fit(_dense_parts(source, seed))
    trainer = (FusedTrainer if fused else _PerTableTrainer)(
        model,
        size,
        sparse_optimizer=sparse_optimizer,
        sparse_learning_rate=sparse_learning_rate,
        weight_decay=embedding_weight_decay,
        **({"pooled_compression": pooled_compression} if fused else {}),
    )
    if optimizer_state is not None:
        trainer.resume(optimizer_state)
    model.train()
    try:
        run = _run_epochs(
            trainer,
            source,
            seed=seed,
            validation=validation,
            epochs=epochs,
            max_epochs=max_epochs,
            patience=patience,
            batch_size=size.batch_size,
        )
    finally:
        # Even after an error the model holds the rows trained so far, in its own layout.
        trainer.finish()
    model.optimizer_state = trainer.optimizer_state() if fused else None
    if run.best_state is not None:  # an earlier epoch is kept: with its optimizers' state
        model.load_state_dict(run.best_state)
        model.optimizer_state = run.best_optimizer
    seconds = time.perf_counter() - started
    model.eval()
    samples = len(run.epoch_losses) * rows
    return TrainReport(
        steps=run.steps,
        samples=samples,
        seconds=seconds,
        samples_per_s=samples / seconds if seconds > 0 else float("inf"),
        final_loss=run.epoch_losses[-1],
        epoch_losses=tuple(run.epoch_losses),
        best_epoch=run.best_epoch,
        validation_losses=tuple(run.validation_losses),
        stop_reason=run.stop_reason,
        batch_size=size.batch_size,
        learning_rate=size.learning_rate,
        sparse_learning_rate=sparse_learning_rate,
        resumed=optimizer_state is not None,
        compression=trainer.compressor.log if fused and trainer.compressor else None,
    )


def _check_arguments(
    epochs: int | None,
    max_epochs: int,
    patience: int,
    batch_size: int | None,
    learning_rate: float | None,
    sparse_optimizer: str,
    sparse_learning_rate: float | None,
    weight_decay: float,
    dense_transform: str | None,
    validation: object,
) -> None:
    if (
        (epochs is not None and epochs < 1)
        or (batch_size is not None and batch_size < 1)
        or (learning_rate is not None and not learning_rate > 0)
    ):
        raise ValueError(
            f"need epochs >= 1, batch_size >= 1, learning_rate > 0 (or None: chosen from the "
            f"rows); got epochs={epochs}, batch_size={batch_size}, learning_rate={learning_rate}"
        )
    if max_epochs < 1 or patience < 1:
        raise ValueError(f"need max_epochs >= 1 and patience >= 1; got {max_epochs}, {patience}")
    if sparse_optimizer not in SPARSE_OPTIMIZERS:
        raise ValueError(
            f"sparse_optimizer must be one of {SPARSE_OPTIMIZERS}, got {sparse_optimizer!r}"
        )
    if sparse_learning_rate is not None and not sparse_learning_rate > 0:
        raise ValueError(f"sparse_learning_rate must be > 0 or None, got {sparse_learning_rate}")
    if weight_decay < 0 or (weight_decay and sparse_optimizer != "rowwise_adagrad"):
        raise ValueError(
            f"embedding_weight_decay must be >= 0 and needs rowwise_adagrad; got "
            f"{weight_decay} with {sparse_optimizer}"
        )
    if dense_transform not in (None, "fit", "keep"):
        raise ValueError(f"dense_transform must be 'fit' or 'keep', got {dense_transform!r}")
    if validation is not None and not isinstance(validation, Batch):
        raise TypeError(f"validation must be a Batch, got {type(validation).__name__}")


def _dense_parts(source: BatchSource, seed: int) -> Iterator[Tensor]:
    """The dense rows of one pass over ``source``, in a fixed order (its own generator)."""
    if isinstance(source, InMemorySource):
        yield source.batch.dense
        return
    generator = torch.Generator().manual_seed(seed)
    for part in source.epoch(batch_size=65_536, generator=generator):
        yield part.dense


@dataclass
class _Run:
    steps: int
    epoch_losses: list[float]
    validation_losses: list[float]
    best_epoch: int
    best_state: dict[str, Tensor] | None  # None: the model's final weights are the kept ones
    stop_reason: str
    best_optimizer: dict | None = None  # the optimizers' state when best_state was taken


def _run_epochs(
    trainer: FusedTrainer | _PerTableTrainer,
    source: BatchSource,
    *,
    seed: int,
    validation: Batch | None,
    epochs: int | None,
    max_epochs: int,
    patience: int,
    batch_size: int,
) -> _Run:
    """The epoch loop: fixed or early-stopped (module docstring)."""
    early = epochs is None and validation is not None
    limit = epochs if epochs is not None else (max_epochs if early else 1)
    generator = torch.Generator().manual_seed(seed)
    run = _Run(0, [], [], 0, None, f"{limit} epoch(s) as asked")
    best = float("inf")
    if validation is not None:  # the starting loss, for the record
        run.validation_losses.append(trainer.validation_loss(validation))
    for epoch in range(1, limit + 1):
        started = time.perf_counter()
        steps, loss = trainer.epoch(source.epoch(batch_size=batch_size, generator=generator))
        run.steps += steps
        run.epoch_losses.append(loss)
        if validation is None:
            progress(
                "training: epoch %d/%d, %d rows, loss %.4f (%.0f s)",
                epoch,
                limit,
                source.rows,
                loss,
                time.perf_counter() - started,
            )
            continue
        current = trainer.validation_loss(validation)
        run.validation_losses.append(current)
        progress(
            "training: epoch %d/%d%s, %d rows, loss %.4f, held-out loss %.4f (%.0f s)",
            epoch,
            limit,
            " at most" if early else "",
            source.rows,
            loss,
            current,
            time.perf_counter() - started,
        )
        if not early:
            continue
        if current < best:
            best, run.best_epoch, run.best_state = current, epoch, trainer.snapshot()
            if isinstance(trainer, FusedTrainer):
                run.best_optimizer = copy.deepcopy(trainer.optimizer_state())
        elif epoch - run.best_epoch >= patience:
            run.stop_reason = (
                f"held-out loss not better than epoch {run.best_epoch}'s for {patience} epoch(s)"
            )
            break
    else:
        if early:
            run.stop_reason = f"max_epochs {max_epochs} reached"
    if early and run.best_epoch == len(run.epoch_losses):
        run.best_state = None  # the last epoch is the best: the model already holds it
    if not early:
        run.best_epoch = len(run.epoch_losses)
    return run


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


def _loss_sum(logits: Tensor, labels: Tensor) -> Tensor:
    return nn.functional.binary_cross_entropy_with_logits(
        logits.double(), labels.double(), reduction="sum"
    )


class _PerTableTrainer:
    """Epochs with one lookup per table and sparse gradients from autograd."""

    def __init__(
        self,
        model: DLRM,
        size: TrainingSize,
        *,
        sparse_optimizer: str,
        sparse_learning_rate: float,
        weight_decay: float,
    ) -> None:
        self.model = model
        self.sparse_params, dense_params = _split_parameters(model)
        # torch's default Adam, as before the fused path existed: with SparseAdam this path
        # reproduces earlier releases' weights bit for bit.
        self.optimizers: list[torch.optim.Optimizer] = [
            torch.optim.Adam(dense_params, lr=size.learning_rate)
        ]
        self.adagrads: list[RowwiseAdagrad] = []
        if sparse_optimizer == "sparse_adam":
            self.optimizers.append(
                torch.optim.SparseAdam(self.sparse_params, lr=sparse_learning_rate)
            )
        else:
            self.adagrads = [
                RowwiseAdagrad(
                    num_rows=p.shape[0],
                    lr=sparse_learning_rate,
                    initial_accumulator=size.initial_accumulator,
                    weight_decay=weight_decay,
                )
                for p in self.sparse_params
            ]
        self.loss_fn = nn.BCEWithLogitsLoss(reduction="mean")

    def epoch(self, parts: Iterator[Batch]) -> tuple[int, float]:
        self.model.train()
        loss_sum, seen, steps = torch.zeros((), dtype=torch.float64), 0, 0
        for part in parts:
            for optimizer in self.optimizers:
                optimizer.zero_grad(set_to_none=True)
            for param in self.sparse_params:
                param.grad = None
            loss = self.loss_fn(self.model(part), part.labels)
            loss.backward()
            for optimizer in self.optimizers:
                optimizer.step()
            for param, adagrad in zip(self.sparse_params, self.adagrads):
                grad = param.grad.coalesce()  # sums duplicate ids
                adagrad.step(param.data, grad.indices()[0], grad.values().clone())
            loss_sum += loss.detach().double() * len(part)
            seen += len(part)
            steps += 1
        return steps, float(loss_sum) / max(seen, 1)

    def validation_loss(self, validation: Batch) -> float:
        self.finish()
        self.model.eval()
        total = torch.zeros((), dtype=torch.float64)
        with torch.no_grad():
            for part in batches_of(validation, batch_size=_SCORING_ROWS):
                total += _loss_sum(self.model(part), part.labels)
        self.model.train()
        return float(total) / len(validation)

    def snapshot(self) -> dict[str, Tensor]:
        self.finish()
        return {name: t.detach().clone() for name, t in self.model.state_dict().items()}

    def finish(self) -> None:
        for param, adagrad in zip(self.sparse_params, self.adagrads):
            adagrad.catch_up(param.data)


def warm_start(model: nn.Module, from_model: nn.Module) -> list[str]:
    """Copy ``from_model``'s weights into ``model`` wherever name and shape match.

    A quantized ``from_model`` (e.g. an int8 champion) is dequantized first. Tensors whose
    shape changed (a resized table, a new layer) keep ``model``'s own initialisation. The
    dense transform's buffers are copied too: continue with
    ``train_dlrm(..., dense_transform="keep")`` so the MLPs keep the inputs they learned on.

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
