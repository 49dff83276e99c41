"""What a failed ``quantrec`` command says: one paragraph naming what happened, and its exit
status; the traceback only with ``--verbose``.

``classify`` reads the exception chain (the flow engine wraps what a task raised) and tells
apart, in this order: a stop signal (SIGTERM, Ctrl-C), a full disk, an unreachable Prefect
API, an unreachable MLflow tracking server. Anything else is an internal error. Every
paragraph says what state is left: nothing promoted, the champion unchanged, and how to go on
(a rerun resumes the finished stages).
"""

from __future__ import annotations

import errno
import logging
import os
import signal
from collections.abc import Iterator
from enum import IntEnum


class ExitCode(IntEnum):
    """What ``quantrec`` exits with."""

    OK = 0
    FAILED = 1  # an internal error (the paragraph names it; --verbose gives the traceback)
    BAD_INPUT = 2  # config, data, spec or review input that cannot apply; tampered files
    STOPPED = 3  # a day stopped before training: bad or missing data, quarantined
    RUN_IN_PROGRESS = 4  # another process runs the same model and date
    TRACKING_UNREACHABLE = 5  # the MLflow tracking server did not answer
    DISK_FULL = 6  # no space left where the home, the lake or the store writes
    PREFECT_UNREACHABLE = 7  # the Prefect API (PREFECT_API_URL) did not answer
    TERMINATED = 143  # stopped by SIGTERM or Ctrl-C (128 + SIGTERM)


EPILOG = "exit status: " + ", ".join(
    f"{c.value} {c.name.lower().replace('_', ' ')}" for c in ExitCode
)

LEFT = "Nothing was promoted; the champion is unchanged"
RESUME = "rerun the same command: finished stages are resumed"


class Terminated(BaseException):
    """The process was asked to stop (SIGTERM). A BaseException, as KeyboardInterrupt is,
    so that no ``except Exception`` in a library swallows it and the flow closes its run."""


def stop_on_sigterm() -> None:
    """Turn SIGTERM into ``Terminated``, raised where the process is, so the run being
    written is closed (``KILLED``) instead of the process vanishing mid-write."""

    def handler(signum, frame):  # noqa: ARG001 - the signal module's signature
        raise Terminated(f"signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, handler)


class _NoEngineTracebacks(logging.Filter):
    """Drops the flow engine's report of an exception the CLI reports itself (its traceback,
    the "Finished in state Failed" or "Crashed" line, a stop's "Crash detected!"); every
    other record passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("prefect"):
            return True
        message = record.getMessage()
        if record.exc_info or message.startswith(_ENGINE_REPORTS):
            return False
        return not any(f"Finished in state {state}" in message for state in ("Failed", "Crashed"))


# How the engine's own reports of a failed or stopped run begin.
_ENGINE_REPORTS = ("Encountered exception during execution", "Crash detected!")


_QUIET = _NoEngineTracebacks()


def quiet_engine_tracebacks() -> None:
    """Install ``_NoEngineTracebacks`` on the console handlers Prefect configured."""
    import prefect.main  # noqa: F401 - configures Prefect's logging on import
    from prefect.logging.handlers import PrefectConsoleHandler

    for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, PrefectConsoleHandler) and _QUIET not in handler.filters:
                handler.addFilter(_QUIET)


def _chain(err: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def _disk_full(err: BaseException) -> bool:
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(err).lower()
    return "database or disk is full" in text or "no space left on device" in text


def _prefect_lost(err: BaseException) -> bool:
    import httpx

    if isinstance(err, (httpx.ConnectError, httpx.ConnectTimeout, httpx.ReadTimeout)):
        return True
    return isinstance(err, RuntimeError) and "failed to reach api" in str(err).lower()


def _mlflow_lost(err: BaseException) -> bool:
    import requests
    import urllib3

    return isinstance(
        err,
        (
            requests.exceptions.ConnectionError,
            requests.exceptions.Timeout,
            urllib3.exceptions.MaxRetryError,
            urllib3.exceptions.NewConnectionError,
            ConnectionRefusedError,
            ConnectionResetError,
            ConnectionAbortedError,
        ),
    )


def is_stop(err: BaseException) -> bool:
    """Whether ``err`` or an exception in its chain says the process was asked to stop:
    ``Terminated``, Ctrl-C, or Prefect's ``TerminationSignal`` (the flow engine puts its
    own SIGTERM handler in place while a flow runs)."""
    from prefect.exceptions import TerminationSignal

    return any(
        isinstance(e, (Terminated, KeyboardInterrupt, TerminationSignal)) for e in _chain(err)
    )


def is_unreachable(err: BaseException) -> bool:
    """Whether ``err`` or an exception in its chain is a failed MLflow connection."""
    return any(_mlflow_lost(e) for e in _chain(err))


def classify(err: BaseException, *, tracking_uri: str, home: str) -> tuple[ExitCode, str]:
    """(exit status, the paragraph) for an exception no handler turned into an answer."""
    chain = list(_chain(err))
    brief = f"{type(err).__name__}: {str(err)[:300]}"
    if is_stop(err):
        what = next(
            (str(e) for e in chain if isinstance(e, Terminated)),
            "signal SIGTERM"
            if not any(isinstance(e, KeyboardInterrupt) for e in chain)
            else "Ctrl-C",
        )
        return ExitCode.TERMINATED, (
            f"quantrec: stopped by {what}. {LEFT}; the interrupted run is closed as KILLED "
            f"(or, if the stop came mid-write, by the next run). To go on, {RESUME}."
        )
    if full := next((e for e in chain if _disk_full(e)), None):
        return ExitCode.DISK_FULL, (
            f"quantrec: no space left on the disk ({type(full).__name__}: {str(full)[:200]}). "
            f"The home is {home}. {LEFT}; raw data and the stores are as they were before the "
            f"failed write. Free space (`quantrec gc` removes what no run needs), then {RESUME}."
        )
    if any(_prefect_lost(e) for e in chain):
        api = os.environ.get("PREFECT_API_URL", "the ephemeral server")
        return ExitCode.PREFECT_UNREACHABLE, (
            f"quantrec: the Prefect API at {api} is unreachable ({brief}). {LEFT}. Start the "
            f"Prefect server (or unset PREFECT_API_URL for the embedded one), then {RESUME}."
        )
    if is_unreachable(err):
        return ExitCode.TRACKING_UNREACHABLE, (
            f"quantrec: the MLflow tracking server at {tracking_uri} is unreachable ({brief}). "
            f"{LEFT}. Start the server (or unset MLFLOW_TRACKING_URI for the embedded store), "
            f"then {RESUME}."
        )
    root = chain[-1]  # what went wrong first; the rest of the chain wraps it
    where = f" (raised as {type(err).__name__})" if root is not err else ""
    return ExitCode.FAILED, (
        f"quantrec: internal error, {type(root).__name__}: {str(root)[:300]}{where}. {LEFT}. "
        "Run again with --verbose for the traceback, and report it with that output."
    )
