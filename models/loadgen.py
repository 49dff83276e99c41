"""A bounded open-loop Poisson load generator with one thread per pipeline stage.

``run_load(steps, requests, settings)``:

1. Arrivals: query i is due at ``t0 + a_i``, the ``a_i`` the cumulative sums of
   exponential gaps of mean ``1 / rate_qps`` drawn from ``settings.seed`` (a Poisson
   process). They are drawn before the run, so *how many* queries a run issues is fixed by
   the settings: those due within ``max_seconds``, at most ``max_queries``.
2. The calling thread issues each query at its due time into the first stage's queue,
   cycling through ``requests``. Stage j runs in its own thread: it takes a query from its
   queue, calls ``steps[j]`` on it and puts the result in the next queue, so a query's
   stages overlap with other queries' (on a 2-core machine, two stages really run at once:
   torch releases the GIL in its kernels).
3. Latency of a query: its completion time minus its *due* time, not the time it was
   enqueued, so a late generator does not hide queueing delay (coordinated omission).
4. Bounds: nothing is issued after ``max_seconds``; a query still waiting for a stage after
   ``t0 + max_seconds`` is abandoned there (a stage never interrupts a call it started), so
   a run lasts at most ``max_seconds`` plus one call of each stage. Every issued query is
   counted once, completed or abandoned.

Throughput is completed queries over the time from the first due time to the last
completion. Offer a rate above the pipeline's capacity to read its capacity; below it, the
latency percentiles are the service time plus the queueing a Poisson stream causes.
Pure Python threads and queues: nothing here knows about models.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

_DONE = object()  # end of the stream, passed down the stages


class LoadError(RuntimeError):
    """A load run could not be carried out: bad settings, or a stage raised."""


@dataclass(frozen=True)
class LoadSettings:
    """One bounded run.

    Attributes:
        rate_qps: mean arrival rate, queries per second (> 0).
        max_queries: most queries issued (>= 1).
        max_seconds: wall-time bound of the run (> 0), see the module docstring.
        seed: the arrival times' seed.
    """

    rate_qps: float
    max_queries: int
    max_seconds: float
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.rate_qps > 0:
            raise LoadError(f"rate_qps must be > 0, got {self.rate_qps}")
        if self.max_queries < 1:
            raise LoadError(f"max_queries must be at least 1, got {self.max_queries}")
        if not self.max_seconds > 0:
            raise LoadError(f"max_seconds must be > 0, got {self.max_seconds}")

    def arrivals(self) -> np.ndarray:
        """float64 (Q,) due times in seconds after the start, Q = the queries issued."""
        rng = np.random.default_rng(self.seed)
        due = np.cumsum(rng.exponential(1.0 / self.rate_qps, self.max_queries))
        return due[due <= self.max_seconds]


@dataclass(frozen=True)
class LoadResult:
    """What one bounded run measured.

    Attributes:
        rate_qps: the offered rate.
        issued, completed, abandoned: query counts (issued = completed + abandoned).
        latencies_ms: float64 (completed,) per completed query, in query order.
        completed_ids: int64 (completed,) which queries completed (each once).
        elapsed_s: first due time to last completion (0 when none completed).
        wall_s: the whole run, start to the last stage thread's exit.
    """

    rate_qps: float
    issued: int
    completed: int
    abandoned: int
    latencies_ms: np.ndarray
    completed_ids: np.ndarray
    elapsed_s: float
    wall_s: float

    def percentile_ms(self, q: float) -> float:
        """The q-th percentile (0-100) of the completed queries' latency; NaN if none."""
        if not self.completed:
            return float("nan")
        return float(np.percentile(self.latencies_ms, q))

    @property
    def queries_per_s(self) -> float:
        return self.completed / self.elapsed_s if self.elapsed_s > 0 else 0.0


def run_load(
    steps: Sequence[Callable[[Any], Any]], requests: Sequence[Any], settings: LoadSettings
) -> LoadResult:
    """Offer ``requests`` (cycled) to the stages ``steps`` as a Poisson stream.

    Args:
        steps: one callable per stage; stage 0 gets a request, stage j the result of j - 1.
        requests: at least one.

    Raises:
        LoadError: a stage raised (the first error, after every thread has stopped).
    """
    if not steps:
        raise LoadError("run_load needs at least one stage")
    if not requests:
        raise LoadError("run_load needs at least one request")
    due = settings.arrivals()
    queues = [queue.SimpleQueue() for _ in range(len(steps) + 1)]
    finished = np.full(len(due), np.nan)
    abandoned = np.zeros(len(due), dtype=bool)
    errors: list[BaseException] = []
    start = time.perf_counter()
    deadline = start + settings.max_seconds

    def serve(stage: int) -> None:
        inbox, outbox, step = queues[stage], queues[stage + 1], steps[stage]
        while True:
            item = inbox.get()
            if item is _DONE:
                outbox.put(_DONE)
                return
            query, work = item
            if errors or time.perf_counter() > deadline:
                abandoned[query] = True
                continue
            try:
                result = step(work)
            except BaseException as err:  # noqa: BLE001 - re-raised in the caller
                errors.append(err)
                abandoned[query] = True
                continue
            if stage == len(steps) - 1:
                finished[query] = time.perf_counter()
            else:
                outbox.put((query, result))

    threads = [
        threading.Thread(target=serve, args=(j,), name=f"stage-{j}", daemon=True)
        for j in range(len(steps))
    ]
    for thread in threads:
        thread.start()
    for query, offset in enumerate(due):
        wait = start + offset - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        queues[0].put((query, requests[query % len(requests)]))
    queues[0].put(_DONE)
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    if errors:
        raise LoadError(f"a stage raised during the load run: {errors[0]!r}") from errors[0]
    done = np.flatnonzero(~np.isnan(finished))
    latencies = (finished[done] - (start + due[done])) * 1e3
    elapsed = float(finished[done].max() - (start + due[0])) if done.size else 0.0
    return LoadResult(
        rate_qps=settings.rate_qps,
        issued=len(due),
        completed=int(done.size),
        abandoned=int(abandoned.sum()),
        latencies_ms=latencies,
        completed_ids=done.astype(np.int64),
        elapsed_s=elapsed,
        wall_s=wall,
    )
