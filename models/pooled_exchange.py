"""The all-to-alls of pooled embeddings in table-wise sharded DLRM training.

On W ranks, every table lives on one rank (``TableSharding``); every rank looks up its own
F_r tables for all B samples of the global batch, and trains the MLPs on its slice of n_r
samples (``sample_splits``). ``PooledExchange.forward`` sends rank s the pooled rows of s's
samples for every table this rank owns (n_s X F_r X D) in one ``all_to_all_single``, so each
rank ends with n_r X F X D, as the DLRM reference's ``alltoall`` and TorchRec's table-wise
sharding do; ``backward`` returns the pooled gradient the same way (n_r X F_s X D to rank s).

Bytes (``ExchangeStats``): what each rank hands the all-to-alls for other ranks (its own
chunk never leaves the process). Exact, per step and rank: forward 4 D F_r (B - n_r),
backward 4 D n_r (F - F_r); summed over ranks 8 D F B (W - 1) / W.

Compression (a ``PooledCompressor``): each forward chunk for another rank is one message per
(table, destination) encoded by ``models.codec.encode_table`` (zstandard level
``RATIO_LEVEL``), within ``rel_f(t) x`` the range of table f's pooled block over all B
samples: the bound the single-process compressor uses, with its groups and schedule. The
byte counts of the messages go first, in a small int64 all-to-all; gradients go exact.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from quantrec.models.codec import CodecError, decode_table, encode_table
from quantrec.models.pooled_compression import RATIO_LEVEL, PooledCompressor

_FP32_BYTES = 4
_ENCODED, _RAW = 0, 1  # message kinds: codec bytes, or float32 bytes (bound below resolution)


@dataclass(frozen=True)
class TableSharding:
    """Which rank owns each table.

    Attributes:
        owners: the rank of each of the F tables.
        world_size: W.
    """

    owners: tuple[int, ...]
    world_size: int

    def __post_init__(self) -> None:
        bad = [r for r in self.owners if not 0 <= r < self.world_size]
        if self.world_size < 1 or bad:
            raise ValueError(
                f"owners must be ranks in [0, {self.world_size}); got {list(self.owners)}"
            )

    @classmethod
    def table_wise(cls, table_sizes: list[int], world_size: int) -> TableSharding:
        """Largest table first, each to the rank with the fewest rows so far (ties: lowest)."""
        if not 1 <= world_size <= len(table_sizes):
            raise ValueError(
                f"table-wise sharding needs 1 <= world_size <= tables; got {world_size} ranks "
                f"for {len(table_sizes)} tables"
            )
        load, owners = [0] * world_size, [0] * len(table_sizes)
        for f in sorted(range(len(table_sizes)), key=lambda f: (-table_sizes[f], f)):
            rank = min(range(world_size), key=lambda r: (load[r], r))
            owners[f], load[rank] = rank, load[rank] + table_sizes[f]
        return cls(tuple(owners), world_size)

    def tables_of(self, rank: int) -> list[int]:
        """The tables ``rank`` owns, ascending."""
        return [f for f, owner in enumerate(self.owners) if owner == rank]


def sample_splits(batch_size: int, world_size: int) -> list[int]:
    """n_r for each rank: ``batch_size`` split as evenly as possible, the first ranks larger."""
    return [batch_size // world_size + (r < batch_size % world_size) for r in range(world_size)]


@dataclass
class ExchangeStats:
    """What one rank's all-to-alls carried (bytes for other ranks) and how long they took.

    Attributes:
        steps: exchanges of a forward and a backward block.
        forward_bytes, backward_bytes: payload bytes sent to other ranks.
        count_bytes: bytes of the message sizes sent ahead of compressed payloads.
        raw_forward_bytes: what the forward payload would be as float32 (the ratio's base).
        forward_seconds, backward_seconds: wall time in each exchange (codec included).
    """

    steps: int = 0
    forward_bytes: int = 0
    backward_bytes: int = 0
    count_bytes: int = 0
    raw_forward_bytes: int = 0
    forward_seconds: float = 0.0
    backward_seconds: float = 0.0

    @property
    def total_bytes(self) -> int:
        return self.forward_bytes + self.backward_bytes + self.count_bytes

    def summed(self) -> ExchangeStats:
        """The stats of every rank added up (a collective: every rank must call it)."""
        ints = torch.tensor(
            [self.forward_bytes, self.backward_bytes, self.count_bytes, self.raw_forward_bytes],
            dtype=torch.int64,
        )
        floats = torch.tensor([self.forward_seconds, self.backward_seconds], dtype=torch.float64)
        dist.all_reduce(ints)
        dist.all_reduce(floats)
        forward, backward, counts, raw = (int(x) for x in ints)
        return ExchangeStats(self.steps, forward, backward, counts, raw, *floats.tolist())


class PooledExchange:
    """The two all-to-alls of pooled embeddings between table shards and sample shards.

    Args:
        sharding: the table owners; rank: this process's rank.
        compressor: encode forward chunks within its bounds (module docstring); None: exact.
        measure_error: with a compressor, decode every sent message again to record
            ``max_error_over_bound`` (costs a decode per message; off for timing).
    """

    def __init__(
        self,
        sharding: TableSharding,
        rank: int,
        *,
        compressor: PooledCompressor | None = None,
        measure_error: bool = False,
    ) -> None:
        self.sharding, self.rank = sharding, rank
        self.world = sharding.world_size
        self.owned = sharding.tables_of(rank)
        self.compressor, self.measure_error = compressor, measure_error
        self.stats = ExchangeStats()
        self.ranges: Tensor | None = None  # (F_r,) range of each owned block, last forward
        order = [f for s in range(self.world) for f in sharding.tables_of(s)]
        self._from_rank_order = torch.argsort(torch.tensor(order))
        # Per table: float32 and encoded bytes of this rank's messages in this step.
        self._step_bytes = torch.zeros(2, len(sharding.owners), dtype=torch.float64)
        if compressor is not None:
            compressor.log.max_error_over_bound = 0.0 if measure_error else float("nan")

    def forward(self, pooled: Tensor, splits: list[int]) -> Tensor:
        """float32 B X F_r X D (this rank's tables, all samples) -> n_r X F X D (all tables,
        this rank's samples); ``splits``: n_s of every rank, summing to B."""
        started = time.perf_counter()
        others = len(pooled) - splits[self.rank]
        raw = _FP32_BYTES * others * len(self.owned) * pooled.shape[2]
        self.stats.raw_forward_bytes += raw
        if self.compressor is None:
            per_sample = [len(self.sharding.tables_of(s)) * pooled.shape[2] for s in self._ranks]
            sizes = [n * len(self.owned) * pooled.shape[2] for n in splits]
            received = self._all_to_all(
                pooled.reshape(-1), sizes, [splits[self.rank] * k for k in per_sample]
            )
            self.stats.forward_bytes += raw
            chunks = [c.view(splits[self.rank], -1, pooled.shape[2]) for c in received]
        else:
            chunks = self._compressed_forward(pooled, splits)
        self.stats.forward_seconds += time.perf_counter() - started
        return torch.cat(chunks, dim=1).index_select(1, self._from_rank_order)

    def backward(self, grad: Tensor, splits: list[int]) -> Tensor:
        """float32 n_r X F X D (gradient of ``forward``'s output) -> B X F_r X D."""
        started = time.perf_counter()
        n, dim = grad.shape[0], grad.shape[2]
        parts = [grad[:, self.sharding.tables_of(s)].reshape(-1) for s in self._ranks]
        received = self._all_to_all(
            torch.cat(parts),
            [p.numel() for p in parts],
            [k * len(self.owned) * dim for k in splits],
        )
        self.stats.backward_bytes += _FP32_BYTES * (grad[0].numel() * n - parts[self.rank].numel())
        self.stats.backward_seconds += time.perf_counter() - started
        self.stats.steps += 1
        return torch.cat([c.view(-1, len(self.owned), dim) for c in received], dim=0)

    @property
    def _ranks(self) -> range:
        return range(self.world)

    def _all_to_all(self, send: Tensor, send_sizes: list[int], recv_sizes: list[int]) -> list:
        received = send.new_empty(sum(recv_sizes))
        dist.all_to_all_single(
            received, send.contiguous(), output_split_sizes=recv_sizes, input_split_sizes=send_sizes
        )
        return list(received.split(recv_sizes))

    def _compressed_forward(self, pooled: Tensor, splits: list[int]) -> list[Tensor]:
        compressor = self.compressor
        exact = pooled.detach().double()
        self.ranges = exact.amax(dim=(0, 2)) - exact.amin(dim=(0, 2))
        rel = compressor.bounds()
        bounds = rel[self.owned] * self.ranges if self.owned else rel[:0]
        starts = [sum(splits[:s]) for s in self._ranks]
        messages: list[list[tuple[bytes, int]]] = []
        for s in self._ranks:
            block = pooled[starts[s] : starts[s] + splits[s]]
            messages.append(
                []
                if s == self.rank
                else [self._encode(block[:, j], float(bounds[j])) for j in range(len(self.owned))]
            )
        counts = torch.tensor(
            [[len(data), kind] for per_rank in messages for data, kind in per_rank],
            dtype=torch.int64,
        ).reshape(-1)
        tables = [len(self.sharding.tables_of(s)) for s in self._ranks]
        recv_counts = [0 if s == self.rank else 2 * tables[s] for s in self._ranks]
        send_counts = [2 * len(m) for m in messages]
        got = self._all_to_all(counts, send_counts, recv_counts)
        self.stats.count_bytes += 8 * sum(send_counts)
        payload = b"".join(data for per_rank in messages for data, _ in per_rank)
        send = torch.frombuffer(bytearray(payload), dtype=torch.uint8) if payload else None
        send_sizes = [sum(len(d) for d, _ in m) for m in messages]
        recv_sizes = [int(c.view(-1, 2)[:, 0].sum()) for c in got]
        if send is None:
            send = torch.empty(0, dtype=torch.uint8)
        received = self._all_to_all(send, send_sizes, recv_sizes)
        self.stats.forward_bytes += sum(send_sizes)
        self._step_bytes.zero_()
        for s, per_rank in enumerate(messages):
            for f, (data, _) in zip(self.owned, per_rank):
                self._step_bytes[0, f] += _FP32_BYTES * splits[s] * pooled.shape[2]
                self._step_bytes[1, f] += len(data)
        local = pooled[starts[self.rank] : starts[self.rank] + splits[self.rank]]
        return [
            local if s == self.rank else self._decode(received[s], got[s], splits[self.rank])
            for s in self._ranks
        ]

    def _encode(self, block: Tensor, bound: float) -> tuple[bytes, int]:
        """One n_s X D block of one table within ``bound`` (absolute): (bytes, kind)."""
        low, high = float(block.min()), float(block.max())
        span = high - low
        # The slice's own range is within the block's: this relative bound gives the block's
        # absolute one (a hair under it, so float64 rounding cannot land past it).
        rel = 1.0 if span == 0 or bound >= span else bound / span * (1 - 1e-12)
        try:
            data, kind = encode_table(block, rel_bound=rel, level=RATIO_LEVEL), _ENCODED
        except CodecError:  # a bound below float32 resolution: sent exactly
            data, kind = block.contiguous().numpy().tobytes(), _RAW
        if self.measure_error and kind == _ENCODED and bound > 0:
            error = float((decode_table(data).double() - block.double()).abs().max())
            log = self.compressor.log
            log.max_error_over_bound = max(log.max_error_over_bound, error / bound)
        return data, kind

    def _decode(self, payload: Tensor, counts: Tensor, rows: int) -> Tensor:
        """The n_r X F_s X D block a rank sent, from its messages."""
        blocks, at = [], 0
        data = payload.numpy().tobytes()
        for size, kind in counts.view(-1, 2).tolist():
            message = data[at : at + size]
            at += size
            if kind == _RAW:
                blocks.append(torch.frombuffer(bytearray(message), dtype=torch.float32))
            else:
                blocks.append(decode_table(message))
        return torch.stack([b.view(rows, -1) for b in blocks], dim=1)

    def log_step(self) -> None:
        """Log this step's bounds and, every ``ratio_every`` steps, each table's ratio of
        float32 bytes over the bytes of its messages (a collective on those steps)."""
        compressor = self.compressor
        compressor.log.bounds.append(compressor.bounds().tolist())
        if compressor.step % compressor.settings.ratio_every or self.world == 1:
            return
        dist.all_reduce(self._step_bytes)
        raw, encoded = self._step_bytes
        compressor.log.ratios[compressor.step] = (raw / encoded.clamp_min(1)).tolist()
