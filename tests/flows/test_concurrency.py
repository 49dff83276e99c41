"""Two runs of one model and date never overlap, across machines too: with a Prefect server
each holds the single slot of the global concurrency limit of (model, date), which a run
on another home (another machine: no file lock in common) cannot take."""

from __future__ import annotations

from datetime import date

import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL

from quantrec.tasks.concurrency import limit_name, run_slot
from quantrec.tasks.settings import RunInProgressError

DAY = date(2026, 3, 9)


def _active_slots(name: str) -> int:
    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(name).active_slots


def test_a_held_slot_refuses_a_run_from_another_home_and_frees_on_exit(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", PREFECT_API_URL.value())  # the harness's server
    name = limit_name("ctr", DAY)
    with run_slot("ctr", DAY):
        assert _active_slots(name) == 1
        monkeypatch.setenv("QUANTREC_HOME", str(tmp_path / "another-machine"))
        with pytest.raises(RunInProgressError, match=f"concurrency limit '{name}' is held"):
            with run_slot("ctr", DAY):
                pytest.fail("entered a slot another run holds")
        with run_slot("ctr", date(2026, 3, 10)):  # another date runs beside it
            assert _active_slots(limit_name("ctr", date(2026, 3, 10))) == 1
    assert _active_slots(name) == 0
    with run_slot("ctr", DAY):  # freed: the next run enters
        assert _active_slots(name) == 1


def test_without_a_server_only_the_file_lock_is_held(tmp_path, monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with run_slot("solo", DAY):
        with pytest.raises(RunInProgressError, match="lock"):
            with run_slot("solo", DAY):
                pytest.fail("entered a date this home is running")
    with get_client(sync_client=True) as client:
        names = {limit.name for limit in client.read_global_concurrency_limits()}
    assert limit_name("solo", DAY) not in names
