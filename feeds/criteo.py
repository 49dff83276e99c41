"""Criteo click logs (Kaggle ``train.txt`` or Terabyte ``day_N[.gz]``) as day partitions.

Format: one impression per line, tab-separated: the label (0/1), 13 integer count features,
26 categorical features as 8-digit hexadecimal strings; an empty field is a missing value.

Mapping to the data contract (``criteo_schema``, the synthetic feed's too, so models compare):

- ``label``: int8; ``dense_0`` .. ``dense_12``: float32, a missing count is 0 (the DLRM
  reference does the same; log1p then maps it to 0); the schema's ``dense_transform`` is
  ``log1p`` (``log1p(max(x, 0))``: the reference also clamps the -1 / -2 of ``dense_1``);
- ``cat_0`` .. ``cat_25``: the hexadecimal strings as they are, a missing value becomes the
  fixed token ``MISSING_ID`` so all missing values share one embedding row;
  ``batch_from_frame`` hashes the strings into each table.

Which day a file holds: ``date=D`` assigns every matched file to D (``--date D``);
``start_date=S`` maps Terabyte ``day_N`` files to S + N days. ``CriteoFeedConfig`` (``[feed]
kind = "criteo"``) passes ``start_date`` when it is set, else the run date as ``date``.

Files are streamed in blocks of ``chunk_bytes`` (pyarrow's streaming CSV reader; it reads
about 40 blocks ahead, ~40 MiB at the default 1 MiB), so reading holds a bounded number of
blocks, and a day keeps at most ``rows_per_day`` rows: memory is bounded by ``chunk_bytes``
and ``rows_per_day`` (the cap of rows kept per
day), never by the file's size.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from pydantic import Field

from quantrec.data_checks.schema import FeatureSchema
from quantrec.feeds.base import BaseFeedConfig, FeedError, check_day, require_rows
from quantrec.feeds.criteo_schema import (
    CATEGORICAL,
    DENSE,
    LABEL,
    N_CATEGORICAL,
    N_DENSE,
    criteo_schema,
)

COLUMNS = (LABEL, *DENSE, *CATEGORICAL)
MISSING_ID = "missing"  # not 8 hex digits, so it never collides with a real value
CHUNK_BYTES = 1 << 20  # ~5k Kaggle lines per block; arrow reads ~40 blocks ahead
_DAY_FILE = re.compile(r"day_(\d+)")


class CriteoFeed:
    """Day partitions read from Criteo TSV files.

    Args:
        path: a file or a glob of files (``.gz`` and other pandas compressions work).
        date: the day every matched file holds (Kaggle files, or one Terabyte day).
        start_date: alternatively, the day of ``day_0``; ``day_N`` maps to start + N days.
        rows_per_day: keep at most this many rows of a day (the first ones); None keeps all.
        chunk_bytes: bytes of text parsed at a time; bounds the reader's memory.
        min_rows: days with fewer rows raise ``SmallDayError``.
    """

    def __init__(
        self,
        *,
        path: Path | str,
        date: date | None = None,
        start_date: date | None = None,
        rows_per_day: int | None = None,
        chunk_bytes: int = CHUNK_BYTES,
        min_rows: int = 1,
    ) -> None:
        for name, value in (
            ("chunk_bytes", chunk_bytes),
            ("min_rows", min_rows),
            ("rows_per_day", rows_per_day or 1),
        ):
            if not isinstance(value, int) or value < 1:
                raise FeedError(f"criteo feed: {name} must be an integer >= 1; got {value!r}")
        self.path = str(path)
        self.rows_per_day, self.chunk_bytes, self.min_rows = rows_per_day, chunk_bytes, min_rows
        self._files = _assign_days(_expand(self.path), date, start_date)

    def __repr__(self) -> str:
        return f"CriteoFeed(path={self.path!r}, days={len(self.available_days())})"

    def schema(self) -> FeatureSchema:
        return criteo_schema()

    def available_days(self) -> list[date]:
        return sorted(self._files)

    def files(self, run_date: date) -> list[Path]:
        """The files that hold ``run_date``, in name order."""
        check_day(run_date, feed="criteo")
        if run_date not in self._files:
            raise FeedError(
                f"criteo feed: no file of {self.path!r} holds day {run_date}; it holds "
                f"{[d.isoformat() for d in self.available_days()]}. Pass --date {run_date} "
                "with that day's file, or start_date for Terabyte day_N files"
            )
        return self._files[run_date]

    def chunks(self, run_date: date) -> Iterator[pd.DataFrame]:
        """The day in frames of about ``chunk_bytes`` of text, ``rows_per_day`` rows in all."""
        left = self.rows_per_day
        for path in self.files(run_date):
            for chunk in read_chunks(path, chunk_bytes=self.chunk_bytes):
                if left is not None:
                    chunk, left = chunk.iloc[:left], left - min(left, len(chunk))
                yield chunk
                if left == 0:
                    return

    def day(self, run_date: date) -> pd.DataFrame:
        """The partition of ``run_date`` in ``schema().columns`` order."""
        parts = list(self.chunks(run_date))
        frame = pd.concat(parts, ignore_index=True) if parts else _empty()
        require_rows(frame, run_date, min_rows=self.min_rows, source=self.path)
        return frame


class CriteoFeedConfig(BaseFeedConfig):
    """``[feed] kind = "criteo"``: settings of ``CriteoFeed``."""

    kind: Literal["criteo"] = "criteo"
    path: str = Field(description="A Criteo day file or a glob such as 'data/day_*.gz'.")
    start_date: date | None = Field(
        None,
        description="The date of Terabyte file day_0 (day_N is N days later); unset: every "
        "matched file holds the run date.",
    )
    rows_per_day: int | None = Field(
        100_000, gt=0, description="A row cap for Criteo days (the first rows of the day)."
    )
    chunk_bytes: int = Field(
        CHUNK_BYTES,
        ge=1,
        description="Bytes of text parsed at a time; bounds the reader's "
        "memory (it reads about 40 blocks ahead).",
    )
    min_rows: int = Field(1, ge=1, description="Days with fewer rows are skipped.")

    def build(self, run_date: date) -> CriteoFeed:
        """The feed; without ``start_date`` every matched file holds ``run_date``."""
        day = run_date if self.start_date is None else None
        return CriteoFeed(**self.options(), date=day)


def read_chunks(path: Path, *, chunk_bytes: int = CHUNK_BYTES) -> Iterator[pd.DataFrame]:
    """Contract frames of one Criteo file, about ``chunk_bytes`` of text at a time.

    pyarrow's streaming reader parses block by block with a bounded read-ahead and, unlike
    pandas, rejects a line with too few fields.

    Raises:
        FeedError: naming the file, when it is missing, has the wrong number of fields,
            or holds a non-0/1 label or a non-numeric count.
    """
    types = {LABEL: pa.float64(), **dict.fromkeys(DENSE, pa.float64())}
    types.update(dict.fromkeys(CATEGORICAL, pa.string()))
    try:
        reader = pacsv.open_csv(
            pa.input_stream(str(path), compression="detect"),
            read_options=pacsv.ReadOptions(
                use_threads=False, block_size=chunk_bytes, column_names=list(COLUMNS)
            ),
            parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False),
            convert_options=pacsv.ConvertOptions(
                column_types=types, null_values=[""], strings_can_be_null=True
            ),
        )
        for batch in reader:
            yield _convert(batch, path)
    except (OSError, pa.ArrowException) as err:
        raise FeedError(
            f"criteo feed: cannot read {path}: {err}. Each line needs 40 tab-separated "
            "fields: a 0/1 label, 13 integer counts, 26 hexadecimal ids (empty = missing)"
        ) from err


def _convert(batch: pa.RecordBatch, path: Path | str) -> pd.DataFrame:
    """A contract frame from one parsed block: missing counts 0, missing ids the token."""
    label = batch.column(LABEL).to_numpy(zero_copy_only=False)
    if np.isnan(label).any() or not np.isin(label, (0.0, 1.0)).all():
        bad = pd.unique(label[~np.isin(label, (0.0, 1.0))])[:5].tolist()
        raise FeedError(
            f"criteo feed: {path} holds labels {bad}; the first field of every line must "
            "be 0 or 1: is this a test file without labels?"
        )
    columns = [pa.array(label.astype(np.int8))]
    columns += [pc.fill_null(batch.column(c), 0.0).cast(pa.float32()) for c in DENSE]
    columns += [pc.fill_null(batch.column(c), MISSING_ID) for c in CATEGORICAL]
    return pa.RecordBatch.from_arrays(columns, names=list(COLUMNS)).to_pandas()


def _empty() -> pd.DataFrame:
    types = [pa.int8(), *[pa.float32()] * N_DENSE, *[pa.string()] * N_CATEGORICAL]
    return pa.schema(list(zip(COLUMNS, types))).empty_table().to_pandas()


def _expand(path: str) -> list[Path]:
    matched = sorted(Path(p) for p in glob.glob(path)) if glob.has_magic(path) else [Path(path)]
    files = [p for p in matched if p.is_file()]
    if not files:
        raise FeedError(
            f"criteo feed: {path!r} matches no file; pass a Criteo TSV file or a glob such "
            "as 'data/day_*.gz'"
        )
    return files


def _assign_days(files: list[Path], day: date | None, start: date | None) -> dict[date, list[Path]]:
    if (day is None) == (start is None):
        raise FeedError(
            "criteo feed: pass exactly one of date= (the day every file holds, --date D) or "
            f"start_date= (the day of Terabyte day_0); got date={day}, start_date={start}"
        )
    if day is not None:
        return {check_day(day, feed="criteo"): files}
    by_day: dict[date, list[Path]] = {}
    for path in files:
        found = _DAY_FILE.search(path.name)
        if not found:
            raise FeedError(
                f"criteo feed: {path} is not named day_N, so start_date cannot date it; "
                "rename it or pass date= for the day it holds"
            )
        day_n = check_day(start, feed="criteo") + timedelta(days=int(found[1]))
        by_day.setdefault(day_n, []).append(path)
    return by_day
