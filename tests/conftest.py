"""Every test gets its own ``$QUANTREC_HOME`` and the embedded MLflow store inside it."""

import pytest


@pytest.fixture(autouse=True)
def quantrec_home(tmp_path, monkeypatch):
    home = tmp_path / "quantrec-home"
    monkeypatch.setenv("QUANTREC_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    return home
