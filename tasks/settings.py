"""Where quantrec keeps its state, and what makes two runs the same run.

State: one directory, ``$QUANTREC_HOME`` (default ``./.quantrec``).

Everything embedded lives there: the data lake of day partitions, the MLflow tracking store
and model registry (SQLite) with its artifacts, and Prefect's home (its ephemeral server's
database), so ``make ui`` shows what ``make demo`` wrote. The standard ``MLFLOW_TRACKING_URI``
and ``PREFECT_API_URL`` override the embedded defaults to run against real servers.

Nothing here runs at import: paths are read from the environment when asked for.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import importlib.util
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from quantrec.feeds.lake import DayLake

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

    def day_lake(self) -> DayLake:
        return DayLake(self.lake)

    @property
    def prefect(self) -> Path:
        return self.root / "prefect"

    @property
    def stages(self) -> Path:
        """Resumable stage results of unfinished runs (``tasks.stage_store``)."""
        return self.root / "stages"

    @property
    def tracking_uri(self) -> str:
        """``MLFLOW_TRACKING_URI`` when set, else the embedded SQLite store."""
        return os.environ.get("MLFLOW_TRACKING_URI") or self.embedded_tracking_uri

    @property
    def embedded_tracking_uri(self) -> str:
        return f"sqlite:///{self.mlflow_db}"

    @property
    def uses_embedded_tracking(self) -> bool:
        # Compared by value: ``mlflow.set_tracking_uri`` exports MLFLOW_TRACKING_URI, so
        # after the first connection the variable is set even for the embedded store.
        return self.tracking_uri == self.embedded_tracking_uri


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
    # matplotlib (the report charts) keeps its font cache in ~/.cache unless told otherwise.
    os.environ.setdefault("MPLCONFIGDIR", str(home.root / "matplotlib"))
    # The ephemeral server starts in-process on the first flow; on a busy machine it can
    # take longer than Prefect's default wait.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    # MLflow's client retries a failed HTTP call 7 times with backoff (minutes); the tasks
    # retry on their own, so fail each call fast and let the task's retries pace it.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # "Creating initial MLflow database tables..." on every fresh store: not the user's news.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    # No network beyond package registries: telemetry only fails, and its startup write
    # races the ephemeral server's own (a "database is locked" traceback in the output).
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    # Flow runs show their own logs; Prefect's INFO chatter would drown the demo's table.
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    # ... but the run loggers send INFO to the API (the flow run's Logs tab: the decision,
    # the drift level, why a day stopped); the terminal still shows warnings only.
    os.environ.setdefault("PREFECT_LOGGING_LOGGERS_PREFECT_FLOW_RUNS_LEVEL", "INFO")
    os.environ.setdefault("PREFECT_LOGGING_LOGGERS_PREFECT_TASK_RUNS_LEVEL", "INFO")
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    # The long stages' progress (models.progress: training epochs, search units) goes to
    # the run's logs too, so the Prefect UI shows a stage moving.
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "quantrec.progress")
    _use_running_prefect_server(home)
    return home


PREFECT_URL_FILE = "prefect-api.url"  # written by `make ui` (deploy/ui.sh) while it serves
# Written by `quantrec stack up --postgres` (tasks/stack.py): the home's MLflow server.
TRACKING_URL_FILE = "mlflow-tracking.url"


def _use_running_prefect_server(home: Home) -> None:
    """With no ``PREFECT_API_URL`` set, use the Prefect server `make ui` runs on this home
    when it answers, instead of starting a temporary one (about 15 s per command); with no
    ``MLFLOW_TRACKING_URI``, the MLflow server of the home's PostgreSQL stack likewise."""
    _use_running_server(home, PREFECT_URL_FILE, "PREFECT_API_URL")
    _use_running_server(home, TRACKING_URL_FILE, "MLFLOW_TRACKING_URI")


def _use_running_server(home: Home, url_file: str, variable: str) -> None:
    if os.environ.get(variable):
        return
    try:
        url = (home.root / url_file).read_text().strip()
    except OSError:
        return
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1) as answer:  # noqa: S310
            if answer.status == 200:
                os.environ[variable] = url
    except (OSError, ValueError):
        return  # the server is not running (any more): the embedded default it is


def tie_temporary_servers_to_this_process() -> None:
    """A temporary Prefect server (ephemeral mode) is a child process; if this process is
    killed (SIGKILL gives it no chance to stop it), Linux kills the server too
    (``PR_SET_PDEATHSIG``) instead of leaving it running with no parent."""
    import ctypes
    import signal
    import subprocess
    import sys

    if not sys.platform.startswith("linux"):
        return
    import prefect.server.api.server as server

    if getattr(server.subprocess, "quantrec_tied", False):
        return
    libc = ctypes.CDLL(None, use_errno=True)

    def die_with_parent() -> None:
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

    class Tied:
        """``subprocess`` as Prefect's server module uses it, each child tied to us."""

        quantrec_tied = True

        def __getattr__(self, name):
            return getattr(subprocess, name)

        @staticmethod
        def Popen(*args, **kwargs):  # noqa: N802 - subprocess's name
            kwargs.setdefault("preexec_fn", die_with_parent)
            return subprocess.Popen(*args, **kwargs)

    server.subprocess = Tied()


