"""Real processes on 127.0.0.1 for the fault and end-to-end tests.

    python -m pytest -q -m "slow or e2e" tests/e2e

One Prefect server serves the whole session (each ``quantrec`` process would otherwise
start an ephemeral one, ~15 s apiece); MLflow servers start per test. Every child runs in
its own process group (``start_new_session``), so a test can SIGKILL a run together with
anything it spawned, and the fixtures stop every group they started, pass or fail.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
MODEL = "quantrec-ctr"
# Three small synthetic days and a search over two precisions per unit: a run takes about
# a minute on two busy cores (the full candidate lists alone take ~80 s there).
TINY_TOML = """\
# quantrec run --config tiny.toml --date 2026-03-04   (fault and e2e tests)
[feed]
rows_per_day = 3000
seed = 7

[training]
window_days = 2
batch_size = 256

[search]
linear_candidates = ["fp16", "int8"]
table_candidates = ["fp16", "int8"]

[evaluation]
batch_size = 512
"""


def free_port() -> int:
    """A port nothing listens on right now, on the loopback interface."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def spawn(
    command: list[str], *, env: dict[str, str], log: Path, stderr_log: Path | None = None
) -> subprocess.Popen:
    """Start ``command`` in a new process group, output into ``log`` (and ``stderr_log``).

    The working directory is the repository, where served deployments find their flows.
    """
    out = open(log, "ab")
    err = open(stderr_log, "ab") if stderr_log else subprocess.STDOUT
    try:
        return subprocess.Popen(
            command,
            env=env,
            stdout=out,
            stderr=err,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        out.close()
        if stderr_log:
            err.close()


def kill_group(process: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to the process group ``process`` leads; reap it on SIGKILL."""
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass
    if sig == signal.SIGKILL:
        process.wait(timeout=30)


def stop_group(process: subprocess.Popen, *, grace_s: float = 10) -> None:
    """SIGTERM the group, then SIGKILL whatever is left after ``grace_s``."""
    if process.poll() is None:
        kill_group(process, signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    # Children of a server (uvicorn, gunicorn workers) may outlive the leader.
    kill_group(process, signal.SIGKILL)


def wait_until(
    predicate: Callable[[], object],
    *,
    timeout_s: float,
    what: str,
    every_s: float = 0.5,
    alive: subprocess.Popen | None = None,
):
    """Poll ``predicate`` until it is truthy; fail naming ``what`` (and a dead ``alive``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if alive is not None and alive.poll() is not None:
            pytest.fail(f"waiting for {what}: the process exited with {alive.returncode}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every_s)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@dataclass
class Server:
    """A server child process and the address it answers on."""

    name: str
    process: subprocess.Popen
    url: str
    log: Path

    def stop(self) -> None:
        stop_group(self.process)

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _server_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_", "MLFLOW_", "QUANTREC_"))
    }
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return {**env, **extra}


def start_prefect_server(root: Path) -> Server:
    """``prefect server start`` on a free port with its own PREFECT_HOME; waits for health."""
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    env = _server_env(
        PREFECT_HOME=str(root),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_UI_ENABLED="false",
    )
    log = root / "server.log"
    process = spawn(
        [
            str(BIN / "prefect"),
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-ui",
        ],
        env=env,
        log=log,
    )
    server = Server("prefect", process, f"http://127.0.0.1:{port}/api", log)
    try:
        wait_until(
            lambda: http_ok(f"{server.url}/health"),
            timeout_s=180,
            what=f"the Prefect server on port {port}",
            alive=process,
        )
    except BaseException:
        server.stop()
        raise
    return server


def start_mlflow_server(root: Path, port: int | None = None) -> Server:
    """``mlflow server`` (one worker) on a SQLite store and artifact folder under ``root``.

    Artifacts are proxied (``--artifacts-destination``), so stopping the server cuts the
    client off from the artifacts too, as it would with a remote store.
    """
    port = port or free_port()
    root.mkdir(parents=True, exist_ok=True)
    log = root / "server.log"
    process = spawn(
        [
            str(BIN / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
        ],
        env=_server_env(),
        log=log,
    )
    server = Server("mlflow", process, f"http://127.0.0.1:{port}", log)
    try:
        wait_until(
            lambda: http_ok(f"{server.url}/health"),
            timeout_s=180,
            what=f"the MLflow server on port {port}",
            alive=process,
        )
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory) -> str:
    """PREFECT_API_URL of one real Prefect server for the session."""
    server = start_prefect_server(tmp_path_factory.mktemp("prefect-server"))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def mlflow_servers(tmp_path):
    """Start MLflow servers (``start(root, port=None)``); all are stopped after the test."""
    started: list[Server] = []

    def start(root: Path | None = None, port: int | None = None) -> Server:
        server = start_mlflow_server(root or tmp_path / "mlflow-server", port)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def record(self) -> dict:
        """The ``--json`` record (the last line of stdout)."""
        lines = [line for line in self.stdout.splitlines() if line.startswith("{")]
        assert lines, f"no JSON record on stdout:\n{self.stdout}\n{self.stderr}"
        return json.loads(lines[-1])


class Quantrec:
    """``quantrec`` child processes on one $QUANTREC_HOME, a tiny config and real servers."""

    def __init__(self, home: Path, *, prefect_api: str, tracking_uri: str | None = None):
        self.home = home
        self.home.mkdir(parents=True, exist_ok=True)
        self.config = home.parent / "tiny.toml"
        self.config.write_text(TINY_TOML)
        self.logs = home.parent / "logs"
        self.logs.mkdir(exist_ok=True)
        self.prefect_api = prefect_api
        self.tracking_uri = tracking_uri
        self.children: list[subprocess.Popen] = []
        self._count = 0

    def env(self, **extra: str) -> dict[str, str]:
        env = _server_env(
            QUANTREC_HOME=str(self.home),
            PREFECT_API_URL=self.prefect_api,
            MLFLOW_ENABLE_ASYNC_LOGGING="false",
        )
        if self.tracking_uri:
            env["MLFLOW_TRACKING_URI"] = self.tracking_uri
        return {**env, **extra}

    def start(self, *args: str, **env: str) -> subprocess.Popen:
        """Start ``quantrec ARGS --config tiny.toml`` (output into ``logs/<n>.out|err``)."""
        self._count += 1
        name = self.logs / str(self._count)
        process = spawn(
            [str(BIN / "quantrec"), *args, "--config", str(self.config)],
            env=self.env(**env),
            log=name.with_suffix(".out"),
            stderr_log=name.with_suffix(".err"),
        )
        process.log_name = name  # type: ignore[attr-defined]
        self.children.append(process)
        return process

    def finish(
        self, process: subprocess.Popen, *, timeout_s: float, started: float | None = None
    ) -> Finished:
        started = time.monotonic() if started is None else started
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            kill_group(process)
            pytest.fail(
                f"quantrec {process.args[1:]} did not finish in {timeout_s:.0f} s:\n"
                + self.output(process)[1][-3000:]
            )
        out, err = self.output(process)
        return Finished(process.returncode, out, err, time.monotonic() - started)

    def run(self, *args: str, timeout_s: float = 300, **env: str) -> Finished:
        started = time.monotonic()
        return self.finish(self.start(*args, **env), timeout_s=timeout_s, started=started)

    @staticmethod
    def output(process: subprocess.Popen) -> tuple[str, str]:
        name = process.log_name  # type: ignore[attr-defined]
        return (
            name.with_suffix(".out").read_text(errors="replace"),
            name.with_suffix(".err").read_text(errors="replace"),
        )

    def paused(self, process: subprocess.Popen, stage: str, *, timeout_s: float = 240) -> None:
        """Wait until ``process`` sits at the ``QUANTREC_PAUSE_AT=stage`` failpoint."""
        marker = self.home / f"paused-{stage}"
        wait_until(
            lambda: marker.exists() and marker.read_text().strip(),
            timeout_s=timeout_s,
            what=f"{marker}",
            alive=process,
        )

    def client(self) -> MlflowClient:
        uri = self.tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"
        return MlflowClient(tracking_uri=uri, registry_uri=uri)

    def close(self) -> None:
        for process in self.children:
            stop_group(process, grace_s=5)


@pytest.fixture
def quantrec(tmp_path, prefect_api):
    """A ``Quantrec`` on a fresh home and the embedded MLflow store; kills its children."""
    runner = Quantrec(tmp_path / "home", prefect_api=prefect_api)
    try:
        yield runner
    finally:
        runner.close()


# Registry look-ups shared by the tests.


def versions_of(client: MlflowClient, run_date: str | None = None) -> list:
    """Versions of the model (of one run date), oldest first; [] before the first one."""
    query = f"name='{MODEL}'"
    if run_date:
        query += f" and tags.`quantrec.run_date` = '{run_date}'"
    return sorted(client.search_model_versions(query), key=lambda v: int(v.version))


def alias(client: MlflowClient, name: str = "champion") -> str | None:
    try:
        version = client.get_registered_model(MODEL).aliases.get(name)
    except Exception:  # noqa: BLE001 - the model is not registered yet
        return None
    return None if version is None else str(version)


def runs_of(client: MlflowClient, run_date: str) -> list:
    """MLflow runs of one run date, oldest first."""
    experiment = client.get_experiment_by_name("quantrec")
    if experiment is None:
        return []
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`quantrec.run_date` = '{run_date}'"
    )
    return sorted(runs, key=lambda r: r.info.start_time)
