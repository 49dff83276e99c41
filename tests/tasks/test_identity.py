"""Run identity and the run-date lock."""

import json
import threading
import time
from datetime import date

import pytest

from quantrec.tasks.settings import (
    RunInProgressError,
    code_version,
    config_hash,
    run_date_lock,
    run_key,
)

DAY = date(2026, 3, 1)
DIGESTS = {date(2026, 2, 28): "aaa", DAY: "bbb"}


def test_run_key_changes_with_each_part_of_the_identity():
    config = json.dumps({"training": {"epochs": 1}, "feed": {"seed": 0}})
    base = run_key(run_date=DAY, digests=DIGESTS, config_json=config, code="1+x")
    assert base == run_key(
        run_date=DAY,
        digests=dict(reversed(DIGESTS.items())),
        config_json=json.dumps({"feed": {"seed": 0}, "training": {"epochs": 1}}),
        code="1+x",
    )
    others = [
        run_key(run_date=date(2026, 3, 2), digests=DIGESTS, config_json=config, code="1+x"),
        run_key(run_date=DAY, digests={**DIGESTS, DAY: "ccc"}, config_json=config, code="1+x"),
        run_key(run_date=DAY, digests=DIGESTS, config_json=config.replace("1", "2"), code="1+x"),
        run_key(run_date=DAY, digests=DIGESTS, config_json=config, code="1+y"),
    ]
    assert base not in others and len(set(others)) == 4


def test_config_hash_ignores_key_order_only():
    assert config_hash('{"a": 1, "b": 2}') == config_hash('{"b": 2, "a": 1}')
    assert config_hash('{"a": 1}') != config_hash('{"a": 2}')


def test_code_version_names_the_package_and_the_sources():
    version = code_version()
    assert version.startswith("0.1.0+") and len(version.split("+")[1]) == 12


def test_a_held_lock_refuses_a_second_holder_with_the_holder_named():
    with run_date_lock("m", DAY) as path:
        with pytest.raises(RunInProgressError, match=r"2026-03-01.*pid \d+"):
            with run_date_lock("m", DAY):
                pass
        assert json.loads(path.read_text())["pid"] > 0
        with run_date_lock("m", date(2026, 3, 2)):  # another date is free
            pass
    with run_date_lock("m", DAY):  # released on exit
        pass


def test_a_waiting_holder_gets_the_lock_when_it_is_released():
    got = []

    def second():
        with run_date_lock("m", DAY, wait=True, poll_s=0.05):
            got.append(time.monotonic())

    with run_date_lock("m", DAY):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.3)
        assert not got
        released = time.monotonic()
    thread.join(timeout=10)
    assert got and got[0] >= released
