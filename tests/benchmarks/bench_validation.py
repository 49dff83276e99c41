"""Benchmark: validate one day of 1M rows x 40 columns against the contract and a reference.

    python tests/benchmarks/bench_validation.py [--rows 1000000] [--repeats 3]

Target (data issue): at most 10 s on the 2-core machine, the reference suite included.
Prints the contract alone and the full validation side by side, best of ``--repeats``
(GX's import and first context are paid by a warm-up on a small frame, as in a
long-running worker). Not collected by pytest: its name does not start with ``test_``.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, date, datetime, timedelta

import numpy as np

from quantrec.data_checks.contract import build_suite, validate_day
from quantrec.data_checks.partition import validate_partition
from quantrec.data_checks.reference import build_reference_suite, profile_reference
from quantrec.feeds.synthetic import SyntheticFeed

DAY = date(2024, 2, 8)


def _with_time(frame, day: date):
    midnight = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
    return frame.assign(ts=midnight + np.random.default_rng(0).integers(0, 86_400, len(frame)))


def _best(repeats: int, run) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    feed = SyntheticFeed(seed=3, rows_per_day=args.rows)
    schema = feed.schema().model_copy(update={"timestamp": "ts"})
    window = [DAY - timedelta(days=k) for k in (2, 1)]
    start = time.perf_counter()
    profile = profile_reference([_with_time(feed.day(d), d) for d in window], schema)
    frame = _with_time(feed.day(DAY), DAY)
    print(
        f"data: {len(frame):,} rows x {frame.shape[1]} columns "
        f"(+ 2 reference days) in {time.perf_counter() - start:.1f} s"
    )
    start = time.perf_counter()
    contract = build_suite(schema)
    suite = build_reference_suite(profile, schema)
    print(
        f"suites: {len(contract.expectations)} contract and {len(suite.expectations)} "
        f"reference expectations built in {time.perf_counter() - start:.1f} s"
    )
    validate_day(frame.iloc[:1000], schema, source="warm-up", suite=contract)  # GX import
    base = _best(args.repeats, lambda: validate_day(frame, schema, source="bench", suite=contract))
    report = None

    def full() -> None:
        nonlocal report
        now = datetime(2024, 2, 9, tzinfo=UTC)
        report = validate_partition(
            frame, schema, source="bench", day=DAY, profile=profile, suite=suite, now=now
        )

    total = _best(args.repeats, full)
    print(f"contract only (validate_day):            {base:6.2f} s")
    print(
        f"contract + reference + pandas checks:    {total:6.2f} s "
        f"({total / base:.2f}x; {len(report.checks)} checks, passed={report.passed})"
    )
    verdict = "within" if total <= 10.0 else "OVER"
    print(f"target <= 10 s for 1M x 40: {verdict} ({total:.2f} s)")


if __name__ == "__main__":
    main()
