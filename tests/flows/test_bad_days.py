"""A bad run date ends in a clear reason, a quarantined day, an unchanged champion and no
lost data; each bad input goes through the real flow."""

import hashlib
import json
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from quantrec.flows.daily_lifecycle import daily_lifecycle
from quantrec.tasks.data import readmit_day
from quantrec.tasks.settings import quantrec_home
from quantrec.tasks.tracking import champion_version


def _set(column, value):
    def corrupt(frame):
        frame = frame.copy()
        frame[column] = (
            frame[column].astype("float64") if isinstance(value, float) else frame[column]
        )
        frame.loc[frame.index[:5], column] = value
        return frame

    return corrupt


# Every check's message is tested on its own in tests/data_checks/test_bad_days.py; here a
# contract failure, a reference-window failure and an unreadable file go through the flow,
# since quarantine and the unchanged champion follow the same path for every check.
BAD_INPUTS = {
    "missing column": lambda f: f.drop(columns=["dense_3"]),
    "NaN in a dense column": _set("dense_1", float("nan")),
    "label other than 0/1": _set("label", 2),
    "id flood": lambda f: f.assign(cat_5=np.arange(len(f), dtype=np.int64) * 7919 + 10**9),
    "duplicated rows": lambda f: pd.concat([f.iloc[: len(f) // 2]] * 2, ignore_index=True),
}


def _write_raw(path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.mark.parametrize("offset,bad", list(enumerate([*BAD_INPUTS, "truncated Parquet file"])))
def test_a_bad_day_is_quarantined_and_the_champion_stays(backfilled, client, offset, bad, tmp_path):
    home, config, records = backfilled
    name = config.registry.model_name
    # Three days apart, so no bad day falls in another's training window.
    run_date = date(2026, 3, 10) + timedelta(days=3 * offset)
    day_lake = quantrec_home().day_lake()
    good = config.feed.build(run_date).day(run_date)
    if bad in BAD_INPUTS:
        day_lake.write(run_date, BAD_INPUTS[bad](good))
    else:
        good.to_parquet(tmp_path / "whole.parquet")
        whole = (tmp_path / "whole.parquet").read_bytes()
        _write_raw(day_lake.path(run_date), whole[: len(whole) // 2])
    written = hashlib.sha256(day_lake.path(run_date).read_bytes()).hexdigest()
    before = champion_version(client, name)

    record = daily_lifecycle(run_date, config).to_record()

    assert record["decision"] == "rejected" and record["registered_versions"] == {}
    assert champion_version(client, name) == before
    assert str(day_lake.path(run_date)) in record["reason"]  # names the file
    failed = [c for c in record["checks"]["run_date"] if not c["passed"]]
    assert failed and failed[0]["name"] == "data_valid"
    quarantined = day_lake.quarantine_path(run_date)
    assert record["quarantined"] and quarantined.is_file() and not day_lake.exists(run_date)
    assert hashlib.sha256(quarantined.read_bytes()).hexdigest() == written  # nothing lost
    reason = json.loads((quarantined.parent / "reason.json").read_text())
    assert reason["reason"]["passed"] is False


def test_rerunning_a_quarantined_day_says_why_and_how_to_readmit(backfilled, client):
    _, config, _ = backfilled
    run_date = date(2026, 3, 10)  # quarantined by the first bad-input case above
    if not quantrec_home().day_lake().is_quarantined(run_date):
        pytest.skip("runs after the bad-input cases")
    record = daily_lifecycle(run_date, config).to_record()
    assert record["decision"] == "rejected"
    assert (
        "quarantined" in record["reason"]
        and "quantrec readmit --date 2026-03-10" in record["reason"]
    )
    assert record["checks"]["run_date"][0]["name"] == "data_available"


@pytest.mark.parametrize("bad", ["label other than 0/1", "no clicks"])
def test_a_bad_training_window_day_stops_the_run_and_is_quarantined(backfilled, client, bad):
    """The run date is good; a day it would train on is not. The run names that day, its
    file and the check; that day is quarantined, the run date is not, the champion stays."""
    home, config, _ = backfilled
    name = config.registry.model_name
    run_date = date(2026, 5, 10) + timedelta(days=5 * (bad == "no clicks"))
    window_day = run_date - timedelta(days=1)
    day_lake = quantrec_home().day_lake()
    good = config.feed.build(window_day).day(window_day)
    frame = _set("label", 2)(good) if bad != "no clicks" else good.assign(label=0)
    day_lake.write(window_day, frame)
    written = hashlib.sha256(day_lake.path(window_day).read_bytes()).hexdigest()
    before = champion_version(client, name)

    record = daily_lifecycle(run_date, config).to_record()

    assert record["decision"] == "rejected" and record["registered_versions"] == {}
    assert champion_version(client, name) == before
    reason = record["reason"]
    assert (
        f"training window day {window_day}" in reason and str(day_lake.path(window_day)) in reason
    )
    assert ("label_in_set" if bad != "no clicks" else "label_both_classes") in reason, reason
    assert day_lake.is_quarantined(window_day) and day_lake.exists(run_date)
    kept = day_lake.quarantine_path(window_day)
    assert hashlib.sha256(kept.read_bytes()).hexdigest() == written  # nothing lost


def test_a_readmitted_window_day_is_read_again_and_the_rerun_trains(home_copy):
    """After a bad window day, `quantrec readmit` re-reads it from the feed; the rerun of
    the run date has another identity (the day's digest) and goes past validation."""
    _, config, _, client = home_copy
    run_date, window_day = date(2026, 6, 10), date(2026, 6, 9)
    day_lake = quantrec_home().day_lake()
    good = config.feed.build(window_day).day(window_day)
    day_lake.write(window_day, _set("label", 2)(good))
    first = daily_lifecycle(run_date, config).to_record()
    assert first["decision"] == "rejected" and day_lake.is_quarantined(window_day)

    path, said = readmit_day(window_day, config.feed)
    assert path is not None, said
    record = daily_lifecycle(run_date, config).to_record()

    assert record["training_mode"] in {"full", "continual"}  # trained: validation passed
    assert "training window day" not in record["reason"]
    keys = [
        client.get_run(r["mlflow_run_id"]).data.tags["quantrec.run_key"] for r in (first, record)
    ]
    assert keys[0] != keys[1]
