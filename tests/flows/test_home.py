"""State stays in its home: a day run from another working directory, with the home and the
tracking URI given as relative paths, writes nothing outside ``$QUANTREC_HOME``."""

import os
from datetime import date
from pathlib import Path

from quantrec.flows.daily_lifecycle import daily_lifecycle
from quantrec.tasks.tracking import connect

from .conftest import tiny_config


def _files(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*") if path.is_file()}


def test_a_day_with_a_relative_tracking_uri_writes_only_into_its_home(tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("QUANTREC_HOME", "../home")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///../home/mlflow.db")
    config = tiny_config().with_overrides(feed={"rows_per_day": 4_000}, training={"window_days": 1})
    outcome = daily_lifecycle(date(2026, 4, 2), config)

    home = (tmp_path / "home").resolve()
    assert sorted(os.listdir(tmp_path)) == ["elsewhere", "home"]
    assert _files(elsewhere) == set()
    assert outcome.registered_versions, outcome.reason  # a model was logged, not only text
    monkeypatch.chdir(tmp_path)  # resolved once: a later working directory changes nothing
    _, client = connect()
    assert client.tracking_uri == f"sqlite:///{home / 'mlflow.db'}"
    experiments = client.search_experiments()
    assert {e.name for e in experiments} == {"Default", config.registry.experiment}
    for experiment in experiments:
        assert experiment.artifact_location.startswith((home / "mlartifacts").as_uri())
    run = client.get_run(outcome.mlflow_run_id)
    assert run.info.artifact_uri.startswith((home / "mlartifacts").as_uri())
    stored = {p.relative_to(home).parts[0] for p in _files(home)}
    assert {"mlartifacts", "lake", "mlflow.db"} <= stored
    assert any(p.name == "config.json" for p in _files(home / "mlartifacts"))
