"""Fused embedding tables: one lookup call for many tables, for serving and for training.

Serving (``fuse_lookups``): torch's ``quantized::embedding_bag_*bit_rowwise_offsets`` reads
one packed table per call; a Criteo-shaped model makes 26 of them per batch. Concatenating
the rows of every table of the same format and shifting each table's ids by its first row
turns them into one call (measured 4.8 ms -> 1.8 ms for 26 4-bit tables at batch 2048,
1 thread). Plain fp32 ``nn.EmbeddingBag`` tables are fused the same way.

Training (``FusedTables``, ``FusedIds``, ``RowwiseAdagrad``): every table lives in one fp32
storage of sum(rows) X D; a step looks all F tables up with one ``embedding_bag`` call,
takes the gradient of the pooled output from autograd, and updates only the rows the step
touched (duplicates summed first), as TorchRec / FBGEMM's fused table-batched embeddings do.

``fuse_lookups`` is an inference-time transform: the fused module's state differs from the
per-table layout, so save the unfused model and fuse after loading. ``FusedTables`` writes
its rows back into the per-table ``nn.EmbeddingBag`` weights, so the DLRM's state_dict
layout (``sparse_arch.embedding_bags.<i>.weight``, the handle of precision plans) never
changes. Pooled values are bit-identical to the per-table lookups.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional

from quantrec.models.batch import Batch, KeyedJaggedIds
from quantrec.models.dlrm import DLRM, SparseArch
from quantrec.models.pooled_compression import PooledCompression, PooledCompressor
from quantrec.models.recipes.embedding import _KERNELS, RowwiseEmbeddingBag
from quantrec.models.sizing import TrainingSize
from quantrec.models.stream import batches_of, prefetched

_FP32 = "fp32"  # group key of the plain float tables, next to the bit widths
_SCORING_ROWS = 8192  # validation rows scored per forward pass


def _is_plain_float_bag(bag: nn.Module) -> bool:
    """A sum-pooled fp32 ``nn.EmbeddingBag`` whose lookup ``F.embedding_bag`` reproduces."""
    return (
        type(bag) is nn.EmbeddingBag
        and bag.mode == "sum"
        and bag.padding_idx is None
        and bag.max_norm is None
        and bag.weight.dtype == torch.float32
    )


def _first_rows(sizes: list[int]) -> Tensor:
    """int64 (len(sizes),): where each table starts in the concatenated rows."""
    return torch.tensor([0, *sizes[:-1]], dtype=torch.int64).cumsum(0)


class FusedSparseArch(nn.Module):
    """``SparseArch`` whose tables share one tensor per format: one lookup call per format.

    Row-wise quantized tables are grouped by bit width, plain fp32 ``nn.EmbeddingBag``
    tables form one more group (buffer ``weight_fp32``); other tables (fp16, ...) are kept.

    Args:
        sparse_arch: the per-table module.
    """

    def __init__(self, sparse_arch: SparseArch) -> None:
        super().__init__()
        bags = list(sparse_arch.embedding_bags)
        groups: dict[int | str, list[int]] = {}
        for i, bag in enumerate(bags):
            if isinstance(bag, RowwiseEmbeddingBag):
                groups.setdefault(bag.bits, []).append(i)
            elif _is_plain_float_bag(bag):
                groups.setdefault(_FP32, []).append(i)
        grouped = {i for features in groups.values() for i in features}
        self.others = nn.ModuleDict({str(i): b for i, b in enumerate(bags) if i not in grouped})
        self.groups: list[tuple[int, list[int]]] = []  # (bits, feature indices)
        for bits in sorted(k for k in groups if k != _FP32):
            features = groups[bits]
            packed = torch.cat([bags[i].packed_weight for i in features])
            self.register_buffer(f"packed_{bits}", packed)
            sizes = [bags[i].num_embeddings for i in features]
            self.register_buffer(f"first_row_{bits}", _first_rows(sizes))
            self.groups.append((bits, features))
        self.float_features: list[int] = groups.get(_FP32, [])
        if self.float_features:
            weight = torch.cat([bags[i].weight.detach() for i in self.float_features])
            self.register_buffer("weight_fp32", weight)
            sizes = [bags[i].num_embeddings for i in self.float_features]
            self.register_buffer("first_row_fp32", _first_rows(sizes))
        self.num_features = len(bags)

    def pooled(self, features: KeyedJaggedIds) -> list[Tensor]:
        """The F pooled embeddings, each float32 B X D (views into one output per group)."""
        pooled: list[Tensor | None] = [None] * self.num_features
        for key, bag in self.others.items():
            i = int(key)
            pooled[i] = bag(features.values[i], features.offsets[i])
        for bits, indices in self.groups:
            values, offsets = _concatenated(features, indices, getattr(self, f"first_row_{bits}"))
            lookup = getattr(torch.ops.quantized, _KERNELS[bits][1])
            packed = getattr(self, f"packed_{bits}")
            out = lookup(packed, values, offsets, False, 0, False, None, None, False)
            _scatter_views(pooled, indices, out)
        if self.float_features:
            indices = self.float_features
            values, offsets = _concatenated(features, indices, self.first_row_fp32)
            out = functional.embedding_bag(values, self.weight_fp32, offsets, mode="sum")
            _scatter_views(pooled, indices, out)
        return pooled  # type: ignore[return-value]

    def forward(self, features: KeyedJaggedIds) -> Tensor:
        """F keys, B bags each -> float32 B X F X D."""
        return torch.stack(self.pooled(features), dim=1)


def _concatenated(
    features: KeyedJaggedIds, indices: list[int], first_row: Tensor
) -> tuple[Tensor, Tensor]:
    """Ids of ``indices``' tables shifted into the fused rows, and table-major bag offsets."""
    values = torch.cat([features.values[i] + first_row[j] for j, i in enumerate(indices)])
    # Each table's bags start where the previous table's ids end.
    starts = torch.tensor([0] + [features.values[i].shape[0] for i in indices[:-1]])
    offsets = torch.cat(
        [features.offsets[i] + s for i, s in zip(indices, starts.cumsum(0).tolist())]
    )
    return values, offsets


