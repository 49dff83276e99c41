"""Training input as a stream of Batches: an in-memory Batch, or a window of Parquet days.

``train_dlrm`` accepts any ``BatchSource``: ``rows`` (samples per epoch) and ``epoch``,
which yields one epoch's Batches in an order drawn from a ``torch.Generator`` (the trainer
seeds one per run and passes it to every epoch: epochs differ, runs repeat).
``InMemorySource`` shuffles one Batch; ``WindowStream`` reads day files chunk by chunk, so
a window of any length trains in the memory of a few chunks:

* per epoch the (file, row group) units of the window are visited in a drawn order, each
  read in chunks of ``chunk_rows`` with ``ParquetFile.iter_batches``;
* each chunk goes through ``batch_from_frame`` (vectorised) after dropping excluded rows
  (the held-out rows of the last day, see ``holdout_mask``);
* ``buffer_chunks`` chunks at a time are pooled, permuted, and cut into Batches of
  ``batch_size``; the remainder (< batch_size rows) is carried into the next pool.

Shuffling is therefore local: rows mix within a pool, and across the window through the
unit order. A day written as one row group (pyarrow's default up to 1 Mi rows) is one unit;
write days with smaller row groups (e.g. 128 Ki rows) for a finer order across days.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import Tensor

from quantrec.data_checks.schema import FeatureSchema, SchemaError
from quantrec.models.batch import Batch, KeyedJaggedIds, batch_from_frame

T = TypeVar("T")
U = TypeVar("U")


@runtime_checkable
class BatchSource(Protocol):
    """What ``train_dlrm`` trains on besides a single Batch."""

    @property
    def rows(self) -> int:
        """Samples per epoch."""
        ...

    def epoch(self, *, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        """Every row exactly once, in Batches of ``batch_size`` (the last may be smaller),
        in an order drawn from ``generator`` (and no other randomness)."""
        ...


class InMemorySource:
    """One Batch, shuffled per epoch with one ``torch.randperm`` drawn from the generator.

    The same draws as ``train_dlrm`` made before it took sources, so a run on a Batch
    visits the rows in the same order as it always did.

    Args:
        batch: all training rows.
    """

    def __init__(self, batch: Batch) -> None:
        self.batch = batch

    @property
    def rows(self) -> int:
        return len(self.batch)

    def epoch(self, *, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        # One gather per epoch, then contiguous slices: no per-row Python in the step loop.
        shuffled = take_rows(self.batch, torch.randperm(self.rows, generator=generator))
        yield from batches_of(shuffled, batch_size=batch_size)


def take_rows(batch: Batch, index: Tensor) -> Batch:
    """``batch.take(index)`` with a fast path for keys of one id per bag (a plain gather).

    ``KeyedJaggedIds.take`` computes lengths, cumsums and two repeat_interleaves per key:
    measured 1 s per 130k-row pool of 26 keys, against ~0.1 s here.
    """
    rows = int(index.shape[0])
    positions = torch.arange(len(batch), dtype=torch.int64)
    new_offsets = torch.arange(rows, dtype=torch.int64)
    values, offsets = [], []
    for k, (v, o) in enumerate(zip(batch.sparse.values, batch.sparse.offsets)):
        if v.shape[0] == len(batch) and torch.equal(o, positions):
            values.append(v[index])
            offsets.append(new_offsets)
        else:
            one = KeyedJaggedIds(keys=batch.sparse.keys[k : k + 1], values=(v,), offsets=(o,))
            taken = one.take(index)
            values.append(taken.values[0])
            offsets.append(taken.offsets[0])
    sparse = KeyedJaggedIds(keys=batch.sparse.keys, values=tuple(values), offsets=tuple(offsets))
    return Batch(dense=batch.dense[index], sparse=sparse, labels=batch.labels[index])


def batches_of(batch: Batch, *, batch_size: int) -> Iterator[Batch]:
    """Consecutive slices of ``batch_size`` samples (the last may be smaller).

    Each key's bag boundaries are read once: ``Batch.slice`` concatenates a key's whole
    offsets per call, which made slicing a 400k-row window cost 20 ms per step.
    """
    rows = len(batch)
    starts = list(range(0, rows, batch_size)) + [rows]
    cuts = []  # per key, the value index where each slice starts (and the end)
    for v, o in zip(batch.sparse.values, batch.sparse.offsets):
        ends = torch.cat((o, o.new_tensor([v.shape[0]])))
        cuts.append(ends[starts].tolist())
    for i, (start, stop) in enumerate(zip(starts[:-1], starts[1:])):
        values, offsets = [], []
        for v, o, cut in zip(batch.sparse.values, batch.sparse.offsets, cuts):
            values.append(v[cut[i] : cut[i + 1]])
            offsets.append(o[start:stop] - cut[i])
        sparse = KeyedJaggedIds(
            keys=batch.sparse.keys, values=tuple(values), offsets=tuple(offsets)
        )
        yield Batch(dense=batch.dense[start:stop], sparse=sparse, labels=batch.labels[start:stop])


def holdout_mask(rows: int, *, fraction: float, seed: int) -> np.ndarray:
    """bool (rows,): the held-out rows of a window's last day, True = held out.

    The same draw as ``tasks.train.split_holdout`` (``default_rng(seed).choice``), so a
    streamed window and the in-memory split hold out the same rows.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"holdout fraction must lie in (0, 1), got {fraction}")
    if rows < 1:
        raise ValueError(f"cannot hold out rows of an empty day (rows={rows})")
    held = np.zeros(rows, dtype=bool)
    rng = np.random.default_rng(seed)
    held[rng.choice(rows, size=max(1, round(fraction * rows)), replace=False)] = True
    return held


