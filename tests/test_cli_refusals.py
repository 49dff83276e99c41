"""``quantrec run`` / ``search`` / ``backfill`` refuse what cannot run before any flow
starts: one line on stderr, exit status 2, nothing written to the lake."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, timedelta

import pytest

from quantrec.feeds.table import TableFeed
from quantrec.feeds.table_example import write_example
from quantrec.flows.cli import main
from quantrec.tasks.settings import quantrec_home


@pytest.fixture(autouse=True)
def restored_environ():
    """The CLI sets defaults in os.environ (Prefect's home, telemetry off): undo them."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def _lake_files(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_a_run_date_in_the_future_exits_2(capsys) -> None:
    ahead = datetime.now(UTC).date() + timedelta(days=365)
    assert main(["run", "--date", ahead.isoformat()]) == 2
    err = capsys.readouterr().err
    assert f"run date {ahead} is in the future" in err and err.count("\n") == 1
    assert main(["backfill", "--start", "2026-01-01", "--end", ahead.isoformat()]) == 2
    assert not quantrec_home().lake.exists()


def test_a_backfill_ending_before_it_starts_exits_2(capsys) -> None:
    assert main(["backfill", "--start", "2026-01-05", "--end", "2026-01-01"]) == 2
    err = capsys.readouterr().err
    assert "backfill --end 2026-01-01 is before --start 2026-01-05" in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_a_lake_of_table_days_refuses_a_synthetic_run(tmp_path, capsys) -> None:
    spec = write_example(tmp_path / "data", days=4, rows_per_day=50)
    feed, lake = TableFeed(spec=spec), quantrec_home().day_lake()
    lake.bind("table", feed.schema().partition_columns)  # as a table run's ingest does
    for day in feed.available_days():
        lake.write(day, feed.day(day))
    before = {p: p.read_bytes() for p in lake.root.rglob("*") if p.is_file()}
    for command in (["run", "--date", "2024-01-05"], ["search", "--date", "2024-01-05"]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert f"lake {lake.root} holds the table feed's days" in err
        assert "not the synthetic feed's" in err and "--feed table" in err
    assert {p: p.read_bytes() for p in lake.root.rglob("*") if p.is_file()} == before
    assert lake.days() == [date(2024, 1, k) for k in range(1, 5)]


def test_a_model_name_with_a_quote_exits_2_before_any_query(tmp_path, capsys) -> None:
    config = tmp_path / "q.toml"
    config.write_text("[registry]\nmodel_name = \"ctr' or name != '\"\n")
    for command in (["review", "list"], ["verify", "1"], ["run", "--date", "2026-01-05"]):
        assert main([*command, "--config", str(config)]) == 2
        err = capsys.readouterr().err
        assert f"{config}: registry.model_name" in err and "Traceback" not in err
    assert not (quantrec_home().root / "mlflow.db").exists()