def _scatter_views(pooled: list[Tensor | None], indices: list[int], out: Tensor) -> None:
    for j, part in zip(indices, out.view(len(indices), -1, out.shape[1]).unbind(0)):
        pooled[j] = part


def fuse_lookups(model: DLRM) -> DLRM:
    """A copy of ``model`` (eval mode) whose fp32 and row-wise tables are looked up fused."""
    sparse = model.sparse_arch
    fused = copy.deepcopy(model, {id(sparse): sparse})
    fused.sparse_arch = FusedSparseArch(sparse)
    return fused.eval()


@dataclass(frozen=True)
class FusedIds:
    """One batch's ids in the fused row space, bags in sample-major order.

    Bag ``b * F + f`` holds sample b's ids of feature f, so one ``embedding_bag`` call
    returns (B * F) X D, which is already B X F X D without a transpose.

    Attributes:
        values: int64 (total ids,): ids shifted by their table's first row.
        offsets: int64 (B * F,): start of each bag in ``values``.
        rows: int64 (U,): the distinct fused rows of ``values``, ascending.
        inverse: int64 (total ids,): ``values == rows[inverse]``.
        bag_of_value: int64 (total ids,): the bag of each id; None when every bag holds
            exactly one id (then id i is bag i).
        batch_size: B.
    """

    values: Tensor
    offsets: Tensor
    rows: Tensor
    inverse: Tensor
    bag_of_value: Tensor | None
    batch_size: int


