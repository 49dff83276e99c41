import shutil
from datetime import date

import pytest
from prefect.testing.utilities import prefect_test_harness

from quantrec.flows.backfill import backfill
from quantrec.tasks.config import QuantrecConfig
from quantrec.tasks.tracking import connect

START, END = date(2026, 3, 1), date(2026, 3, 3)


@pytest.fixture(autouse=True, scope="session")
def prefect_harness():
    """One temporary Prefect server for every flow test (starting one costs ~15 s)."""
    with prefect_test_harness(server_startup_timeout=120):
        yield


def tiny_config(**gate) -> QuantrecConfig:
    # 20k rows a day: on 3k-row days the DLRM does not beat the base rate (NE 1.00-1.08
    # against a logistic baseline's 0.93-0.96), so the gate rightly promotes nothing and
    # the lifecycle's promotion mechanics would go untested.
    return QuantrecConfig().with_overrides(
        feed={"rows_per_day": 20_000, "seed": 7},
        training={"window_days": 2},
        evaluation={"batch_size": 512},
        gate=gate,
    )


@pytest.fixture(scope="session")
def backfilled(tmp_path_factory):
    home = tmp_path_factory.mktemp("lifecycle-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("QUANTREC_HOME", str(home))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        # A generous gate so a low-precision variant is what gets promoted on small, noisy
        # days: the mechanics are under test here, the quality bars in tests/models.
        config = tiny_config(
            quantization_ne_budget_rel=0.05,
            champion_ne_epsilon_rel=0.05,
            baseline_ne_margin_rel=0.1,
        )
        records = [outcome.to_record() for outcome in backfill(START, END, config)]
        yield home, config, records


@pytest.fixture
def client(backfilled, monkeypatch):
    home, _, _ = backfilled
    monkeypatch.setenv("QUANTREC_HOME", str(home))
    # Both URIs: MLflow exports them to child processes, and a registry URI left over from
    # another test's home would resolve aliases there.
    _, client = connect()
    return client


@pytest.fixture
def home_copy(backfilled, tmp_path, monkeypatch):
    """The backfilled home copied, for a test that moves aliases or runs more days: what
    it does stays out of the shared home. (copy, config, records, client)."""
    home, config, records = backfilled
    copy = tmp_path / "home"
    shutil.copytree(home, copy, ignore=shutil.ignore_patterns("locks"))
    monkeypatch.setenv("QUANTREC_HOME", str(copy))
    # Both URIs: MLflow exports them to child processes, and a registry URI left over from
    # another test's home would resolve aliases there.
    _, client = connect()
    return copy, config, records, client
