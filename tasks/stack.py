"""The local server stack: PostgreSQL under ``$QUANTREC_HOME``, and an MLflow server and a
Prefect server on it.

    quantrec stack up --postgres     # or: make ui POSTGRES=1
    quantrec stack down [--remove]   # make clean removes it too

Everything lives in ``$QUANTREC_HOME/stack``: the database cluster (``pg/data``, its socket
in ``pg/sock``, bound to 127.0.0.1 only), the artifacts the MLflow server stores for its
clients (``mlartifacts``), the servers' logs and ``state.json`` (ports and process ids).
PostgreSQL refuses to run as root, so as root the cluster belongs to ``$QUANTREC_PG_USER``
(default ``nobody``) and its programs run through ``runuser``. One role, ``quantrec``, owns
two databases: ``mlflow`` (tracking and registry, ``postgresql+psycopg2``) and ``prefect``
(``postgresql+asyncpg``, with the ``pg_trgm`` extension Prefect's migrations need).

While the stack is up the home's runs use it with no other setting: ``mlflow-tracking.url``
and ``prefect-api.url`` name its servers (``tasks.settings.prepare_process_environment``
reads them); other machines export the two variables ``stack up`` prints.

Without ``--postgres`` the same servers run on the home's SQLite stores. Nothing here runs
at import, and no Python database driver is needed here: the cluster is set up with its own
programs (``initdb``, ``pg_ctl``, ``psql``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from quantrec.tasks.settings import PREFECT_URL_FILE, TRACKING_URL_FILE, Home

ROLE = "quantrec"
DATABASES = ("mlflow", "prefect")
MLFLOW_UI_FILE = "mlflow-ui.url"
SERVER_START_TIMEOUT_S = 240.0  # a first start migrates a fresh database (a minute or two)
STOP_GRACE_S = 10.0
_SOCKET_PATH_MAX = 107  # sun_path of a Unix socket, less the terminating NUL


class StackError(RuntimeError):
    """The stack cannot be started or stopped as asked; the message says how to fix it."""


@dataclass(frozen=True)
class StackPaths:
    """The places of the stack inside the home."""

    home: Home

    @property
    def root(self) -> Path:
        return self.home.root / "stack"

    @property
    def pg(self) -> Path:
        return self.root / "pg"

    @property
    def data(self) -> Path:
        return self.pg / "data"

    @property
    def socket_dir(self) -> Path:
        return self.pg / "sock"

    @property
    def password_file(self) -> Path:
        return self.pg / "password"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def artifacts(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"


def postgres_bindir() -> Path:
    """The folder of ``initdb``/``pg_ctl``/``psql`` (``$QUANTREC_PG_BIN``, PATH, Debian's)."""
    chosen = os.environ.get("QUANTREC_PG_BIN")
    found = [Path(chosen)] if chosen else []
    if (initdb := shutil.which("initdb")) is not None:
        found.append(Path(initdb).resolve().parent)
    found += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for folder in found:
        if all((folder / tool).is_file() for tool in ("initdb", "pg_ctl", "psql")):
            return folder
    raise StackError(
        "PostgreSQL's server programs (initdb, pg_ctl, psql) are not installed: "
        "`make postgres` (or apt-get install -y postgresql) installs them, or set "
        "QUANTREC_PG_BIN to their folder"
    )


def _as_cluster_owner() -> list[str]:
    """The prefix that runs a PostgreSQL program as the cluster's owner (never root)."""
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", os.environ.get("QUANTREC_PG_USER", "nobody"), "--"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _port_taken(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _run(command: list[str], what: str, **kwargs) -> str:
    done = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)
    if done.returncode != 0:
        raise StackError(f"{what} failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return done.stdout


# --- PostgreSQL ------------------------------------------------------------------------------


def init_cluster(paths: StackPaths) -> None:
    """``initdb`` once: role ``quantrec`` with a random password (local socket: trust)."""
    if (paths.data / "PG_VERSION").exists():
        return
    bindir = postgres_bindir()
    paths.pg.mkdir(parents=True, exist_ok=True)
    paths.socket_dir.mkdir(exist_ok=True)
    paths.password_file.write_text(secrets.token_hex(16))
    paths.password_file.chmod(0o600)
    prefix = _as_cluster_owner()
    if prefix:
        owner = prefix[2]
        for path in (paths.pg, paths.socket_dir, paths.password_file):
            shutil.chown(path, user=owner)
        paths.pg.chmod(0o700)
        reach = subprocess.run([*prefix, "test", "-w", str(paths.pg)], check=False)
        if reach.returncode != 0:
            raise StackError(
                f"PostgreSQL runs as user {owner!r}, who cannot reach {paths.pg}: every folder "
                "above it must be searchable by others (chmod o+x), or choose a "
                "QUANTREC_HOME elsewhere, or set QUANTREC_PG_USER"
            )
    _run(
        [
            *prefix,
            str(bindir / "initdb"),
            "--pgdata",
            str(paths.data),
            "--username",
            ROLE,
            "--pwfile",
            str(paths.password_file),
            "--auth-local",
            "trust",
            "--auth-host",
            "scram-sha-256",
            "--encoding",
            "UTF8",
            "--no-instructions",
        ],
        "initdb",
    )


def start_postgres(paths: StackPaths, port: int) -> None:
    """``pg_ctl start`` on 127.0.0.1:``port``, its socket in the home; returns when ready."""
    bindir = postgres_bindir()
    socket_file = paths.socket_dir / f".s.PGSQL.{port}"
    if len(str(socket_file)) > _SOCKET_PATH_MAX:
        raise StackError(
            f"the PostgreSQL socket path {socket_file} is {len(str(socket_file))} characters, "
            f"over the {_SOCKET_PATH_MAX} a Unix socket allows: choose a shorter QUANTREC_HOME"
        )
    if _port_taken(port):
        raise StackError(f"port {port} on 127.0.0.1 is taken: choose another with --pg-port")
    paths.logs.mkdir(parents=True, exist_ok=True)
    log = paths.pg / "postgres.log"  # written by the cluster's owner
    options = (
        f"-c listen_addresses=127.0.0.1 -c port={port} "
        f"-c unix_socket_directories={paths.socket_dir}"
    )
    command = [str(bindir / "pg_ctl"), "-D", str(paths.data), "-l", str(log)]
    _run([*_as_cluster_owner(), *command, "-o", options, "-w", "-t", "60", "start"], "pg_ctl start")
    for name in DATABASES:
        exists = psql(paths, port, f"SELECT 1 FROM pg_database WHERE datname = '{name}'")
        if not exists.strip():
            psql(paths, port, f"CREATE DATABASE {name} OWNER {ROLE}")
    psql(paths, port, "CREATE EXTENSION IF NOT EXISTS pg_trgm", database="prefect")


def stop_postgres(paths: StackPaths) -> None:
    """``pg_ctl stop -m fast`` when the cluster runs (open connections are closed)."""
    if not (paths.data / "postmaster.pid").exists():
        return
    command = [str(postgres_bindir() / "pg_ctl"), "-D", str(paths.data), "-m", "fast", "-w"]
    _run([*_as_cluster_owner(), *command, "stop"], "pg_ctl stop")


def psql(paths: StackPaths, port: int, sql: str, *, database: str = "postgres") -> str:
    """One statement over the home's socket (as the cluster's superuser role)."""
    command = [
        str(postgres_bindir() / "psql"),
        *("-h", str(paths.socket_dir), "-p", str(port), "-U", ROLE, "-d", database),
        *("-v", "ON_ERROR_STOP=1", "-tAc", sql),
    ]
    return _run(command, f"psql {sql!r}")


def database_url(paths: StackPaths, port: int, database: str, driver: str) -> str:
    """``postgresql+<driver>://quantrec:<password>@127.0.0.1:<port>/<database>``."""
    password = paths.password_file.read_text().strip()
    return f"postgresql+{driver}://{ROLE}:{password}@127.0.0.1:{port}/{database}"


# --- The servers -------------------------------------------------------------------------------


def _server_env(**extra: str) -> dict[str, str]:
    """The caller's environment without its Prefect/MLflow client settings, telemetry off."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    quiet = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    return {**env, **quiet, "DO_NOT_TRACK": "true", **extra}


def _program(name: str) -> str:
    """``mlflow`` or ``prefect`` of this interpreter's environment (else from PATH)."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else (shutil.which(name) or name)


def _spawn(command: list[str], *, env: dict[str, str], log: Path) -> int:
    """Start ``command`` detached in its own process group; its pid (= the group's id)."""
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [_program(command[0]), *command[1:]],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return process.pid


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - 127.0.0.1
            return response.status == 200
    except (OSError, ValueError):
        return False


def _wait_healthy(url: str, pid: int, name: str, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while not _answers(url):
        if not _alive(pid):
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            raise StackError(f"the {name} server exited while starting; {log} ends:\n{tail}")
        if time.monotonic() > deadline:
            raise StackError(f"the {name} server did not answer {url} in time; see {log}")
        time.sleep(1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by us) is not alive
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def _stop_group(pid: int) -> None:
    """SIGTERM the process group, SIGKILL what is left after the grace time."""
    for sig, wait_s in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)


def _port(requested: int) -> int:
    port = requested or free_port()
    if _port_taken(port):
        raise StackError(f"port {port} on 127.0.0.1 is taken: choose another port")
    return port


# --- Up and down -------------------------------------------------------------------------------


@dataclass(frozen=True)
class StackState:
    """What ``stack up`` started: where each server answers and its process group."""

    tracking_uri: str
    prefect_api_url: str
    mlflow_pid: int
    prefect_pid: int
    postgres_port: int | None = None

    @property
    def prefect_ui_url(self) -> str:
        return self.prefect_api_url.removesuffix("/api")

    def alive(self) -> bool:
        return _alive(self.mlflow_pid) and _alive(self.prefect_pid)

    @classmethod
    def read(cls, paths: StackPaths) -> StackState | None:
        try:
            return cls(**json.loads(paths.state_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None


def stack_status(home: Home) -> StackState | None:
    """The running stack of ``home``; None when it is not (all) up."""
    state = StackState.read(StackPaths(home))
    return state if state is not None and state.alive() else None


def stack_up(
    home: Home,
    *,
    postgres: bool,
    mlflow_port: int = 0,
    prefect_port: int = 0,
    pg_port: int = 0,
    ui: bool = True,
) -> StackState:
    """Start the stack (port 0: a free one) and wait until both servers answer; a stack
    already up is returned as it is. A failed start stops whatever it had started."""
    running = stack_status(home)
    if running is not None:
        return running
    paths = StackPaths(home)
    paths.logs.mkdir(parents=True, exist_ok=True)
    try:
        if postgres:
            init_cluster(paths)
            pg_port = pg_port or free_port()
            start_postgres(paths, pg_port)
            backend = database_url(paths, pg_port, "mlflow", "psycopg2")
            artifacts = ("--artifacts-destination", str(paths.artifacts))
            prefect_db = {
                "PREFECT_HOME": str(paths.root / "prefect"),
                "PREFECT_SERVER_DATABASE_CONNECTION_URL": database_url(
                    paths, pg_port, "prefect", "asyncpg"
                ),
            }
        else:  # the home's own SQLite stores, as the embedded runs write them
            pg_port = None
            backend = home.embedded_tracking_uri
            artifacts = ("--default-artifact-root", str(home.mlflow_artifacts))
            prefect_db = {"PREFECT_HOME": str(home.prefect)}
        mlflow_port, prefect_port = _port(mlflow_port), _port(prefect_port)
        mlflow_log, prefect_log = paths.logs / "mlflow.log", paths.logs / "prefect.log"
        mlflow_pid = _spawn(
            [
                "mlflow",
                "server",
                *("--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1"),
                *("--backend-store-uri", backend, *artifacts),
            ],
            env=_server_env(),
            log=mlflow_log,
        )
        prefect_url = f"http://127.0.0.1:{prefect_port}/api"
        prefect_pid = _spawn(
            [
                "prefect",
                "server",
                "start",
                *("--host", "127.0.0.1", "--port", str(prefect_port)),
                *(() if ui else ("--no-ui",)),
            ],
            env=_server_env(
                **prefect_db,
                PREFECT_SERVER_API_HOST="127.0.0.1",
                PREFECT_SERVER_API_PORT=str(prefect_port),
                PREFECT_UI_API_URL=prefect_url,
                PREFECT_SERVER_UI_ENABLED="true" if ui else "false",
            ),
            log=prefect_log,
        )
        state = StackState(
            tracking_uri=f"http://127.0.0.1:{mlflow_port}",
            prefect_api_url=prefect_url,
            mlflow_pid=mlflow_pid,
            prefect_pid=prefect_pid,
            postgres_port=pg_port,
        )
        paths.state_file.write_text(json.dumps(state.__dict__, indent=1))
        _wait_healthy(f"{state.tracking_uri}/health", mlflow_pid, "MLflow", mlflow_log)
        _wait_healthy(f"{prefect_url}/health", prefect_pid, "Prefect", prefect_log)
    except BaseException:
        stack_down(home)
        raise
    (home.root / MLFLOW_UI_FILE).write_text(state.tracking_uri + "\n")
    (home.root / PREFECT_URL_FILE).write_text(prefect_url + "\n")
    if postgres:  # the home's runs track on the server (the SQLite store stays as it was)
        (home.root / TRACKING_URL_FILE).write_text(state.tracking_uri + "\n")
    return state


def stack_down(home: Home, *, remove: bool = False) -> bool:
    """Stop the servers and the cluster; ``remove`` also deletes ``stack/`` (the databases
    and the artifacts stored through the server). Whether anything was running."""
    paths = StackPaths(home)
    state = StackState.read(paths)
    was_up = state is not None and (_alive(state.prefect_pid) or _alive(state.mlflow_pid))
    if state is not None:
        # The Prefect server first: it holds connections to the database.
        _stop_group(state.prefect_pid)
        _stop_group(state.mlflow_pid)
        for name in (PREFECT_URL_FILE, MLFLOW_UI_FILE, TRACKING_URL_FILE):
            (home.root / name).unlink(missing_ok=True)
        paths.state_file.unlink(missing_ok=True)  # a second `down` may be at it too
    if (paths.data / "postmaster.pid").exists():
        status = [str(postgres_bindir() / "pg_ctl"), "-D", str(paths.data), "status"]
        if subprocess.run([*_as_cluster_owner(), *status], capture_output=True).returncode == 0:
            stop_postgres(paths)
            was_up = True
    if remove and paths.root.exists():
        shutil.rmtree(paths.root)
    return was_up


def describe(home: Home, state: StackState) -> str:
    """What ``stack up`` prints: the addresses and the two variables other machines set."""
    store = (
        f"PostgreSQL on 127.0.0.1:{state.postgres_port} (databases {', '.join(DATABASES)})"
        if state.postgres_port
        else f"SQLite in {home.root}"
    )
    return (
        f"quantrec stack on {home.root}: {store}\n"
        f"  MLflow   {state.tracking_uri}/#/experiments?workflowType=machine_learning\n"
        f"  Prefect  {state.prefect_ui_url}\n"
        f"Runs on this home use it; elsewhere:\n"
        f"  export MLFLOW_TRACKING_URI={state.tracking_uri}\n"
        f"  export PREFECT_API_URL={state.prefect_api_url}\n"
        f"`quantrec stack down` stops it (--remove also deletes its databases)."
    )