def fuse_ids(features: KeyedJaggedIds, *, first_row: Tensor, table_sizes: Tensor) -> FusedIds:
    """Shift, interleave and de-duplicate one batch's ids (vectorised, no per-row Python).

    Args:
        features: F keys, B bags each.
        first_row: int64 (F,): each table's first row in the fused storage.
        table_sizes: int64 (F,): each table's rows.

    Raises:
        ValueError: an id lies outside its table (it would silently read another table's
            rows in the fused storage, where a per-table lookup raises).
    """
    batch_size, num_features = features.batch_size, len(features.keys)
    for key, values, size in zip(features.keys, features.values, table_sizes.tolist()):
        if values.numel() and not 0 <= int(values.min()) <= int(values.max()) < size:
            raise ValueError(
                f"feature {key!r} has ids in [{int(values.min())}, {int(values.max())}], "
                f"outside its table of {size} rows; hash ids into [0, hash_size) first"
            )
    starts_bf = torch.stack(features.offsets, dim=1)  # B X F
    one_id_per_bag = all(v.shape[0] == batch_size for v in features.values) and torch.equal(
        starts_bf, torch.arange(batch_size).unsqueeze(1).expand(-1, num_features)
    )
    if one_id_per_bag:
        values = (torch.stack(features.values, dim=1) + first_row).reshape(-1)
        offsets = torch.arange(values.shape[0], dtype=torch.int64)
        bag_of_value = None
    else:
        # Table-major concatenation, then gather every bag's ids in sample-major order.
        table_major = torch.cat([v + first_row[f] for f, v in enumerate(features.values)])
        value_starts = torch.tensor([0] + [v.shape[0] for v in features.values[:-1]]).cumsum(0)
        starts = (starts_bf + value_starts).reshape(-1)
        flat_lengths = torch.stack(features.lengths(), dim=1).reshape(-1)
        offsets = torch.cumsum(flat_lengths, 0) - flat_lengths
        bag_of_value = torch.repeat_interleave(
            torch.arange(batch_size * num_features), flat_lengths
        )
        rank = torch.arange(bag_of_value.shape[0]) - offsets[bag_of_value]
        values = table_major[starts[bag_of_value] + rank]
    rows, inverse = torch.unique(values, sorted=True, return_inverse=True)
    return FusedIds(values, offsets, rows, inverse, bag_of_value, batch_size)


class FusedTables:
    """The F fp32 tables of a ``SparseArch`` in one (sum of rows) X D storage.

    Args:
        sparse_arch: plain sum-pooled fp32 ``nn.EmbeddingBag`` tables, all of dimension D;
            their weights are copied in (the per-table module is not modified).
    """

    def __init__(self, sparse_arch: SparseArch) -> None:
        bags = list(sparse_arch.embedding_bags)
        odd = [i for i, b in enumerate(bags) if not _is_plain_float_bag(b)]
        if odd:
            raise TypeError(
                f"tables {odd} are not plain sum-pooled fp32 nn.EmbeddingBag modules; train "
                "the float model and quantize afterwards (or pass fused=False)"
            )
        self.sizes = [b.num_embeddings for b in bags]
        self.first_row = _first_rows(self.sizes)
        self.table_sizes = torch.tensor(self.sizes, dtype=torch.int64)
        with torch.no_grad():
            self.weight = torch.cat([b.weight.detach() for b in bags])

    @property
    def num_features(self) -> int:
        return len(self.sizes)

    def pooled(self, ids: FusedIds) -> Tensor:
        """float32 B X F X D sum-pooled embeddings, outside autograd (updates are manual)."""
        with torch.no_grad():
            out = functional.embedding_bag(ids.values, self.weight, ids.offsets, mode="sum")
        return out.view(ids.batch_size, self.num_features, -1)

    def row_gradients(self, ids: FusedIds, pooled_grad: Tensor) -> Tensor:
        """float32 U X D: the loss gradient of each row in ``ids.rows``, duplicates summed.

        Sum pooling passes a bag's gradient unchanged to each of its ids.

        Args:
            pooled_grad: float32 B X F X D, the gradient of ``pooled``'s output.
        """
        per_bag = pooled_grad.reshape(-1, pooled_grad.shape[-1])
        per_value = per_bag if ids.bag_of_value is None else per_bag[ids.bag_of_value]
        summed = per_value.new_zeros(ids.rows.shape[0], per_value.shape[1])
        return summed.index_add_(0, ids.inverse, per_value)

    def write_back(self, sparse_arch: SparseArch) -> None:
        """Copy the fused rows into each table's own ``weight`` (layout unchanged)."""
        with torch.no_grad():
            for bag, part in zip(sparse_arch.embedding_bags, self.weight.split(self.sizes)):
                bag.weight.copy_(part)


