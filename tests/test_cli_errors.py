"""What a failed command says: each fault named as what it is, in one paragraph, with its
exit status; the flow engine's traceback only with ``--verbose``."""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import requests

from quantrec.flows.cli import main
from quantrec.flows.errors import ExitCode, Terminated, classify, is_stop


@pytest.fixture(autouse=True)
def restored_environ():
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def _raised_from(cause: BaseException) -> BaseException:
    """``cause`` wrapped the way the flow engine and MLflow wrap what a task raised."""
    try:
        try:
            raise cause
        except BaseException as inner:
            raise RuntimeError("Task run encountered an exception") from inner
    except RuntimeError as outer:
        return outer


def _classify(cause: BaseException) -> tuple[ExitCode, str]:
    return classify(_raised_from(cause), tracking_uri="http://127.0.0.1:5999", home="/h")


def test_a_full_disk_is_named_as_such():
    code, said = _classify(OSError(errno.ENOSPC, "No space left on device"))
    assert code == ExitCode.DISK_FULL == 6
    assert "no space left on the disk" in said and "/h" in said and "champion is unchanged" in said
    code, _ = _classify(sqlite3.OperationalError("database or disk is full"))
    assert code == ExitCode.DISK_FULL


def test_a_lost_prefect_api_is_not_called_a_lost_mlflow_server(monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4299/api")
    try:
        httpx.get("http://127.0.0.1:9/api/health", timeout=2)
    except httpx.ConnectError as err:
        lost = err
    code, said = _classify(lost)
    assert code == ExitCode.PREFECT_UNREACHABLE and "Prefect API at http://127.0.0.1:4299" in said


def test_a_lost_tracking_server_is_named_with_its_address():
    try:
        requests.get("http://127.0.0.1:9/api/2.0/mlflow/experiments/list", timeout=2)
    except requests.ConnectionError as err:
        lost = err
    code, said = _classify(lost)
    assert code == ExitCode.TRACKING_UNREACHABLE
    assert "MLflow tracking server at http://127.0.0.1:5999 is unreachable" in said


def test_a_stop_signal_is_named_and_exits_143():
    code, said = _classify(Terminated("signal SIGTERM"))
    assert code == ExitCode.TERMINATED == 143 and "stopped by signal SIGTERM" in said


def test_prefects_own_termination_signal_is_a_stop_too():
    """While a flow runs, Prefect's engine holds SIGTERM and raises its TerminationSignal
    in place of ours: the run is still closed KILLED and the exit says SIGTERM."""
    from prefect.exceptions import TerminationSignal

    code, said = _classify(TerminationSignal(signal.SIGTERM))
    assert code == ExitCode.TERMINATED and "stopped by signal SIGTERM" in said
    assert is_stop(TerminationSignal(signal.SIGTERM)) and is_stop(KeyboardInterrupt())
    wrapped = RuntimeError("task crashed")
    wrapped.__cause__ = TerminationSignal(signal.SIGTERM)
    assert is_stop(wrapped) and not is_stop(RuntimeError("a real failure"))
    assert _classify(KeyboardInterrupt())[0] == ExitCode.TERMINATED


def test_anything_else_is_an_internal_error_pointing_at_verbose():
    code, said = _classify(ZeroDivisionError("division by zero"))
    assert code == ExitCode.FAILED and "--verbose" in said and "ZeroDivisionError" in said


def test_a_review_error_is_one_line_without_the_engine_traceback(capfd):
    assert main(["review", "approve", "999"]) == 2
    err = capfd.readouterr().err
    assert "has no version '999'" in err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("quantrec:"), err


def test_verbose_shows_the_engine_traceback(tmp_path):
    """In its own process, as a user runs it: the same answer, with the traceback."""
    env = {**os.environ, "QUANTREC_HOME": str(tmp_path / "home")}
    quantrec = str(Path(sys.executable).parent / "quantrec")
    done = subprocess.run(
        [quantrec, "--verbose", "review", "approve", "999"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2 and "Traceback" in done.stderr
    assert done.stderr.rstrip().splitlines()[-1].startswith("quantrec: model")


def test_sigterm_becomes_terminated_in_the_main_thread():
    from quantrec.flows.errors import stop_on_sigterm

    previous = signal.getsignal(signal.SIGTERM)
    stop_on_sigterm()
    try:
        with pytest.raises(Terminated, match="SIGTERM"):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the handler runs between bytecodes of the main thread
                pass
    finally:
        signal.signal(signal.SIGTERM, previous)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    "argv",
    [["review", "list"], ["promote", "1", "--reason", "hotfix"], ["review", "approve", "1"]],
)
def test_a_lost_tracking_server_during_review_is_named_not_called_a_missing_version(
    argv, monkeypatch, capfd
):
    uri = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    assert main(argv) == ExitCode.TRACKING_UNREACHABLE
    err = capfd.readouterr().err
    assert f"MLflow tracking server at {uri} is unreachable" in err, err
    assert "has no version" not in err and "no registered model" not in err
