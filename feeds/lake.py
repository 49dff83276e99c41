"""The data lake: one write-once Parquet partition per day.

Layout under ``root``::

    day=2024-01-15/part-0.parquet           an admitted day
    _quarantine/day=2024-01-16/part-0.parquet
    _quarantine/day=2024-01-16/reason.json  why it was set aside
    _feed.json                              the feed and the columns its days hold
    _validated/2024-01-15.json              the day's digest and the contract it passed
    _quarantine/replaced/day=...-<time>/    a quarantined copy a fresh read replaced

Raw data is never overwritten or deleted: ``write`` refuses different content for a day
that exists, ``quarantine`` moves a day aside with its reason, ``readmit`` moves it back,
``replace_quarantined`` writes a fresh read of the day and keeps the quarantined copy.
A lake holds the days of one feed: ``bind`` records the feed's kind and columns on first use
and refuses a run that reads another feed, or the same feed with other columns, into it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import uuid
from collections.abc import Iterable
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

PART_FILE = "part-0.parquet"
REASON_FILE = "reason.json"
QUARANTINE_DIR = "_quarantine"
FEED_FILE = "_feed.json"
VALIDATED_DIR = "_validated"
REPLACED_DIR = "replaced"
UNRECORDED = "unrecorded"  # a lake written before FEED_FILE existed
_PREFIX = "day="


class LakeError(RuntimeError):
    """A day partition is missing, unreadable, quarantined or would be overwritten."""


def _folder_name(day: date) -> str:
    if not isinstance(day, date) or isinstance(day, datetime):
        raise LakeError(f"a lake day must be a datetime.date; got {day!r}")
    return f"{_PREFIX}{day.isoformat()}"


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    """The partition file for ``frame``: no index, so a read gives a fresh RangeIndex."""
    buffer = io.BytesIO()
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table, buffer)
    return buffer.getvalue()


def _same_content(stored: pd.DataFrame, frame: pd.DataFrame) -> bool:
    frame = frame.reset_index(drop=True)
    if list(stored.columns) != list(frame.columns):
        return False
    try:
        return stored.equals(frame)
    except (TypeError, ValueError):  # bags of ids (list cells) compare ambiguously in pandas
        return _arrow(stored).equals(_arrow(frame))


def _arrow(frame: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(frame, preserve_index=False)


class DayLake:
    """Day partitions of one feed under ``root`` (created on first write)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"DayLake({str(self.root)!r})"

    def path(self, day: date) -> Path:
        """Where the admitted partition of ``day`` lives (whether or not it exists)."""
        return self.root / _folder_name(day) / PART_FILE

    def quarantine_path(self, day: date) -> Path:
        """Where the quarantined partition of ``day`` lives (whether or not it exists)."""
        return self.root / QUARANTINE_DIR / _folder_name(day) / PART_FILE

    def exists(self, day: date) -> bool:
        """Whether ``day`` is admitted (a quarantined day does not count)."""
        return self.path(day).is_file()

    def is_quarantined(self, day: date) -> bool:
        return self.quarantine_path(day).is_file()

    def days(self) -> list[date]:
        """Admitted days, oldest first."""
        return _scan(self.root)

    def quarantined_days(self) -> list[date]:
        """Quarantined days, oldest first."""
        return _scan(self.root / QUARANTINE_DIR)

    def bind(self, feed: str, columns: Iterable[str]) -> None:
        """Record that this lake holds days of ``feed`` with ``columns`` (the schema's
        partition columns, in order), or raise ``LakeError`` if it holds another feed's.

        A lake written before the record existed is judged by its newest day's columns.
        """
        wanted = {"feed": feed, "columns": list(columns)}
        record = self.root / FEED_FILE
        if record.is_file():
            try:
                held = json.loads(record.read_text())
                held = {"feed": held["feed"], "columns": list(held["columns"])}
            except (OSError, ValueError, KeyError, TypeError) as err:
                raise LakeError(
                    f"cannot read {record}, the record of which feed lake {self.root} holds: "
                    f"{err}. Restore it, or delete it to let the next run record its feed"
                ) from err
        else:
            days = self.days()
            if days and (found := _columns(self.path(days[-1]))) != wanted["columns"]:
                held = {"feed": UNRECORDED, "columns": found}
            else:
                self.root.mkdir(parents=True, exist_ok=True)
                record.write_text(json.dumps(wanted, indent=2))
                return
        if held != wanted:
            raise LakeError(_other_feed_message(self.root, held, wanted))

    def write(self, day: date, frame: pd.DataFrame) -> Path:
        """Store ``frame`` as the partition of ``day`` and return its path.

        Write-once: if the day exists with the same content this is a no-op; with other
        content it raises ``LakeError``. The file appears atomically (a temp file is
        hard-linked into place), so readers never see half a partition and two racing
        writers cannot both win.
        """
        target = self.path(day)
        payload = _parquet_bytes(frame)
        if target.is_file():
            self._check_same(day, target, payload, frame)
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f".{PART_FILE}.{uuid.uuid4().hex}.tmp")
        try:
            with open(temp, "wb") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.link(temp, target)  # fails if another writer got there first
        except FileExistsError:
            self._check_same(day, target, payload, frame)
        finally:
            temp.unlink(missing_ok=True)
        return target

    def _check_same(self, day: date, target: Path, payload: bytes, frame: pd.DataFrame) -> None:
        if target.read_bytes() == payload or _same_content(self.read(day), frame):
            return
        raise LakeError(
            f"refusing to overwrite {target}: day {day} already holds different data "
            f"(sha256 {self.digest(day)[:12]}...). Raw data is write-once; quarantine the "
            "day first (DayLake.quarantine) if the stored copy is bad, then write again."
        )

    def read(self, day: date) -> pd.DataFrame:
        """The partition of ``day``; ``LakeError`` naming the file if missing or corrupt."""
        target = self.path(day)
        if not target.is_file():
            if self.is_quarantined(day):
                raise LakeError(self._quarantined_message(day))
            raise LakeError(
                f"no partition for day {day}: {target} does not exist "
                f"(the lake holds {len(self.days())} days). Ingest the day first."
            )
        try:
            return pq.read_table(target).to_pandas()
        except (OSError, pa.ArrowException) as err:
            raise LakeError(
                f"cannot read partition {target} of day {day}: {err}. The file is corrupt "
                "or not Parquet; quarantine the day and re-ingest it from its source."
            ) from err

    def read_days(self, days: Iterable[date]) -> pd.DataFrame:
        """Partitions of ``days`` concatenated oldest first, with a fresh RangeIndex."""
        ordered = sorted(set(days))
        if not ordered:
            raise LakeError(f"read_days needs at least one day; got none (lake {self.root})")
        return pd.concat([self.read(day) for day in ordered], ignore_index=True)

    def digest(self, day: date) -> str:
        """sha256 (hex) of the partition file's bytes: a fingerprint for lineage."""
        target = self.path(day)
        if not target.is_file():
            self.read(day)  # raises the missing / quarantined error
        return hashlib.sha256(target.read_bytes()).hexdigest()

    def quarantine(self, day: date, reason: dict) -> Path:
        """Move ``day`` aside with ``reason`` (JSON-able) beside it; return the new folder.

        Nothing is deleted: ``readmit(day)`` moves the data back.
        """
        source = self.path(day).parent
        target = self.quarantine_path(day).parent
        if not self.exists(day):
            raise LakeError(f"cannot quarantine day {day}: {self.path(day)} does not exist")
        if target.exists():
            raise LakeError(
                f"cannot quarantine day {day}: {target} already holds a quarantined copy; "
                "inspect it and readmit or move it away first"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(source, target)
        record = {"day": day.isoformat(), "quarantined_at": _now(), "reason": reason}
        (target / REASON_FILE).write_text(json.dumps(record, indent=2, default=str))
        return target

    def reason(self, day: date) -> dict:
        """The record written when ``day`` was quarantined."""
        path = self.quarantine_path(day).parent / REASON_FILE
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise LakeError(f"cannot read quarantine reason {path} of day {day}: {err}") from err

    def readmit(self, day: date) -> Path:
        """Move a quarantined ``day`` back into the lake; return its partition path.

        The reason file is kept, renamed with the readmission time, as an audit trail.
        """
        source = self.quarantine_path(day).parent
        if not self.is_quarantined(day):
            raise LakeError(f"cannot readmit day {day}: {source} holds no quarantined partition")
        if self.exists(day):
            raise LakeError(
                f"cannot readmit day {day}: {self.path(day)} was written again since it was "
                "quarantined; compare the two copies and quarantine one of them by hand"
            )
        stamp = _now().replace(":", "")
        reason = source / REASON_FILE
        if reason.is_file():
            reason.rename(source / f"reason.readmitted-{stamp}.json")
        self.root.mkdir(parents=True, exist_ok=True)
        shutil.move(source, self.path(day).parent)
        return self.path(day)

    def replace_quarantined(self, day: date, frame: pd.DataFrame) -> Path:
        """Write ``frame`` (a fresh read of ``day`` from its source) as the day's partition;
        the quarantined copy moves to ``_quarantine/replaced/`` with its reason, so nothing
        is lost. Return the new partition's path."""
        source = self.quarantine_path(day).parent
        if not self.is_quarantined(day):
            raise LakeError(f"cannot readmit day {day}: {source} holds no quarantined partition")
        if self.exists(day):
            raise LakeError(
                f"cannot readmit day {day}: {self.path(day)} was written again since it was "
                "quarantined; compare the two copies and quarantine one of them by hand"
            )
        stamp = _now().replace(":", "")
        kept = self.root / QUARANTINE_DIR / REPLACED_DIR / f"{source.name}-{stamp}"
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(source, kept)
        return self.write(day, frame)

    def mark_validated(self, day: date, contract: str) -> None:
        """Record that the day's current partition passed the checks of ``contract`` (a
        digest of the schema), so a later run need not read it again to know."""
        record = {"digest": self.digest(day), "contract": contract, "at": _now()}
        folder = self.root / VALIDATED_DIR
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{day.isoformat()}.json").write_text(json.dumps(record))

    def is_validated(self, day: date, contract: str) -> bool:
        """Whether the day's partition, as it is now, passed ``contract``'s checks."""
        path = self.root / VALIDATED_DIR / f"{day.isoformat()}.json"
        try:
            record = json.loads(path.read_text())
            return (
                self.exists(day)
                and record.get("contract") == contract
                and record.get("digest") == self.digest(day)
            )
        except (OSError, ValueError, AttributeError):
            return False

    def _quarantined_message(self, day: date) -> str:
        try:
            why = json.dumps(self.reason(day)["reason"], default=str)
        except (LakeError, KeyError, TypeError):
            why = "(reason file unreadable)"
        return (
            f"day {day} is quarantined at {self.quarantine_path(day)}: {why}. "
            f"Fix or confirm the data, then call DayLake({str(self.root)!r}).readmit({day!r})."
        )


def _columns(partition: Path) -> list[str]:
    try:
        return list(pq.read_schema(partition).names)
    except (OSError, pa.ArrowException) as err:
        raise LakeError(f"cannot read the columns of partition {partition}: {err}") from err


def _other_feed_message(root: Path, held: dict, wanted: dict) -> str:
    if held["feed"] != wanted["feed"]:
        what = f"the {held['feed']} feed's days, not the {wanted['feed']} feed's this run reads"
    else:
        what = f"days of the {held['feed']} feed with other columns than this run's"
    added = [c for c in wanted["columns"] if c not in held["columns"]]
    dropped = [c for c in held["columns"] if c not in wanted["columns"]]
    columns = (
        f"; columns new here {added[:5]}, missing here {dropped[:5]}" if added or dropped else ""
    )
    known = held["feed"] != UNRECORDED
    same = f"--feed {held['feed']} and its options" if known else "the feed that wrote them"
    return (
        f"lake {root} holds {what}{columns}. A lake keeps one feed: run with {same}, or "
        "point QUANTREC_HOME at another home for this feed"
    )


def _scan(folder: Path) -> list[date]:
    if not folder.is_dir():
        return []
    found = []
    for child in folder.iterdir():
        if not child.name.startswith(_PREFIX) or not (child / PART_FILE).is_file():
            continue
        try:
            found.append(date.fromisoformat(child.name[len(_PREFIX) :]))
        except ValueError:
            continue  # a stray folder such as day=latest is not a partition
    return sorted(found)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