class RowwiseAdagrad:
    """Row-wise Adagrad (DLRM / FBGEMM ``EXACT_ROWWISE_ADAGRAD``) for one embedding storage.

    One accumulator per row: for each row r touched by a step, with g its (duplicate-summed)
    gradient of D elements, ``state[r] += mean(g ** 2)`` and
    ``weight[r] -= lr * g / (sqrt(state[r]) + eps)``. Rows not touched are not read.
    State is 4 bytes per row instead of SparseAdam's 8 D bytes.

    ``initial_accumulator`` (TensorFlow's ``initial_accumulator_value``) damps the first
    steps of a row: without it, a row's first step has the size ``lr`` whatever its
    gradient, so an id seen once moves as far as a frequent one on its first sight.

    ``weight_decay`` adds the L2 term ``weight_decay * w`` to the gradient of every row at
    every step, lazily: a row's skipped steps are applied when it is next touched (and for
    all rows by ``catch_up``), each shrinking it by ``lr * weight_decay / (sqrt(state) +
    eps)``, as Adagrad would with that row's accumulator. Rare rows shrink the most, as
    under a logistic regression's L2. It keeps one int64 step per row.

    Args:
        num_rows: rows of the storage.
        lr: learning rate, positive.
        eps: added to the root, as in FBGEMM.
        initial_accumulator: start value of every row's accumulator, >= 0.
        weight_decay: L2 coefficient on the mean loss, >= 0.
    """

    def __init__(
        self,
        *,
        num_rows: int,
        lr: float,
        eps: float = 1e-8,
        initial_accumulator: float = 0.0,
        weight_decay: float = 0.0,
    ) -> None:
        if not lr > 0:
            raise ValueError(f"row-wise Adagrad needs lr > 0, got {lr}")
        if initial_accumulator < 0 or weight_decay < 0:
            raise ValueError(
                f"row-wise Adagrad needs initial_accumulator >= 0 and weight_decay >= 0; got "
                f"{initial_accumulator} and {weight_decay}"
            )
        self.lr, self.eps, self.weight_decay = lr, eps, weight_decay
        self.state = torch.full((num_rows,), float(initial_accumulator), dtype=torch.float32)
        self.steps = 0
        self.last_step = torch.zeros(num_rows, dtype=torch.int64) if weight_decay else None

    def step(self, weight: Tensor, rows: Tensor, grad: Tensor) -> None:
        """Update ``weight`` (rows X D, in place) at ``rows``.

        Args:
            rows: int64 (U,), distinct.
            grad: float32 U X D, the summed gradient of each row; overwritten (scaled in
                place to save an allocation per step).
        """
        with torch.no_grad():
            self.steps += 1
            if self.last_step is not None:
                self._decay(weight, rows, upto=self.steps - 1)
                grad.add_(weight.index_select(0, rows), alpha=self.weight_decay)
            state = self.state.index_select(0, rows).add_(grad.square().mean(1))
            self.state.index_copy_(0, rows, state)
            scale = state.sqrt_().add_(self.eps).reciprocal_().mul_(-self.lr)
            weight.index_add_(0, rows, grad.mul_(scale.unsqueeze(1)))
            if self.last_step is not None:
                self.last_step.index_fill_(0, rows, self.steps)

    def state_dict(self) -> dict[str, Tensor]:
        """The accumulators and the step count (after ``catch_up``: no decay pending)."""
        return {"accumulator": self.state.clone(), "steps": torch.tensor(self.steps)}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Resume from ``state_dict()`` of a storage with the same rows."""
        accumulator = state["accumulator"]
        if accumulator.shape != self.state.shape:
            raise ValueError(
                f"row-wise Adagrad state has {tuple(accumulator.shape)} accumulators, the "
                f"storage {tuple(self.state.shape)}"
            )
        self.state = accumulator.to(torch.float32).clone()
        self.steps = int(state["steps"])
        if self.last_step is not None:
            self.last_step.fill_(self.steps)

    def catch_up(self, weight: Tensor) -> None:
        """Apply every row's pending weight decay (before scoring or saving the rows)."""
        if self.last_step is not None:
            with torch.no_grad():
                self._decay(weight, torch.arange(weight.shape[0]), upto=self.steps)

    def _decay(self, weight: Tensor, rows: Tensor, *, upto: int) -> None:
        missed = (upto - self.last_step.index_select(0, rows)).clamp(min=0)
        if not bool(missed.any()):
            return
        rate = self.state.index_select(0, rows).sqrt().add_(self.eps).reciprocal_()
        shrink = rate.mul_(-self.lr * self.weight_decay).add_(1.0).clamp_(min=0.0)
        factor = shrink.pow_(missed.to(shrink.dtype))
        weight.index_copy_(0, rows, weight.index_select(0, rows).mul_(factor.unsqueeze(1)))
        self.last_step.index_fill_(0, rows, upto)


