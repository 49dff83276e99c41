"""The day lake: write-once partitions, atomic writes, clear errors, quarantine round trip."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from quantrec.feeds import lake as lake_module
from quantrec.feeds.lake import DayLake, LakeError

DAY = date(2024, 1, 15)


def _frame(marker: int, rows: int = 50) -> pd.DataFrame:
    rng = np.random.default_rng(marker)
    return pd.DataFrame(
        {
            "label": (rng.random(rows) < 0.3).astype(np.int8),
            "dense_0": rng.exponential(3.0, rows).astype(np.float32),
            "cat_0": rng.integers(0, 100, rows, dtype=np.int64),
            "marker": np.full(rows, marker, dtype=np.int64),
        }
    )


@pytest.fixture
def lake(tmp_path: Path) -> DayLake:
    return DayLake(tmp_path / "lake")


def test_write_then_read_round_trips_values_and_dtypes(lake: DayLake) -> None:
    frame = _frame(1)
    path = lake.write(DAY, frame)
    assert path == lake.root / "day=2024-01-15" / "part-0.parquet" == lake.path(DAY)
    assert lake.exists(DAY) and lake.days() == [DAY]
    pd.testing.assert_frame_equal(lake.read(DAY), frame)


def test_writing_the_same_content_again_is_a_no_op(lake: DayLake) -> None:
    path = lake.write(DAY, _frame(1))
    before = (path.stat().st_mtime_ns, lake.digest(DAY))
    assert lake.write(DAY, _frame(1)) == path
    assert (path.stat().st_mtime_ns, lake.digest(DAY)) == before


def test_writing_other_content_is_refused_and_keeps_the_raw_data(lake: DayLake) -> None:
    lake.write(DAY, _frame(1))
    with pytest.raises(LakeError, match="refusing to overwrite .*day=2024-01-15"):
        lake.write(DAY, _frame(2))
    assert (lake.read(DAY).marker == 1).all()


def test_a_failed_write_leaves_neither_partition_nor_temp_file(
    lake: DayLake, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(lake_module.os, "link", crash)
    with pytest.raises(OSError, match="disk full"):
        lake.write(DAY, _frame(1))
    assert not lake.exists(DAY)
    assert list(lake.path(DAY).parent.iterdir()) == []


def test_a_racing_writer_with_other_content_loses(
    lake: DayLake, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_link = os.link

    def rival_first(source: str, target: str) -> None:
        Path(target).write_bytes(lake_module._parquet_bytes(_frame(9)))  # the rival's file
        real_link(source, target)

    monkeypatch.setattr(lake_module.os, "link", rival_first)
    with pytest.raises(LakeError, match="refusing to overwrite"):
        lake.write(DAY, _frame(1))
    assert (lake.read(DAY).marker == 9).all()


def test_a_missing_day_names_the_file(lake: DayLake) -> None:
    with pytest.raises(LakeError, match=r"day=2024-01-15.part-0\.parquet does not exist"):
        lake.read(DAY)


def test_a_corrupt_partition_names_the_file(lake: DayLake) -> None:
    path = lake.write(DAY, _frame(1))
    path.write_bytes(b"not parquet at all")
    with pytest.raises(LakeError, match=r"cannot read partition .*part-0\.parquet.*quarantine"):
        lake.read(DAY)


def test_digest_is_the_sha256_of_the_file(lake: DayLake) -> None:
    path = lake.write(DAY, _frame(1))
    assert lake.digest(DAY) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_read_days_concatenates_in_day_order(lake: DayLake) -> None:
    days = [DAY + timedelta(days=k) for k in (2, 0, 1)]
    for marker, day in enumerate(days):
        lake.write(day, _frame(marker))
    frame = lake.read_days(days)
    assert frame.marker.drop_duplicates().tolist() == [1, 2, 0]  # oldest day first
    assert frame.index.equals(pd.RangeIndex(len(frame)))
    assert lake.days() == sorted(days)


def test_quarantine_moves_the_day_aside_with_its_reason(lake: DayLake) -> None:
    lake.write(DAY, _frame(1))
    folder = lake.quarantine(DAY, {"check": "label_in_set", "observed": 2})
    assert folder == lake.root / "_quarantine" / "day=2024-01-15"
    assert (folder / "part-0.parquet").is_file()
    record = json.loads((folder / "reason.json").read_text())
    assert record["reason"] == {"check": "label_in_set", "observed": 2}
    assert not lake.exists(DAY) and lake.days() == [] and lake.quarantined_days() == [DAY]
    with pytest.raises(LakeError, match=r"quarantined .*label_in_set.*readmit"):
        lake.read(DAY)


def test_readmit_brings_the_same_bytes_back(lake: DayLake) -> None:
    lake.write(DAY, _frame(1))
    digest = lake.digest(DAY)
    lake.quarantine(DAY, {"why": "suspicious"})
    assert lake.readmit(DAY) == lake.path(DAY)
    assert lake.digest(DAY) == digest and lake.quarantined_days() == []
    kept = list(lake.path(DAY).parent.glob("reason.readmitted-*.json"))
    assert len(kept) == 1  # the audit trail survives


def test_a_quarantined_day_can_be_written_afresh_but_not_readmitted_over(lake: DayLake) -> None:
    lake.write(DAY, _frame(1))
    lake.quarantine(DAY, {"why": "bad labels"})
    lake.write(DAY, _frame(2))  # the re-ingested copy; the bad one stays in quarantine
    assert (lake.read(DAY).marker == 2).all()
    with pytest.raises(LakeError, match="written again"):
        lake.readmit(DAY)


def test_quarantining_a_missing_day_is_refused(lake: DayLake) -> None:
    with pytest.raises(LakeError, match="does not exist"):
        lake.quarantine(DAY, {"why": "x"})


COLUMNS = ["label", "dense_0", "cat_0", "marker"]


def test_bind_records_the_feed_and_accepts_it_again(lake: DayLake) -> None:
    lake.bind("table", COLUMNS)
    record = json.loads((lake.root / lake_module.FEED_FILE).read_text())
    assert record == {"feed": "table", "columns": COLUMNS}
    lake.bind("table", COLUMNS)  # the same feed: no error
    assert lake.days() == []  # the record is not a day


def test_a_lake_refuses_another_feed_and_keeps_its_days(lake: DayLake) -> None:
    lake.bind("table", COLUMNS)
    path = lake.write(DAY, _frame(1))
    before = path.read_bytes()
    with pytest.raises(LakeError) as err:
        lake.bind("synthetic", COLUMNS)
    message = str(err.value)
    assert str(lake.root) in message and "the table feed's days" in message
    assert "not the synthetic feed's" in message and "--feed table" in message
    with pytest.raises(LakeError, match=r"other columns.*new here \['price'\], missing here"):
        lake.bind("table", [*COLUMNS[:-1], "price"])
    assert path.read_bytes() == before and lake.days() == [DAY]


def test_a_lake_written_before_the_record_is_judged_by_its_columns(lake: DayLake) -> None:
    lake.write(DAY, _frame(1))
    with pytest.raises(LakeError, match=r"holds the unrecorded feed's days.*the feed that wrote"):
        lake.bind("synthetic", ["label", "dense_0", "cat_0"])
    assert not (lake.root / lake_module.FEED_FILE).exists()
    lake.bind("table", COLUMNS)  # its columns: adopted and recorded
    assert json.loads((lake.root / lake_module.FEED_FILE).read_text())["feed"] == "table"


def test_an_unreadable_record_is_named(lake: DayLake) -> None:
    lake.root.mkdir(parents=True)
    (lake.root / lake_module.FEED_FILE).write_text("{not json")
    with pytest.raises(LakeError, match=r"cannot read .*_feed\.json"):
        lake.bind("table", COLUMNS)
