"""The precision search with its per-unit sensitivity measurements on a Dask task runner
against the sequential search, on the same trained model and rows.

    nice -n 10 python -m quantrec.benchmarks.dask_search [--rows-per-day 3000] [--days 2]
                                                         [--workers 2] [--json]

The lifecycle's default fp32 DLRM of the synthetic feed is trained as ``benchmarks.codec``
trains it; then ``models.lifecycle.search_plan`` runs twice in this process, with the daily
candidates and one torch thread: sequentially, and with ``[scale] task_runner = "dask"``
(``tasks.fanout``: a LocalCluster of ``--workers`` processes x 1 thread, started inside the
timed search as a run starts it). Printed: each wall time, their ratio, and whether the two
searches' records (search.json, less the latencies) and plans (plan.json) are identical,
byte for byte. Finalists within 1 % of bytes are told apart by measured latency, so on
such a day the two plans may differ by that choice alone; the record says so.

Task runs need a Prefect API: ``PREFECT_API_URL`` when set, else a temporary server.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

from prefect import flow

from quantrec.benchmarks.codec import train_model
from quantrec.models.lifecycle import search_plan
from quantrec.models.search import LINEAR_CANDIDATES, TABLE_CANDIDATES
from quantrec.tasks.config import ScaleConfig
from quantrec.tasks.fanout import sensitivity_measure


@flow(name="dask-search-benchmark")
def _search(trained, scale: ScaleConfig) -> tuple[float, object]:
    started = time.perf_counter()
    choice = search_plan(
        trained,
        reason="benchmark",
        budget_rel=0.0005,
        linear_candidates=LINEAR_CANDIDATES,
        table_candidates=TABLE_CANDIDATES,
        batch_size=8192,
        threads=1,
        measure=sensitivity_measure(scale, threads=1),
    )
    return time.perf_counter() - started, choice


def _without_latency(body: dict) -> str:
    for name in ("chosen", "ranked", "greedy"):
        body[name]["latency_ms"] = None
    return json.dumps(body, sort_keys=True)


def run(*, rows_per_day: int, days: int, workers: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        trained, _ = train_model(rows_per_day=rows_per_day, days=days, folder=Path(folder))
    sequential_s, sequential = _search(trained, ScaleConfig())
    dask_s, dask = _search(trained, ScaleConfig(task_runner="dask", dask_workers=workers))
    record_same = _without_latency(dask.result.to_dict()) == _without_latency(
        sequential.result.to_dict()
    )
    return {
        "rows_per_day": rows_per_day,
        "days": days,
        "units": len(sequential.plan.units),
        "sensitivity_rows": len(sequential.result.sensitivity),
        "dask_workers": workers,
        "sequential_s": round(sequential_s, 1),
        "dask_s": round(dask_s, 1),
        "dask_over_sequential": round(dask_s / sequential_s, 2),
        "same_sensitivity": dask.result.sensitivity == sequential.result.sensitivity,
        "same_record_less_latency": record_same,
        "same_plan_json": dask.plan.to_json() == sequential.plan.to_json(),
        "same_precisions": dask.plan.precisions() == sequential.plan.precisions(),
        "chosen_by": [sequential.result.chosen_by, dask.result.chosen_by],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows-per-day", type=int, default=3000)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if os.environ.get("PREFECT_API_URL"):
        server = nullcontext()
    else:
        from prefect.settings import PREFECT_API_URL
        from prefect.testing.utilities import prefect_test_harness

        server = prefect_test_harness(server_startup_timeout=180)
    with server:
        if not os.environ.get("PREFECT_API_URL"):
            # The Dask workers are new processes: they report to the same server.
            os.environ["PREFECT_API_URL"] = PREFECT_API_URL.value()
        record = run(rows_per_day=args.rows_per_day, days=args.days, workers=args.workers)
    if args.json:
        print(json.dumps(record))
    else:
        for key, value in record.items():
            print(f"{key:>26}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