class RowSparseAdam:
    """``torch.optim.SparseAdam``'s update (lazy Adam) on distinct rows of one storage.

    For each touched row: ``m = m + (1 - beta1)(g - m)``, ``v = v + (1 - beta2)(g^2 - v)``,
    ``weight -= lr sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + eps)`` with t the
    number of steps taken; untouched rows' moments do not decay. Same arithmetic as torch's
    (which builds sparse tensors for every term), with gathers and scatters instead:
    measured 58 -> 24 ms per step for 40k touched rows of a 2.6M X 16 storage, 1 thread.
    State: two float32 tensors the size of the storage.

    Args:
        num_rows, dim: the storage's shape.
        lr, betas, eps: as for ``torch.optim.SparseAdam``.
    """

    def __init__(
        self,
        *,
        num_rows: int,
        dim: int,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        if not lr > 0:
            raise ValueError(f"SparseAdam needs lr > 0, got {lr}")
        self.lr, self.betas, self.eps = lr, betas, eps
        self.exp_avg = torch.zeros(num_rows, dim, dtype=torch.float32)
        self.exp_avg_sq = torch.zeros(num_rows, dim, dtype=torch.float32)
        self.steps = 0

    def step(self, weight: Tensor, rows: Tensor, grad: Tensor) -> None:
        """Update ``weight`` at ``rows`` (int64 (U,), distinct) given grad float32 U X D."""
        beta1, beta2 = self.betas
        self.steps += 1
        with torch.no_grad():
            old_avg = self.exp_avg.index_select(0, rows)
            old_sq = self.exp_avg_sq.index_select(0, rows)
            avg = grad.sub(old_avg).mul_(1 - beta1).add_(old_avg)
            sq = grad.square().sub_(old_sq).mul_(1 - beta2).add_(old_sq)
            self.exp_avg.index_copy_(0, rows, avg)
            self.exp_avg_sq.index_copy_(0, rows, sq)
            step_size = self.lr * (1 - beta2**self.steps) ** 0.5 / (1 - beta1**self.steps)
            weight.index_add_(0, rows, avg.div_(sq.sqrt_().add_(self.eps)).mul_(-step_size))


class FusedTrainer:
    """``models.train.train_dlrm``'s fast path: epochs on one fused table storage.

    The pooled output of ``FusedTables`` is an autograd leaf, so autograd only runs the
    MLPs and the interaction; the tables are updated from the pooled gradient (duplicate
    ids summed) with row-wise Adagrad or SparseAdam's update, and ``finish`` writes them
    back into the model's per-table weights. Each batch's fused ids are prepared in a
    background thread while the previous step runs.

    Args:
        model: the DLRM to train in place.
        size: batch size, Adam's learning rate, row-wise Adagrad's initial accumulator.
        sparse_optimizer: "rowwise_adagrad" or "sparse_adam".
        sparse_learning_rate: the tables' step.
        weight_decay: row-wise Adagrad's lazy L2 (``RowwiseAdagrad``).
        pooled_compression: each training step's pooled embeddings go through the
            error-bounded codec (``models.pooled_compression``); validation stays exact.
    """

    def __init__(
        self,
        model: DLRM,
        size: TrainingSize,
        *,
        sparse_optimizer: str,
        sparse_learning_rate: float,
        weight_decay: float,
        pooled_compression: PooledCompression | None = None,
    ) -> None:
        self.model = model
        self.compressor = (
            None
            if pooled_compression is None
            else PooledCompressor(pooled_compression, list(model.feature_names))
        )
        self.tables = FusedTables(model.sparse_arch)
        dense_params = [
            p for name, p in model.named_parameters() if not name.startswith("sparse_arch.")
        ]
        # The fused CPU kernel updates every parameter in one loop: 3-4x less step time than
        # the per-parameter default for these ~20 tensors.
        self.adam = torch.optim.Adam(dense_params, lr=size.learning_rate, fused=True)
        rows, dim = self.tables.weight.shape
        if sparse_optimizer == "rowwise_adagrad":
            self.sparse: RowwiseAdagrad | RowSparseAdam = RowwiseAdagrad(
                num_rows=rows,
                lr=sparse_learning_rate,
                initial_accumulator=size.initial_accumulator,
                weight_decay=weight_decay,
            )
        else:
            self.sparse = RowSparseAdam(num_rows=rows, dim=dim, lr=sparse_learning_rate)
        self.loss_fn = nn.BCEWithLogitsLoss(reduction="mean")

    def _ids(self, part: Batch) -> FusedIds:
        if part.sparse.keys != self.model.feature_names:
            raise ValueError(
                f"batch sparse keys {list(part.sparse.keys)} differ from the model's "
                f"feature_names {list(self.model.feature_names)}"
            )
        return fuse_ids(
            part.sparse, first_row=self.tables.first_row, table_sizes=self.tables.table_sizes
        )

    def _logits(self, part: Batch, pooled: Tensor) -> Tensor:
        model = self.model
        combined = torch.cat((model.dense_arch(part.dense).unsqueeze(1), pooled), dim=1)
        return model.over_arch(model.inter_arch.interact(combined)).squeeze(1)

    def epoch(self, parts: Iterator[Batch]) -> tuple[int, float]:
        """One pass over ``parts``: (steps, mean training loss)."""
        self.model.train()
        loss_sum, seen, steps = torch.zeros((), dtype=torch.float64), 0, 0
        for part, ids in prefetched(parts, depth=2, transform=lambda p: (p, self._ids(p))):
            pooled = self.tables.pooled(ids)
            if self.compressor is not None:  # where a sharded trainer's all-to-all would be
                pooled = self.compressor.exchange(pooled)
            pooled.requires_grad_()
            loss = self.loss_fn(self._logits(part, pooled), part.labels)
            self.adam.zero_grad(set_to_none=True)
            loss.backward()
            if self.compressor is not None:
                self.compressor.observe(pooled.grad)
            self.adam.step()
            self.sparse.step(
                self.tables.weight, ids.rows, self.tables.row_gradients(ids, pooled.grad)
            )
            loss_sum += loss.detach().double() * len(part)
            seen += len(part)
            steps += 1
        return steps, float(loss_sum) / max(seen, 1)

    def validation_loss(self, validation: Batch) -> float:
        """Mean log loss (nats) on ``validation``, summed in float64 in row order."""
        self._catch_up()
        self.model.eval()
        total = torch.zeros((), dtype=torch.float64)
        with torch.no_grad():
            for part in batches_of(validation, batch_size=_SCORING_ROWS):
                logits = self._logits(part, self.tables.pooled(self._ids(part)))
                total += nn.functional.binary_cross_entropy_with_logits(
                    logits.double(), part.labels.double(), reduction="sum"
                )
        self.model.train()
        return float(total) / len(validation)

    def snapshot(self) -> dict[str, Tensor]:
        """A copy of the model's state with the current table rows."""
        self.finish()
        return {name: t.detach().clone() for name, t in self.model.state_dict().items()}

    def _catch_up(self) -> None:
        if isinstance(self.sparse, RowwiseAdagrad):
            self.sparse.catch_up(self.tables.weight)

    def finish(self) -> None:
        """Pending weight decay applied, the rows written back into the model."""
        self._catch_up()
        self.tables.write_back(self.model.sparse_arch)

    def optimizer_state(self) -> dict | None:
        """Adam's state and the row-wise accumulators, to resume in a later run (None with
        SparseAdam's update, whose moments are as large as the tables)."""
        if not isinstance(self.sparse, RowwiseAdagrad):
            return None
        self._catch_up()
        return {"adam": self.adam.state_dict(), "rowwise_adagrad": self.sparse.state_dict()}

    def resume(self, state: dict) -> None:
        """Continue from ``optimizer_state()`` of a run on the same architecture; the
        learning rates stay this run's.

        Raises:
            ValueError: the state is of another optimizer or another architecture.
        """
        if not isinstance(self.sparse, RowwiseAdagrad) or "rowwise_adagrad" not in state:
            raise ValueError("optimizer state resumes only with the row-wise Adagrad update")
        self.sparse.load_state_dict(state["rowwise_adagrad"])
        rates = [group["lr"] for group in self.adam.param_groups]
        self.adam.load_state_dict(state["adam"])
        for group in self.adam.param_groups:
            for param in group["params"]:
                moment = self.adam.state.get(param, {}).get("exp_avg")
                if moment is not None and moment.shape != param.shape:
                    raise ValueError(
                        f"Adam state of shape {tuple(moment.shape)} for a parameter of shape "
                        f"{tuple(param.shape)}: the state is of another architecture"
                    )
        for group, rate in zip(self.adam.param_groups, rates):
            group["lr"] = rate
