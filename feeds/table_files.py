"""The files of a table feed: which ones a spec may read, and reading one of them.

A spec's ``files`` entries are globs relative to the spec's folder; each must match a file,
and none may reach outside the folder (an absolute path, ``..``, a symlink out) unless the
spec sets ``allow_absolute_paths = true``. Errors name the file and the column, and quote
only cells of the spec's columns (the text found in a dense column, the times of rows dated
in the future), never a file's other contents: a spec pointed at a file that is not a table
must not print it.
"""

from __future__ import annotations

import glob
import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from quantrec.feeds.base import FeedError


def spec_files(
    entries: tuple[str, ...],
    spec: Path,
    *,
    path: Path | str | None = None,
    allow_absolute: bool = False,
) -> list[Path]:
    """The files to read, sorted: ``path`` (the command line's, relative to the cwd) if
    given, else every entry of the spec's ``files``, each of which must match a file."""
    if path:
        found = sorted(Path(p) for p in glob.glob(str(path)))
        if not found:
            raise FeedError(f"table feed: --path {str(path)!r} matches no file")
        return found
    folder = spec.parent
    files: set[Path] = set()
    for entry in entries:
        if os.path.isabs(entry) and not allow_absolute:
            raise FeedError(
                f"table feed: spec {spec}: files entry {entry!r} is an absolute path; give "
                "it relative to the spec's folder, or set allow_absolute_paths = true in the "
                "spec to read outside it"
            )
        matched = sorted(Path(p) for p in glob.glob(str(folder / entry)))
        if not matched:
            raise FeedError(
                f"table feed: spec {spec}: files entry {entry!r} ({folder / entry}) is "
                "missing: it must match a file, its pattern(s) match no file; fix or remove "
                "the entry (relative to the spec's folder), or pass --path"
            )
        if not allow_absolute:
            _confine(matched, folder, entry=entry, spec=spec)
        files.update(matched)
    return sorted(files)


def _confine(files: list[Path], folder: Path, *, entry: str, spec: Path) -> None:
    """``FeedError`` if a file (symlinks and ``..`` resolved) lies outside ``folder``."""
    root = folder.resolve()
    outside = [f for f in files if not f.resolve().is_relative_to(root)]
    if outside:
        raise FeedError(
            f"table feed: spec {spec}: files entry {entry!r} reaches outside the spec's "
            f"folder {folder} ({len(outside)} file(s), e.g. {outside[0]}); move the data "
            "beside the spec, or set allow_absolute_paths = true in the spec"
        )


def dense_numbers(values: pd.Series, *, source: str, column: str) -> pd.Series:
    """A dense column as numbers; ``FeedError`` quoting the cells that hold text, which
    coercion would turn into NaN (and ``dense_fill`` into a number) without a word."""
    numbers = pd.to_numeric(values, errors="coerce")
    text = numbers.isna() & values.notna()
    if text.any():
        bad = values[text]
        raise FeedError(
            f"table feed: {source}: dense column {column!r} holds text in {int(text.sum())} "
            f"row(s), e.g. {bad.drop_duplicates().head(3).tolist()} (first in data row "
            f"{int(bad.index[0])}, counting from 0); numbers only: fix the export (a "
            "decimal comma, a unit, a placeholder word), or leave the cell empty for a "
            "missing value"
        )
    return numbers


def refuse_future(
    rows: pd.DataFrame, frames: list[pd.DataFrame], files: list[Path], *, column: str
) -> None:
    """``FeedError`` naming the file and the times of rows dated after now (UTC)."""
    now = int(datetime.now(UTC).timestamp())
    future = rows.index[rows[column].to_numpy() > now]
    if len(future) == 0:
        return
    first, starts = int(future.min()), np.cumsum([0, *map(len, frames)])
    where = files[int(np.searchsorted(starts, first, side="right")) - 1]
    examples = [
        pd.Timestamp(t, unit="s", tz="UTC").isoformat()
        for t in rows.loc[future, column].head(3).tolist()
    ]
    raise FeedError(
        f"table feed: {where}: {len(future)} row(s) dated after now "
        f"({datetime.fromtimestamp(now, UTC).isoformat()}) in column {column!r}, e.g. "
        f"{examples}; fix the upstream clock or timestamp.unit, or drop those rows"
    )


def read_file(path: Path, columns: list[str], *, dense: tuple[str, ...] = ()) -> pd.DataFrame:
    """The spec's columns of one CSV or Parquet file; ``FeedError`` names what is missing
    and the dense cells holding text (never other contents of the file)."""
    try:
        if path.suffix in (".parquet", ".pq"):
            frame = pq.read_table(path).to_pandas()
        else:
            frame = pd.read_csv(path)
    except (OSError, ValueError, pa.ArrowException) as err:
        raise FeedError(f"table feed: cannot read {path}: {err}") from err
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise FeedError(
            f"table feed: {path} lacks column(s) {missing} named in the spec (it has "
            f"{len(frame.columns)} column(s)); check its header line, then fix the spec or "
            "re-export the file"
        )
    for name in dense:
        dense_numbers(frame[name], source=str(path), column=name)
    return frame[columns]
