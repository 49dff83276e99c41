"""``quantrec train --nproc-per-node 2``: the sharded trainer through torchrun, end to end."""

from __future__ import annotations

import json
import os

import pytest

from quantrec.flows.cli import main


@pytest.fixture(autouse=True)
def restored_environ():
    """The CLI sets defaults in os.environ (Prefect's home, telemetry off): undo them."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.mark.slow
@pytest.mark.parametrize("compression", [None, "0.01"])
def test_two_ranks_train_on_synthetic_days_and_report_the_exchange(compression, capsys) -> None:
    argv = ["train", "--nproc-per-node", "2", "--days", "1", "--rows", "3000", "--json"]
    argv += ["--max-steps", "3", "--batch-size", "256"]
    assert main(argv + (["--compression", compression] if compression else [])) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    exchange = report["exchange"]
    assert report["world_size"] == 2 and report["steps"] == 3
    assert sorted(set(report["owners"])) == [0, 1]
    # An even split: each rank sends half its tables' rows forward and half the gradients
    # of the other rank's tables back, 4 D F B / 2 bytes each way in all.
    assert exchange["backward_bytes"] == exchange["raw_forward_bytes"] > 0
    if compression is None:
        assert exchange["forward_bytes"] == exchange["raw_forward_bytes"]
        assert report["compression"] is None
    else:
        assert 0 < exchange["forward_bytes"] < exchange["raw_forward_bytes"]
        assert len(report["compression"]["bounds"]) == 3
