"""Where quantrec keeps its state: one directory, ``$QUANTREC_HOME`` (default ``./.quantrec``).

Everything embedded lives there: the data lake of day partitions, the MLflow tracking store
and model registry (SQLite) with its artifacts, and Prefect's home (its ephemeral server's
database), so ``make ui`` shows what ``make demo`` wrote. The standard ``MLFLOW_TRACKING_URI``
and ``PREFECT_API_URL`` override the embedded defaults to run against real servers.

Nothing here runs at import: paths are read from the environment when asked for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOME = ".quantrec"


@dataclass(frozen=True)
class Home:
    """The state directory and the places inside it."""

    root: Path

    @property
    def lake(self) -> Path:
        return self.root / "lake"

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def prefect(self) -> Path:
        return self.root / "prefect"

    @property
    def tracking_uri(self) -> str:
        """``MLFLOW_TRACKING_URI`` when set, else the embedded SQLite store."""
        return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{self.mlflow_db}"

    @property
    def uses_embedded_tracking(self) -> bool:
        return not os.environ.get("MLFLOW_TRACKING_URI")


def quantrec_home() -> Home:
    """The state directory named by ``$QUANTREC_HOME`` (created on first use)."""
    root = Path(os.environ.get("QUANTREC_HOME") or DEFAULT_HOME).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return Home(root=root)


def prepare_process_environment() -> Home:
    """Point Prefect at ``$QUANTREC_HOME/prefect`` unless the user chose otherwise.

    Prefect reads its settings when it is first imported, so the CLI calls this before it
    imports any flow.
    """
    home = quantrec_home()
    os.environ.setdefault("PREFECT_HOME", str(home.prefect))
    # The ephemeral server starts in-process on the first flow; on a busy machine it can
    # take longer than Prefect's default wait.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    # MLflow's client retries a failed HTTP call 7 times with backoff (minutes); the tasks
    # retry on their own, so fail each call fast and let the task's retries pace it.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # No network beyond package registries: telemetry only fails, and its startup write
    # races the ephemeral server's own (a "database is locked" traceback in the output).
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Flow runs show their own logs; Prefect's INFO chatter would drown the demo's table.
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    return home
