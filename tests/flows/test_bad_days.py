"""A bad run date ends in a clear reason, a quarantined day, an unchanged champion and no
lost data; each bad input goes through the real flow."""

import hashlib
import json
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from quantrec.flows.daily_lifecycle import daily_lifecycle
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
