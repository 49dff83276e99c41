"""A line per day on stderr as each day of a backfill or the demo finishes."""

from datetime import date

from quantrec.flows.backfill import print_progress, progress_line
from quantrec.models.lifecycle import DayOutcome


def _outcome(**fields) -> DayOutcome:
    return DayOutcome(
        date=date(2026, 3, 2), model_name="m", mlflow_run_id="r", reason="why", **fields
    )


def test_a_day_line_names_its_place_date_decision_ne_and_champion():
    line = progress_line(
        _outcome(decision="promoted", metrics={"fp32": {"ne": 0.85432}}, champion_version="7"),
        2,
        10,
        41.6,
    )
    assert line == "[2/10] 2026-03-02  promoted    NE fp32 0.8543  champion v7  (42 s)"


def test_a_failed_day_without_measurements_still_gets_its_line():
    line = progress_line(_outcome(decision="failed"), 3, 3, 1.0)
    assert "[3/3] 2026-03-02  failed" in line and "NE fp32 -" in line and "champion none" in line


def test_the_line_goes_to_stderr_and_leaves_stdout_to_the_records(capsys):
    print_progress(_outcome(decision="rejected"), 1, 1, 0.0)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("[1/1] 2026-03-02  rejected")
