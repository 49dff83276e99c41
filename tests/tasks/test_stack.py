"""A real PostgreSQL cluster under a home (``tasks.stack``): initdb as an unprivileged user,
bound to 127.0.0.1 with its socket in the home, the MLflow store (tracking and registry) on
it through SQLAlchemy, Prefect's database with ``pg_trgm``; stopped and removed after.

Skips, saying so, where PostgreSQL's server programs are absent (`make postgres`).
"""

from __future__ import annotations

import shutil
import socket
import tempfile
from pathlib import Path

import pytest

from quantrec.models.model_card import DESCRIPTION_MAX
from quantrec.tasks.settings import Home
from quantrec.tasks.stack import (
    StackError,
    StackPaths,
    database_url,
    free_port,
    init_cluster,
    postgres_bindir,
    psql,
    stack_down,
    start_postgres,
    stop_postgres,
)


def _postgres_or_skip() -> Path:
    try:
        return postgres_bindir()
    except StackError as err:
        pytest.skip(f"PostgreSQL is not installed here: {err}")


@pytest.fixture
def home():
    """A home the cluster's unprivileged owner can reach (pytest's own tmp is root-only)
    with a short path (the socket's must fit 107 characters)."""
    root = Path(tempfile.mkdtemp(prefix="qr-pg-"))
    root.chmod(0o755)
    try:
        yield Home(root=root)
    finally:
        stack_down(Home(root=root), remove=True)
        shutil.rmtree(root, ignore_errors=True)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_the_mlflow_store_runs_on_a_cluster_in_the_home(home):
    _postgres_or_skip()
    pytest.importorskip("psycopg2", reason="psycopg2 is in the [scale] extra (make setup)")
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    paths = StackPaths(home)
    port = free_port()
    init_cluster(paths)
    start_postgres(paths, port)
    assert _listening(port)
    assert (paths.socket_dir / f".s.PGSQL.{port}").exists()  # the socket is in the home
    assert psql(paths, port, "SHOW listen_addresses").strip() == "127.0.0.1"
    owner = psql(paths, port, "SELECT current_setting('data_directory')").strip()
    assert owner == str(paths.data)
    assert psql(paths, port, "SELECT rolname FROM pg_roles WHERE rolsuper").split() == ["quantrec"]
    installed = psql(paths, port, "SELECT extname FROM pg_extension", database="prefect")
    assert "pg_trgm" in installed.split()

    uri = database_url(paths, port, "mlflow", "psycopg2")
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("quantrec", artifact_location=str(home.root / "art"))
    run = client.create_run(experiment, tags={"quantrec.run_date": "2026-03-04"})
    client.create_registered_model("quantrec-ctr")
    version = client.create_model_version(
        "quantrec-ctr", f"runs:/{run.info.run_id}/model", run.info.run_id, tags={"k": "v"}
    )
    client.set_registered_model_alias("quantrec-ctr", "champion", version.version)
    found = client.get_model_version_by_alias("quantrec-ctr", "champion")
    assert (found.version, found.tags) == (version.version, {"k": "v"})
    # What model_card's limit is for: this store refuses a longer description.
    client.update_model_version("quantrec-ctr", version.version, "x" * DESCRIPTION_MAX)
    with pytest.raises(MlflowException):
        client.update_model_version("quantrec-ctr", version.version, "x" * (DESCRIPTION_MAX + 1))

    stop_postgres(paths)
    assert not _listening(port)
    start_postgres(paths, port)  # the same cluster again: the registry is still there
    again = MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert again.get_model_version_by_alias("quantrec-ctr", "champion").version == version.version
    assert stack_down(home, remove=True)
    assert not _listening(port) and not paths.root.exists()


def test_a_socket_path_too_long_for_unix_is_refused_naming_it(tmp_path):
    _postgres_or_skip()
    deep = Home(root=tmp_path / ("d" * 120))
    with pytest.raises(StackError, match="socket path .* choose a shorter QUANTREC_HOME"):
        start_postgres(StackPaths(deep), free_port())


def test_down_on_a_home_without_a_stack_says_nothing_ran(tmp_path):
    assert stack_down(Home(root=tmp_path)) is False
