"""Streaming a window of day files: every kept row once per epoch, bounded memory, training."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from quantrec.data_checks.schema import CategoricalFeature, FeatureSchema, SchemaError
from quantrec.models.stream import (
    InMemorySource,
    WindowStream,
    concat_batches,
    holdout_mask,
    prefetched,
    read_holdout,
)
from quantrec.models.train import train_dlrm

# "row" is a dense column holding a unique row number, untransformed, to track rows.
ROW_SCHEMA = FeatureSchema(
    dense=("row",),
    categorical=(CategoricalFeature(name="item", hash_size=50),),
    dense_transform="none",
)


def _write_days(folder: Path, *, days: int, rows: int, row_group: int = 100) -> list[Path]:
    paths = []
    for day in range(days):
        numbers = np.arange(day * rows, (day + 1) * rows)
        frame = pd.DataFrame(
            {"label": numbers % 2, "row": numbers.astype(np.float64), "item": numbers % 37}
        )
        path = folder / f"day={day}" / "part-0.parquet"
        path.parent.mkdir(parents=True)
        pq.write_table(
            pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=row_group
        )
        paths.append(path)
    return paths


def _epoch(stream, *, batch_size: int, seed: int):
    return stream.epoch(batch_size=batch_size, generator=torch.Generator().manual_seed(seed))


def _epoch_rows(stream: WindowStream, *, batch_size: int, seed: int) -> list[int]:
    return [
        int(r)
        for b in _epoch(stream, batch_size=batch_size, seed=seed)
        for r in b.dense[:, 0].tolist()
    ]


@pytest.mark.parametrize("prefetch", [False, True])
def test_each_kept_row_is_streamed_exactly_once_per_epoch(tmp_path, prefetch) -> None:
    paths = _write_days(tmp_path, days=3, rows=450)
    held = holdout_mask(450, fraction=0.2, seed=7)
    stream = WindowStream(
        paths,
        ROW_SCHEMA,
        exclude={paths[-1]: held},
        chunk_rows=64,
        buffer_chunks=3,
        prefetch=prefetch,
    )
    kept = sorted(set(range(1350)) - {900 + i for i in np.flatnonzero(held)})
    assert stream.rows == len(kept) == 1350 - 90

    first = _epoch_rows(stream, batch_size=100, seed=1)
    assert sorted(first) == kept
    sizes = [len(b) for b in _epoch(stream, batch_size=100, seed=1)]
    assert sizes[:-1] == [100] * (len(sizes) - 1) and sum(sizes) == len(kept)
    assert _epoch_rows(stream, batch_size=100, seed=1) == first  # seeded
    second = _epoch_rows(stream, batch_size=100, seed=2)
    assert sorted(second) == kept and second != first
    # Rows of different days mix inside batches (units visited in a shuffled order).
    assert first[:100] != sorted(first[:100])


def test_the_held_out_rows_are_the_mask_of_the_last_day_and_never_streamed(tmp_path) -> None:
    paths = _write_days(tmp_path, days=2, rows=333, row_group=50)
    mask = holdout_mask(333, fraction=0.25, seed=3)
    assert mask.sum() == round(0.25 * 333)  # 83 rows
    assert np.array_equal(holdout_mask(333, fraction=0.25, seed=3), mask)  # seeded
    assert not np.array_equal(holdout_mask(333, fraction=0.25, seed=4), mask)
    held_rows = 333 + np.flatnonzero(mask)  # "row" numbers of the last day's held-out rows

    read_mask, frame = read_holdout(paths[-1], fraction=0.25, seed=3)
    assert np.array_equal(read_mask, mask)
    assert frame.index.equals(pd.RangeIndex(len(held_rows)))
    assert frame["row"].astype(int).tolist() == held_rows.tolist()  # in file order
    assert frame.columns.tolist() == ["label", "row", "item"]
    _, only_rows = read_holdout(paths[-1], fraction=0.25, seed=3, columns=["row"])
    assert only_rows.columns.tolist() == ["row"]

    stream = WindowStream(paths, ROW_SCHEMA, exclude={paths[-1]: read_mask}, chunk_rows=50)
    streamed = sorted(_epoch_rows(stream, batch_size=64, seed=0))
    assert streamed == sorted(set(range(666)) - set(held_rows.tolist()))


def _epoch_peak(folder: Path, days: int) -> tuple[int, int]:
    """(rows resident at once, least traced peak bytes of three epochs) over ``days`` days."""
    stream = WindowStream(
        _write_days(folder, days=days, rows=10_000, row_group=5000),
        ROW_SCHEMA,
        chunk_rows=500,
        buffer_chunks=2,
        prefetch=False,
    )
    # tracemalloc counts every thread's allocations, and other threads of the test process
    # (a Prefect test server's) allocate at random moments: the least of three epochs is
    # the stream's own peak.
    peaks = []
    for _ in range(3):
        tracemalloc.start()
        try:
            for _ in _epoch(stream, batch_size=128, seed=0):
                pass
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    return stream.peak_resident_rows, min(peaks)


def test_memory_does_not_grow_with_the_number_of_days(tmp_path) -> None:
    rows_2, bytes_2 = _epoch_peak(tmp_path / "two", 2)
    rows_8, bytes_8 = _epoch_peak(tmp_path / "eight", 8)
    assert rows_2 <= 2 * 500 + 128 and rows_8 <= 2 * 500 + 128
    # 8 days of numpy / pandas buffers would be ~2 MB; the traced peak stays that of a few
    # chunks (~12 kB each) plus bookkeeping, whatever the number of days.
    assert bytes_8 < 1.3 * bytes_2 + 100_000, (bytes_2, bytes_8)
    assert bytes_8 < 1_000_000, bytes_8


def test_bad_stream_arguments_are_rejected(tmp_path) -> None:
    paths = _write_days(tmp_path, days=1, rows=10)
    with pytest.raises(ValueError, match="shape \\(3,\\), the file has 10 rows"):
        WindowStream(paths, ROW_SCHEMA, exclude={paths[0]: np.zeros(3, dtype=bool)})
    with pytest.raises(ValueError, match="chunk_rows=0"):
        WindowStream(paths, ROW_SCHEMA, chunk_rows=0)
    other = FeatureSchema(dense=("price",), categorical=ROW_SCHEMA.categorical)
    with pytest.raises(SchemaError, match=r"lacks column\(s\) \['price'\]"):
        WindowStream(paths, other)
    with pytest.raises(ValueError, match="fraction must lie in \\(0, 1\\), got 1.5"):
        holdout_mask(10, fraction=1.5, seed=0)


def test_prefetched_keeps_order_and_reraises() -> None:
    assert list(prefetched(iter(range(50)), depth=2, transform=lambda x: x * 2)) == list(
        range(0, 100, 2)
    )

    def broken():
        yield 1
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError, match="disk gone"):
        list(prefetched(broken()))
    early = prefetched(iter(range(1000)), depth=1)
    assert next(early) == 0
    early.close()  # the producer thread stops instead of blocking forever


def test_concat_batches_rebases_jagged_offsets(make_batch) -> None:
    a, b = make_batch(rows=5, seed=0), make_batch(rows=7, seed=1)
    joined = concat_batches([a, b])
    assert len(joined) == 12
    assert torch.equal(joined.slice(5, 12).sparse.values[0], b.sparse.values[0])
    assert torch.equal(joined.slice(5, 12).sparse.offsets[1], b.sparse.offsets[1])


def _tiny_days(folder: Path, make_frame, days: int) -> list[Path]:
    paths = []
    for day in range(days):
        path = folder / f"day={day}" / "part-0.parquet"
        path.parent.mkdir(parents=True)
        frame = make_frame(rows=800, seed=day)
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=256)
        paths.append(path)
    return paths


def test_training_from_a_stream_learns_and_is_bit_reproducible(
    tmp_path, tiny_schema, make_model, make_frame
) -> None:
    paths = _tiny_days(tmp_path, make_frame, days=2)
    mask, _ = read_holdout(paths[-1], fraction=0.2, seed=0)
    stream = WindowStream(paths, tiny_schema, exclude={paths[-1]: mask}, chunk_rows=128)
    runs = []
    for _ in range(2):
        model = make_model(seed=5)
        report = train_dlrm(model, stream, epochs=3, batch_size=64, learning_rate=0.02, seed=9)
        runs.append((model, report))
    (first, report), (second, again) = runs
    assert report.samples == 3 * stream.rows and report.steps == 3 * -(-stream.rows // 64)
    assert report.epoch_losses[-1] < report.epoch_losses[0]
    assert report.epoch_losses == again.epoch_losses
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name


def test_in_memory_source_visits_every_row_once(make_batch) -> None:
    batch = make_batch(rows=130)
    parts = list(_epoch(InMemorySource(batch), batch_size=64, seed=0))
    assert [len(p) for p in parts] == [64, 64, 2]
    assert sorted(torch.cat([p.dense[:, 1] for p in parts]).tolist()) == sorted(
        batch.dense[:, 1].tolist()
    )