# --- Run identity and the run-date lock ----------------------------------------------------
#
# What makes two runs "the same run", and the lock that keeps them from overlapping.
#
# A run is identified by its run date, the content digest of the days it reads (the window
# and the run date), the hash of its configuration and the version of the code. A rerun with
# the same identity has nothing new to say: it reuses the finished run's record, and after a
# crash it resumes from the stages whose results were persisted under that identity.
#
# Two runs of one run date (and one registered model) never overlap: the flow holds an
# exclusive ``fcntl`` lock on ``$QUANTREC_HOME/locks/<model>-<date>.lock`` for its whole
# length. The kernel drops the lock when the process dies, so a killed run never leaves a
# stale lock behind.

# The packages whose source decides what a run computes.
_CODE_PACKAGES = ("models", "data_checks", "feeds", "tasks", "flows")


class RunInProgressError(RuntimeError):
    """Another process is running the same run date; this one was told not to wait."""


@lru_cache(maxsize=1)
def code_version() -> str:
    """``<package version>+<12 hex of the product's source files>``.

    Hashing the sources rather than asking git works from an installed wheel too, and any
    edit to the code changes the identity of the runs it makes.
    """
    try:
        version = metadata.version("quantrec")
    except metadata.PackageNotFoundError:
        version = "0+unknown"
    digest = hashlib.sha256()
    for package in _CODE_PACKAGES:
        folder = Path(importlib.util.find_spec(f"quantrec.{package}").origin).parent
        for path in sorted(folder.rglob("*.py")):
            digest.update(f"{package}/{path.relative_to(folder)}".encode())
            digest.update(path.read_bytes())
    return f"{version}+{digest.hexdigest()[:12]}"


def config_hash(config_json: str) -> str:
    """16 hex of the canonical (key-sorted) JSON of a configuration."""
    canonical = json.dumps(json.loads(config_json), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def run_key(*, run_date: date, digests: dict[date, str], config_json: str, code: str) -> str:
    """24 hex identifying a run: run date + data digests + config hash + code version."""
    parts = [
        run_date.isoformat(),
        *(f"{day.isoformat()}={digest}" for day, digest in sorted(digests.items())),
        config_hash(config_json),
        code,
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


# A persisted stage result (``tasks.stage_store``) serves the resume of a crashed run; a
# finished run's rerun reuses its record instead, so after this long nothing needs it.
STAGE_RESULT_TTL = timedelta(days=2)


def _lock_path(model_name: str, run_date: date) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_name)
    folder = quantrec_home().root / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{safe}-{run_date.isoformat()}.lock"


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "another process"
    return (
        f"pid {info.get('pid')} on {info.get('host')} (user {info.get('user')}, "
        f"since {info.get('since')})"
    )


@contextmanager
def run_date_lock(
    model_name: str,
    run_date: date,
    *,
    wait: bool = False,
    timeout_s: float = 6 * 3600,
    poll_s: float = 2.0,
) -> Iterator[Path]:
    """Hold the exclusive lock of (model, run date) for the block.

    Raises:
        RunInProgressError: the lock is held and ``wait`` is False, or it was still held
            after ``timeout_s`` seconds of waiting.
    """
    path = _lock_path(model_name, run_date)
    handle = open(path, "a+")
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait or time.monotonic() > deadline:
                    raise RunInProgressError(
                        f"run date {run_date} of model {model_name!r} is already being run by "
                        f"{_holder(path)} (lock {path}); wait for it to finish, or rerun with "
                        "--wait to queue behind it"
                    ) from None
                time.sleep(poll_s)
        handle.seek(0)
        handle.truncate()
        handle.write(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "user": os_user(),
                    "since": datetime.now(UTC).isoformat(timespec="seconds"),
                }
            )
        )
        handle.flush()
        yield path
    finally:
        handle.close()  # closing the descriptor releases the lock


def os_user() -> str:
    """The operating-system user recorded on manual decisions."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid-{os.getuid()}"


def pause_point(stage: str) -> None:
    """Failpoint for fault tests: with ``QUANTREC_PAUSE_AT=<stage>`` the process announces
    that it reached ``stage`` (a file ``paused-<stage>`` in ``$QUANTREC_HOME``) and sleeps,
    so a test can kill it, or stop a server under it, at a known point."""
    if os.environ.get("QUANTREC_PAUSE_AT") != stage:
        return
    marker = quantrec_home().root / f"paused-{stage}"
    marker.write_text(str(os.getpid()))
    time.sleep(float(os.environ.get("QUANTREC_PAUSE_S", "600")))
