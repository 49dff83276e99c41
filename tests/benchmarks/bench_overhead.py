"""Benchmark: what Prefect and MLflow add to a run date, against the stages' own time.

    python tests/benchmarks/bench_overhead.py [--rows 1000000] [--window-days 1] [--seed 0]
                                              [--quick-search]

Target (issue 6): the daily flow at most 5 % slower than its pure core. One run of
``flows.daily_lifecycle.daily_lifecycle`` on a fresh ``$QUANTREC_HOME`` (every default but
``feed.rows_per_day`` and ``training.window_days``), with the embedded SQLite MLflow store
and Prefect's ephemeral server (or ``$PREFECT_API_URL``). Every stage times its core call
alone and logs it as ``time.<stage>_s`` (``tasks.tracking.stage_timer``): ingest,
validate, drift, train, reference, search, quantize, baselines, evaluate, gate: the work
through ``feeds/``, ``data_checks/`` and ``models/`` that any way of running the lifecycle
does. The flow's wall time less their sum is the overhead measured: task runs, result
persistence, MLflow runs, metrics, datasets, artifacts, model registrations, aliases, the
run report and the summaries. There is no second copy of the lifecycle to keep in step:
the core's figure comes from the same run, on the same rows, in the same process.

One-off costs are paid before the clock starts and said so in the output: the ephemeral
Prefect server's start (a trivial flow runs first) and the creation of the MLflow store.
Not collected by pytest: its name does not start with ``test_``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path

RUN_DATE = date(2026, 3, 10)


@contextmanager
def _clock(into: dict[str, float]):
    """Wall and CPU seconds (this process, all its threads) of the block."""
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        into["wall"] = time.perf_counter() - wall
        into["cpu"] = time.process_time() - cpu


def warm_up_orchestration() -> float:
    """Start Prefect (ephemeral server) and create the MLflow store; seconds it took."""
    from prefect import flow

    from quantrec.tasks.tracking import connect, experiment_id

    @flow(name="bench-warm-up")
    def warm_up() -> int:
        return 1

    started = time.perf_counter()
    warm_up()
    home, client = connect()
    experiment_id(client, home, "quantrec")
    return time.perf_counter() - started


def run_flow(config, run_date: date) -> tuple[dict[str, float], dict, dict[str, float]]:
    """The daily flow for ``run_date``; (wall and CPU seconds, record, its stage timers)."""
    from quantrec.flows.daily_lifecycle import daily_lifecycle
    from quantrec.tasks.tracking import stage_timings

    clock: dict[str, float] = {}
    with _clock(clock):
        outcome = daily_lifecycle(run_date, config)
    timers = {stage: values[0] for stage, values in stage_timings([outcome.mlflow_run_id]).items()}
    return clock, outcome.to_record(), timers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows per synthetic day")
    parser.add_argument("--window-days", type=int, default=1, help="training window (days)")
    parser.add_argument("--seed", type=int, default=0, help="feed seed")
    parser.add_argument(
        "--quick-search",
        action="store_true",
        help="search over fp16 and int8 only (both sides); the default search "
        "is most of a run's time",
    )
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="quantrec-overhead-"))
    # Before anything imports Prefect: its home, the embedded MLflow store, quiet logs.
    os.environ["QUANTREC_HOME"] = str(scratch / "flow-home")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from quantrec.tasks.settings import prepare_process_environment

    prepare_process_environment()
    from quantrec.tasks.config import QuantrecConfig

    quick = {"linear_candidates": ("fp16", "int8"), "table_candidates": ("fp16", "int8")}
    config = QuantrecConfig().with_overrides(
        feed={"rows_per_day": args.rows, "seed": args.seed},
        training={"window_days": args.window_days},
        search=quick if args.quick_search else {},
    )
    window = f"{RUN_DATE - timedelta(days=args.window_days)}..{RUN_DATE - timedelta(days=1)}"
    print(
        f"run date {RUN_DATE}, window {window}: {args.rows:,} synthetic rows a day, "
        f"{args.window_days + 1} day(s) ingested; state in {scratch}",
        flush=True,
    )

    server = "$PREFECT_API_URL" if os.environ.get("PREFECT_API_URL") else "ephemeral server"
    warm = warm_up_orchestration()
    print(
        f"one-off, not timed: Prefect start ({server}) and MLflow store creation {warm:.1f} s",
        flush=True,
    )

    flow, record, timers = run_flow(config, RUN_DATE)
    core = sum(timers.values())
    print(
        f"flow: {flow['wall']:.1f} s wall, {flow['cpu']:.1f} s CPU of this process; "
        f"decision {record['decision']} {record['promoted_variant'] or ''}"
    )
    print(
        f"core (the stages' own timers, {core:.1f} s): "
        + "  ".join(f"{k} {v:.1f}" for k, v in timers.items())
    )
    ratio = flow["wall"] / core
    print(
        f"flow / core, wall = {ratio:.3f}: overhead {100 * (ratio - 1):+.1f} % "
        f"({flow['wall'] - core:+.1f} s; target <= 5 %: "
        f"{'met' if ratio <= 1.05 else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
