"""Drift levels of a shipped feed's days, with and without day-to-day calibration.

    python -m quantrec.benchmarks.drift_levels --feed movielens
    python -m quantrec.benchmarks.drift_levels --feed synthetic --scenario sudden --shift-date D
    python -m quantrec.benchmarks.drift_levels --feed table --spec ratings.toml

Every day after the first ``window_days`` is measured against the trailing training window
(the reference a first run uses; later runs use the champion's window, which is the same
days when the champion is a day old), with the config's thresholds: "before" with
``day_to_day_margin = 0`` (fixed thresholds), "after" with the configured margin (each
deciding threshold at least margin x what the window's own days show against the rest).
Prints the count of ok / warn / severe days, the share of severe days and the most frequent
severe reasons. Data drift only: prediction drift needs a champion's scores.
"""

from __future__ import annotations

import argparse
import collections
import json
import time
from datetime import date, timedelta

import pandas as pd

from quantrec.data_checks.drift import calibrated, measure
from quantrec.data_checks.drift_profile import DriftProfile
from quantrec.models.lifecycle import training_window
from quantrec.tasks.config import QuantrecConfig

SYNTHETIC_START, SYNTHETIC_DAYS = date(2026, 3, 1), 14


def _config(args: argparse.Namespace) -> QuantrecConfig:
    options = {
        "scenario": args.scenario,
        "shift_date": args.shift_date,
        "rows_per_day": args.rows,
        "spec": args.spec,
    }
    return QuantrecConfig().with_feed(args.feed, **options)


def levels(config: QuantrecConfig, margin: float) -> dict:
    """The feed's days measured with ``day_to_day_margin = margin``."""
    source = config.feed.build(SYNTHETIC_START)
    days = source.available_days() or [
        SYNTHETIC_START + timedelta(days=k) for k in range(SYNTHETIC_DAYS)
    ]
    schema, window_days = source.schema(), config.training.window_days
    thresholds = config.drift.model_copy(update={"day_to_day_margin": margin})
    frames: dict[date, pd.DataFrame | None] = {}

    def day(d: date) -> pd.DataFrame | None:
        if d not in frames:
            try:
                frames[d] = source.day(d)
            except Exception:  # noqa: BLE001 - a day the feed skips (too few rows)
                frames[d] = None
        return frames[d]

    counts, reasons, seconds, severe_days = collections.Counter(), collections.Counter(), 0.0, []
    for run_date in days[window_days:]:
        window = [
            w for w in (day(x) for x in training_window(run_date, window_days)) if w is not None
        ]
        if not window or day(run_date) is None:
            continue
        started = time.perf_counter()
        profile = DriftProfile.build(pd.concat(window, ignore_index=True), schema)
        if margin:
            profile = calibrated(profile, window, schema)
        report = measure(profile, day(run_date), schema, thresholds=thresholds)
        seconds += time.perf_counter() - started
        counts[report.level] += 1
        if report.level == "severe":
            severe_days.append(run_date.isoformat())
        for reason in report.reasons:
            if reason.level == "severe":
                reasons[f"{reason.statistic} {reason.feature or ''}".strip()] += 1
    measured = sum(counts.values())
    return {
        "margin": margin,
        "days": measured,
        **{level: counts[level] for level in ("ok", "warn", "severe")},
        "severe_share": counts["severe"] / measured if measured else float("nan"),
        "seconds_per_day": seconds / measured if measured else float("nan"),
        "severe_reasons": dict(reasons.most_common(4)),
        "severe_days": severe_days[:10],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feed", default="movielens", choices=["synthetic", "movielens", "table"])
    parser.add_argument("--scenario", choices=["stable", "gradual", "sudden"])
    parser.add_argument("--shift-date", type=date.fromisoformat)
    parser.add_argument("--rows", type=int, help="rows per synthetic day (default 20000)")
    parser.add_argument("--spec", help="table feed: the TOML mapping file")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.feed == "synthetic" and args.rows is None:
        args.rows = 20_000
    config = _config(args)
    rows = [levels(config, 0.0), levels(config, config.drift.day_to_day_margin)]
    if args.json:
        print(json.dumps({"feed": args.feed, "scenario": args.scenario, "runs": rows}, indent=1))
        return 0
    print(f"feed {args.feed} {args.scenario or ''}".strip())
    print(f"{'thresholds':<24}{'days':>6}{'ok':>6}{'warn':>6}{'severe':>8}{'share':>8}  reasons")
    for label, row in zip(("fixed (before)", "day-to-day (after)"), rows, strict=True):
        print(
            f"{label:<24}{row['days']:>6}{row['ok']:>6}{row['warn']:>6}{row['severe']:>8}"
            f"{row['severe_share']:>8.2f}  {row['severe_reasons']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
