"""`quantrec readmit` reads the quarantined day again from its source: a fixed source
brings a fresh partition in (the quarantined copy kept), a source that still fails leaves
the day quarantined and says which check failed."""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest

from quantrec.feeds.lake import LakeError
from quantrec.feeds.table import TableFeed
from quantrec.feeds.table_example import write_example
from quantrec.flows.cli import main
from quantrec.tasks.config import QuantrecConfig
from quantrec.tasks.data import readmit_day
from quantrec.tasks.settings import quantrec_home


@pytest.fixture
def quarantined(tmp_path):
    """A table feed whose first day was admitted with a bad value, then quarantined."""
    spec = write_example(tmp_path / "data", days=3, rows_per_day=60)
    feed = QuantrecConfig().with_feed("table", spec=str(spec)).feed
    source = feed.build(TableFeed(spec=spec).available_days()[0])
    day = TableFeed(spec=spec).available_days()[0]
    lake = quantrec_home().day_lake()
    lake.bind(feed.kind, source.schema().partition_columns)
    bad = source.day(day)
    bad.loc[bad.index[:3], "label"] = 2
    lake.write(day, bad)
    lake.quarantine(day, {"passed": False, "why": "label other than 0/1"})
    digest = hashlib.sha256(lake.quarantine_path(day).read_bytes()).hexdigest()
    return spec, feed, day, lake, digest


def test_a_fixed_source_is_read_again_and_the_bad_copy_kept(quarantined):
    spec, feed, day, lake, digest = quarantined

    path, said = readmit_day(day, feed)

    assert path == lake.path(day) and lake.exists(day) and not lake.is_quarantined(day)
    assert "re-admitted" in said and str(path) in said
    assert set(lake.read(day)["label"].unique()) <= {0, 1}  # the fresh read, not the copy
    kept = list((lake.root / "_quarantine" / "replaced").glob(f"day={day}-*/part-0.parquet"))
    assert len(kept) == 1 and hashlib.sha256(kept[0].read_bytes()).hexdigest() == digest
    assert lake.digest(day) != digest  # the run identity changes with the data


def test_a_source_that_still_fails_leaves_the_day_quarantined(quarantined, capsys):
    spec, feed, day, lake, digest = quarantined
    csv = spec.parent / "ratings.csv"
    frame = pd.read_csv(csv)
    frame["price"] = frame["price"].astype(object)
    frame.loc[frame.index[:40], "price"] = ""  # missing dense values on the first day
    frame.to_csv(csv, index=False)

    code = main(["readmit", "--date", str(day), "--feed", "table", "--spec", str(spec)])

    assert code == 3
    err = capsys.readouterr().err
    assert f"day {day} stays quarantined" in err and "price" in err, err
    assert lake.is_quarantined(day) and not lake.exists(day)
    assert hashlib.sha256(lake.quarantine_path(day).read_bytes()).hexdigest() == digest


def test_readmitting_a_day_that_is_not_quarantined_is_refused(quarantined):
    _, feed, day, lake, _ = quarantined
    readmit_day(day, feed)
    with pytest.raises(LakeError, match="holds no quarantined partition"):
        readmit_day(day, feed)