def read_holdout(
    path: Path, *, fraction: float, seed: int, columns: Sequence[str] | None = None
) -> tuple[np.ndarray, pd.DataFrame]:
    """(mask, held-out rows) of one day file, reading it in chunks (never all at once).

    Returns:
        ``holdout_mask`` of the file, and its held-out rows in file order with a fresh
        index: equal to ``split_holdout``'s second frame when this is the last day.
    """
    file = pq.ParquetFile(path)
    mask = holdout_mask(file.metadata.num_rows, fraction=fraction, seed=seed)
    parts, start = [], 0
    for record_batch in file.iter_batches(batch_size=65_536, columns=columns):
        stop = start + record_batch.num_rows
        parts.append(record_batch.filter(pa.array(mask[start:stop])))
        start = stop
    table = pa.Table.from_batches(parts)
    return mask, table.to_pandas().reset_index(drop=True)


class WindowStream:
    """The rows of a window of Parquet day files, streamed chunk by chunk (module docstring).

    Args:
        paths: day files, oldest first.
        schema: the feature schema every file follows.
        exclude: path -> bool mask over the file's rows, True = not trained on.
        chunk_rows: rows read and converted at a time.
        buffer_chunks: chunks pooled per shuffle; memory is about this many chunks.
        prefetch: read and convert the next chunks in a background thread.

    Raises:
        SchemaError: a file lacks a schema column.
        ValueError: a mask's length differs from its file's rows, or a size is < 1.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        schema: FeatureSchema,
        *,
        exclude: Mapping[Path, np.ndarray] | None = None,
        chunk_rows: int = 65_536,
        buffer_chunks: int = 4,
        prefetch: bool = True,
    ) -> None:
        if not paths:
            raise ValueError("WindowStream needs at least one day file (paths is empty)")
        if chunk_rows < 1 or buffer_chunks < 1:
            raise ValueError(
                f"need chunk_rows >= 1 and buffer_chunks >= 1; got chunk_rows={chunk_rows}, "
                f"buffer_chunks={buffer_chunks}"
            )
        self.paths = [Path(p) for p in paths]
        self.schema = schema
        self.chunk_rows, self.buffer_chunks, self.prefetch = chunk_rows, buffer_chunks, prefetch
        self.exclude = {Path(p): np.asarray(m, dtype=bool) for p, m in (exclude or {}).items()}
        unknown = sorted(str(p) for p in self.exclude if p not in self.paths)
        if unknown:
            raise ValueError(f"exclude masks given for files not in the window: {unknown}")
        self.units: list[tuple[int, int, int]] = []  # (file index, row group, first row)
        self._rows = 0
        for index, path in enumerate(self.paths):
            self._rows += self._add_units(index, path)
        self.peak_resident_rows = 0  # rows held at once during the last epoch (memory check)

    def _add_units(self, index: int, path: Path) -> int:
        metadata = pq.ParquetFile(path).metadata
        names = set(pq.ParquetFile(path).schema_arrow.names)
        missing = [c for c in self.schema.columns if c not in names]
        if missing:
            raise SchemaError(f"{path} lacks column(s) {missing} required by the feature schema")
        mask = self.exclude.get(path)
        if mask is not None and mask.shape != (metadata.num_rows,):
            raise ValueError(
                f"exclude mask for {path} has shape {mask.shape}, the file has "
                f"{metadata.num_rows} rows"
            )
        first = 0
        for group in range(metadata.num_row_groups):
            self.units.append((index, group, first))
            first += metadata.row_group(group).num_rows
        return metadata.num_rows - (int(mask.sum()) if mask is not None else 0)

    @property
    def rows(self) -> int:
        """Rows trained on per epoch: every file's rows minus the excluded ones."""
        return self._rows

    def epoch(self, *, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        """One pass over the window in Batches of ``batch_size`` (the last may be smaller)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        order = torch.randperm(len(self.units), generator=generator).numpy()
        chunks = self._chunks(order)
        if self.prefetch:
            chunks = prefetched(chunks, depth=2)
        self.peak_resident_rows = 0
        carry: Batch | None = None
        pool: list[Batch] = []
        for chunk in _with_end(chunks):
            if chunk is not None:
                pool.append(chunk)
                if len(pool) < self.buffer_chunks:
                    continue
            parts = ([carry] if carry is not None else []) + pool
            pool = []
            if not parts:
                break
            mixed = concat_batches(parts)
            self.peak_resident_rows = max(self.peak_resident_rows, len(mixed))
            mixed = take_rows(mixed, torch.randperm(len(mixed), generator=generator))
            carry = None
            for part in batches_of(mixed, batch_size=batch_size):
                if len(part) == batch_size or chunk is None:
                    yield part
                else:
                    carry = part  # the short tail waits for the next pool

    def _chunks(self, order: np.ndarray) -> Iterator[Batch]:
        """Converted chunks of the units in ``order``, excluded rows dropped."""
        columns = self.schema.columns
        for unit in order:
            index, group, first = self.units[unit]
            path = self.paths[index]
            mask = self.exclude.get(path)
            file = pq.ParquetFile(path)
            start = first
            for record_batch in file.iter_batches(
                batch_size=self.chunk_rows, row_groups=[group], columns=columns
            ):
                stop = start + record_batch.num_rows
                if mask is not None:
                    record_batch = record_batch.filter(pa.array(~mask[start:stop]))
                start = stop
                if record_batch.num_rows:
                    yield batch_from_frame(record_batch.to_pandas(), self.schema)


def _with_end(items: Iterator[T]) -> Iterator[T | None]:
    """``items`` then one None, so the consumer can flush its last pool."""
    yield from items
    yield None


def concat_batches(batches: Sequence[Batch]) -> Batch:
    """The samples of ``batches`` in order, as one Batch (offsets rebased)."""
    keys = batches[0].sparse.keys
    values, offsets = [], []
    for k in range(len(keys)):
        parts = [b.sparse.values[k] for b in batches]
        starts = np.cumsum([0] + [p.shape[0] for p in parts[:-1]]).tolist()
        values.append(torch.cat(parts))
        offsets.append(torch.cat([b.sparse.offsets[k] + s for b, s in zip(batches, starts)]))
    return Batch(
        dense=torch.cat([b.dense for b in batches]),
        sparse=KeyedJaggedIds(keys=keys, values=tuple(values), offsets=tuple(offsets)),
        labels=torch.cat([b.labels for b in batches]),
    )


def prefetched(
    items: Iterator[T], *, depth: int = 2, transform: Callable[[T], U] | None = None
) -> Iterator[U]:
    """``items`` (mapped by ``transform``) produced by a background thread, in order.

    Overlaps reading / converting the next items with the consumer's work: pyarrow and
    most torch kernels release the GIL. Exceptions are re-raised in the consumer; the
    thread stops when the consumer stops early (the generator is closed).
    """
    out: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(entry: tuple[bool, object]) -> bool:
        """Hand ``entry`` over unless the consumer has gone; False if it has."""
        while not stop.is_set():
            try:
                out.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((True, transform(item) if transform is not None else item)):
                    return
            put((True, done))
        except BaseException as err:  # handed to the consumer, which re-raises it
            put((False, err))

    thread = threading.Thread(target=produce, name="quantrec-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            ok, item = out.get()
            if not ok:
                raise item
            if item is done:
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
