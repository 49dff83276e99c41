"""Real logs have days with very few clicks, and days with none: a backfill over them ends
with a clear record per day (a decision and its reason, or the check that stopped it), never
a traceback, and the champion is only ever a model that beat the baselines."""

from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from quantrec.feeds.table_example import write_example
from quantrec.flows.backfill import backfill
from quantrec.tasks.config import QuantrecConfig
from quantrec.tasks.tracking import connect

START, END = date(2024, 1, 4), date(2024, 1, 9)
NO_CLICKS = date(2024, 1, 7)


@pytest.fixture(scope="module")
def sparse_backfill(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sparse-table")
    spec = write_example(folder)
    # About 4 % of rows rate 5: a dozen clicks a day; one day none at all.
    spec.write_text(spec.read_text().replace('rule = "rating >= 4"', 'rule = "rating >= 5"'))
    log = pd.read_csv(folder / "ratings.csv")
    day = pd.to_datetime(log.ts, unit="s", utc=True).dt.date
    log.loc[day == NO_CLICKS, "rating"] = 1
    log.to_csv(folder / "ratings.csv", index=False)
    home = tmp_path_factory.mktemp("sparse-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("QUANTREC_HOME", str(home))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        config = QuantrecConfig().with_feed("table", spec=str(spec))
        yield home, config, backfill(START, END, config)


def test_every_day_of_a_sparse_log_ends_with_a_record_and_no_failure(sparse_backfill):
    _, _, outcomes = sparse_backfill
    assert [o.date for o in outcomes] == [date(2024, 1, k) for k in range(4, 10)]
    assert all(o.decision in {"promoted", "rejected", "challenger"} for o in outcomes), [
        (o.date, o.decision, o.reason) for o in outcomes
    ]
    assert all(o.reason for o in outcomes)
    quiet = next(o for o in outcomes if o.date == NO_CLICKS)
    assert quiet.stopped and "label" in quiet.reason
    assert quiet.quarantined and Path(quiet.quarantined).is_dir()


def test_the_sparse_days_are_measured_against_their_baselines(sparse_backfill):
    _, _, outcomes = sparse_backfill
    trained = [o for o in outcomes if not o.stopped]
    assert trained
    for outcome in trained:
        assert {"baseline.constant", "baseline.logistic"} <= set(outcome.metrics)
        checks = {c["name"] for c in outcome.checks["fp32"]}
        assert {"ne_beats_base_rate", "ne_vs_logistic_baseline_rel"} <= checks
    home, config, outcomes = sparse_backfill
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("QUANTREC_HOME", str(home))
        _, client = connect()
        champion = client.get_registered_model(config.registry.model_name).aliases.get("champion")
    served = [o for o in trained if o.promoted_variant]
    assert (champion is None) == (not served)
    for outcome in served:
        checks = outcome.checks[outcome.promoted_variant]
        assert all(c["passed"] for c in checks if c["name"].startswith("ne_"))


def test_a_table_home_publishes_its_lifecycle_report(sparse_backfill):
    """The report run exists on a feed without a shift date, and holds the report files."""
    home, config, _ = sparse_backfill
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("QUANTREC_HOME", str(home))
        _, client = connect()
        runs = client.search_runs(
            [client.get_experiment_by_name(config.registry.experiment).experiment_id],
            filter_string="tags.`quantrec.flow` = 'lifecycle-report'",
        )
        assert len(runs) == 1
        files = {a.path for a in client.list_artifacts(runs[0].info.run_id, "lifecycle")}
    assert any(path.endswith(".html") for path in files), files
