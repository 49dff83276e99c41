"""One run of a (model, run date) at a time: on one machine, and across machines.

The file lock (``settings.run_date_lock``) keeps processes on one home apart; it is all the
embedded default (no ``PREFECT_API_URL``, a temporary Prefect server per command) needs.
Workers on other machines share no file, only the Prefect server, so with a server the run
also holds the single slot of the Prefect global concurrency limit
``quantrec-run:<model>:<date>`` (limit 1, created on first use; one small row per date).

A slot is a lease its holder renews in the background. A run killed with SIGKILL cannot
release it: the lease lapses after ``LEASE_S`` and the server's repossessor (every 15 s)
frees the slot, so a rerun with ``wait`` starts within about ``LEASE_S + 15`` seconds and a
rerun without it is refused until then, saying so. A holder that cannot renew its lease
stops (``strict``) rather than risk a second run entering beside it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists

from quantrec.tasks.settings import RunInProgressError, run_date_lock

LEASE_S = 60.0  # the shortest lease the Prefect server grants
REFUSE_AFTER_S = 5.0  # without ``wait``: how long a taken slot is retried before refusing
WAIT_S = 6 * 3600.0  # with ``wait``: as long as the file lock waits


def limit_name(model_name: str, run_date: date) -> str:
    """The global concurrency limit of one model and run date."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_name)
    return f"quantrec-run:{safe}:{run_date.isoformat()}"


def uses_prefect_server() -> bool:
    """Whether runs report to a Prefect server that other machines may share."""
    return bool(os.environ.get("PREFECT_API_URL"))


@contextmanager
def run_slot(model_name: str, run_date: date, *, wait: bool = False) -> Iterator[None]:
    """Hold the file lock of (model, run date) and, with a Prefect server, its global slot.

    Raises:
        RunInProgressError: another run holds either and ``wait`` is False (or the wait
            timed out).
    """
    with run_date_lock(model_name, run_date, wait=wait, timeout_s=WAIT_S):
        if not uses_prefect_server():
            yield
            return
        with _global_slot(limit_name(model_name, run_date), wait=wait):
            yield


def ensure_limit(name: str) -> None:
    """Create the limit with one slot unless it exists (another worker may race us)."""
    with get_client(sync_client=True) as client:
        try:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
        except ObjectAlreadyExists:
            pass


@contextmanager
def _global_slot(name: str, *, wait: bool) -> Iterator[None]:
    ensure_limit(name)
    # Prefect logs a taken slot's timeout as an ERROR with its internals; the refusal below
    # says what happened and what to do. Quiet while acquiring only, never during the run.
    logger = logging.getLogger("prefect._internal.concurrency")
    level = logger.level
    if not wait:
        logger.setLevel(logging.CRITICAL)
    acquired = False
    try:
        with concurrency(
            name,
            occupy=1,
            timeout_seconds=WAIT_S if wait else REFUSE_AFTER_S,
            lease_duration=LEASE_S,
            strict=True,
        ):
            logger.setLevel(level)
            acquired = True
            yield
    except TimeoutError:
        if acquired:  # raised by the run itself, not by the acquisition
            raise
        raise RunInProgressError(
            f"the Prefect concurrency limit {name!r} is held: another worker is running this "
            f"model and run date; wait for it to finish, or rerun with --wait (wait=true) to "
            f"queue behind it (a killed run's slot frees itself within {LEASE_S + 15:.0f} s)"
        ) from None
    finally:
        logger.setLevel(level)
