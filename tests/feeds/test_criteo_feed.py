"""Criteo TSV files: the exact format, missing values, day assignment and bounded reads."""

from __future__ import annotations

import gc
import gzip
import tracemalloc
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from quantrec.feeds.base import FeedError
from quantrec.feeds.criteo import MISSING_ID, CriteoFeed, CriteoFeedConfig, read_chunks
from quantrec.models.batch import batch_from_frame

DAY = date(2024, 3, 1)


def write_criteo(path: Path, rows: int, *, seed: int = 0, missing: float = 0.2) -> Path:
    """``rows`` lines in the Kaggle/Terabyte format: label, 13 ints, 26 hex ids, tabs."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((rows, 1)) < 0.25).astype(int).astype(str)
    counts = (rng.geometric(0.1, (rows, 13)) - 2).astype(str)  # -1 occurs, as in dense_1
    ids = np.char.mod("%08x", rng.integers(0, 2**32, (rows, 26)))
    fields = np.concatenate([labels, counts, ids], axis=1).astype(object)
    fields[:, 1:][rng.random((rows, 39)) < missing] = ""  # empty field = missing value
    lines = ["\t".join(row) for row in fields]
    text = "\n".join(lines) + "\n"
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def test_a_day_file_maps_to_the_contract(tmp_path: Path) -> None:
    path = write_criteo(tmp_path / "train.txt", 300)
    feed = CriteoFeedConfig(path=str(path)).build(DAY)  # without start_date: the run date
    frame = feed.day(DAY)
    raw = [line.split("\t") for line in path.read_text().splitlines()]
    assert list(frame.columns) == feed.schema().columns and len(frame) == 300
    assert frame["label"].tolist() == [int(r[0]) for r in raw]
    expected_dense = [float(r[1]) if r[1] else 0.0 for r in raw]  # missing count -> 0
    assert frame["dense_0"].tolist() == expected_dense
    expected_ids = [r[14] if r[14] else MISSING_ID for r in raw]  # missing id -> the token
    assert frame["cat_0"].tolist() == expected_ids
    assert feed.schema().dense_transform == "log1p"
    batch = batch_from_frame(frame, feed.schema())
    assert batch.dense.min() >= 0 and len(batch) == 300


def test_terabyte_day_files_get_their_dates_and_gzip_reads(tmp_path: Path) -> None:
    for n in (0, 1, 2):
        write_criteo(tmp_path / f"day_{n}.gz", 50 + n, seed=n)
    feed = CriteoFeed(path=str(tmp_path / "day_*.gz"), start_date=DAY)
    assert feed.available_days() == [date(2024, 3, 1), date(2024, 3, 2), date(2024, 3, 3)]
    assert len(feed.day(date(2024, 3, 3))) == 52
    with pytest.raises(FeedError, match="no file .* holds day 2024-03-09"):
        feed.day(date(2024, 3, 9))


def test_rows_per_day_caps_the_day_across_chunks(tmp_path: Path) -> None:
    path = write_criteo(tmp_path / "train.txt", 500)
    whole = CriteoFeed(path=path, date=DAY).day(DAY)
    capped = CriteoFeed(path=path, date=DAY, rows_per_day=123, chunk_bytes=4_000).day(DAY)
    assert len(capped) == 123
    assert capped.equals(whole.iloc[:123])
    chunks = list(CriteoFeed(path=path, date=DAY, chunk_bytes=8_000).chunks(DAY))
    assert len(chunks) > 5 and sum(map(len, chunks)) == 500


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("2" + "\t" * 39, r"labels \[2\.0\]"),
        ("1\t5\tx" + "\t" * 37, "cannot read"),
        ("1\t2\t3", "Expected 40 columns.*40 tab-separated"),
    ],
)
def test_a_malformed_file_names_the_file_and_the_format(
    tmp_path: Path, line: str, match: str
) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(line + "\n")
    with pytest.raises(FeedError, match=match) as caught:
        CriteoFeed(path=path, date=DAY).day(DAY)
    assert "bad.txt" in str(caught.value)


def test_missing_files_and_ambiguous_dates_are_feed_errors(tmp_path: Path) -> None:
    with pytest.raises(FeedError, match="matches no file"):
        CriteoFeed(path=str(tmp_path / "day_*.gz"), date=DAY)
    path = write_criteo(tmp_path / "train.txt", 5)
    with pytest.raises(FeedError, match="exactly one of date="):
        CriteoFeed(path=path)
    with pytest.raises(FeedError, match="not named day_N"):
        CriteoFeed(path=path, start_date=DAY)


def _peak_bytes_streaming(path: Path, chunk_bytes: int) -> int:
    """Peak Python/numpy bytes (tracemalloc) plus the most arrow bytes live at any chunk.

    Arrow buffers live in arrow's own pool, which tracemalloc does not see.
    """
    gc.collect()
    arrow_peak = 0
    tracemalloc.start()
    for chunk in read_chunks(path, chunk_bytes=chunk_bytes):
        arrow_peak = max(arrow_peak, pa.total_allocated_bytes())
        del chunk  # a consumer writing chunks out keeps none of them
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak + arrow_peak


def test_peak_memory_of_a_read_does_not_grow_with_the_file(tmp_path: Path) -> None:
    small = write_criteo(tmp_path / "small.txt", 5_000, seed=1)
    large = write_criteo(tmp_path / "large.txt", 20_000, seed=2)
    _peak_bytes_streaming(small, 20_000)  # warm pandas' caches before measuring
    peak_small = _peak_bytes_streaming(small, 20_000)
    peak_large = _peak_bytes_streaming(large, 20_000)
    print(f"peak bytes: 5k rows {peak_small}, 20k rows {peak_large}")
    # 4x the rows (both files beyond arrow's ~40-block read-ahead), about the same peak.
    assert peak_large < 1.5 * peak_small, (peak_small, peak_large)
    capped = CriteoFeed(path=large, date=DAY, rows_per_day=1_000, chunk_bytes=4_0000)
    gc.collect()
    tracemalloc.start()
    frame = capped.day(DAY)
    peak_capped = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(frame) == 1_000 and peak_capped < 3 * peak_small, (peak_small, peak_capped)
