"""Benchmark: measure drift of one day of 1M rows x 40 columns against a saved profile.

    python tests/benchmarks/bench_drift.py [--rows 1000000] [--reference-days 1] [--repeats 3]

Target (issue 5): ``measure`` at most 5 s on the 2-core machine for 1M rows x (13 dense +
26 categorical, vocabularies up to 50k Zipf ids + label). Prints, best of ``--repeats``:
building the profile (once per champion, timed apart), saving and loading it, ``measure``
with champion scores, and ``measure`` on a profile rebuilt from the raw window on every
call beside it, with the ratio. The data comes from the synthetic feed's
sudden scenario (the measured day is the shift day, so OOV and re-ranked heads are
exercised). Not collected by pytest: its name does not start with ``test_``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import date, timedelta

import numpy as np
import pandas as pd

from quantrec.data_checks.drift import DriftProfile, measure
from quantrec.feeds.synthetic import SyntheticFeed

SHIFT = date(2024, 2, 8)


def _best(repeats: int, run) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return min(times), result


def _scores(frame: pd.DataFrame) -> np.ndarray:
    """A stand-in champion: a fixed logistic function of two inputs (only its spread matters)."""
    x = 0.3 * np.log1p(frame.dense_0.to_numpy()) - 0.2 * np.log1p(frame.dense_2.to_numpy())
    return 1.0 / (1.0 + np.exp(3.5 - x - 1e-5 * frame.cat_4.to_numpy()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reference-days", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    feed = SyntheticFeed(seed=3, rows_per_day=args.rows, scenario="sudden", shift_date=SHIFT)
    schema = feed.schema()
    start = time.perf_counter()
    days = [SHIFT - timedelta(days=k) for k in range(args.reference_days, 0, -1)]
    window = pd.concat([feed.day(d) for d in days], ignore_index=True)
    day = feed.day(SHIFT)
    window_scores, day_scores = _scores(window), _scores(day)
    print(
        f"data: day {len(day):,} rows x {day.shape[1]} columns, window {len(window):,} "
        f"rows ({args.reference_days} day(s)), made in {time.perf_counter() - start:.1f} s"
    )

    build_s, profile = _best(
        args.repeats,
        lambda: DriftProfile.build(window, schema, scores=window_scores, source={"bench": True}),
    )
    vocab = sum(p.vocabulary.size for p in profile.categorical.values())
    print(f"build profile:          {build_s:6.2f} s  ({vocab:,} vocabulary ids in all)")
    with tempfile.TemporaryDirectory() as tmp:
        save_s, _ = _best(args.repeats, lambda: profile.save(tmp))
        load_s, loaded = _best(args.repeats, lambda: DriftProfile.load(tmp))
    print(f"save / load profile:    {save_s:6.2f} s / {load_s:.2f} s")
    measure_s, report = _best(args.repeats, lambda: measure(loaded, day, schema, scores=day_scores))
    print(
        f"measure (target <= 5 s): {measure_s:5.2f} s  -> level {report.level}, "
        f"dataset drift share {report.dataset_drift_share:.2f}, "
        f"prediction PSI {report.prediction_psi:.3f}, {len(report.to_metrics())} metrics"
    )
    rebuild_s, _ = _best(
        args.repeats, lambda: measure(DriftProfile.build(window, schema), day, schema)
    )
    print(
        f"measure on a rebuilt profile (each call): {rebuild_s:.2f} s, "
        f"{rebuild_s / measure_s:.1f}x the time of measure on a saved profile"
    )


if __name__ == "__main__":
    main()
