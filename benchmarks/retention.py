"""Disk use of a home after a replay, with and without the registry's retention policy.

    python -m quantrec.benchmarks.retention [--days 30] [--rows 20000] [--keep-days 7]

One replay of ``--days`` synthetic run dates into a temporary home with retention off (every
version of every day kept), then ``quantrec gc --keep-days K`` on it: the policy's final
state is the same as with retention on after every run (what it keeps depends on the
registry as it stands, not on when it runs). Prints the versions and the bytes of the home,
of the MLflow artifact store and of the lake, before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

START = date(2026, 1, 1)


def _bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def _measure(home: Path, client, model_name: str) -> dict:
    versions = client.search_model_versions(f"name='{model_name}'")
    return {
        "versions": len(versions),
        "home_mib": _bytes(home) / 2**20,
        "artifacts_mib": _bytes(home / "mlartifacts") / 2**20,
        "lake_mib": _bytes(home / "lake") / 2**20,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--keep-days", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="quantrec-retention-") as tmp:
        home = Path(tmp) / "home"
        os.environ["QUANTREC_HOME"] = str(home)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        from quantrec.tasks.settings import prepare_process_environment

        prepare_process_environment()
        from quantrec.flows.backfill import backfill
        from quantrec.tasks.config import QuantrecConfig
        from quantrec.tasks.retention import collect
        from quantrec.tasks.tracking import connect

        config = QuantrecConfig().with_overrides(
            feed={"rows_per_day": args.rows}, registry={"retention": False}
        )
        started = time.perf_counter()
        end = START + timedelta(days=args.days - 1)
        backfill(START, end, config)
        replay_s = time.perf_counter() - started
        _, client = connect()
        name = config.registry.model_name
        before = _measure(home, client, name)
        started = time.perf_counter()
        done = collect(name, keep_days=args.keep_days)
        gc_s = time.perf_counter() - started
        after = _measure(home, client, name)
    result = {
        "days": args.days,
        "rows_per_day": args.rows,
        "keep_days": args.keep_days,
        "replay_s": replay_s,
        "gc_s": gc_s,
        "without_retention": before,
        "with_retention": after,
        "deleted_versions": len(done.deleted),
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(
        f"{args.days} run dates of {args.rows} rows, keep_days {args.keep_days} "
        f"(replay {replay_s / 60:.1f} min, gc {gc_s:.1f} s)"
    )
    print(f"{'':<20}{'versions':>10}{'home MiB':>10}{'artifacts MiB':>15}{'lake MiB':>10}")
    for label, row in (("without retention", before), ("with retention", after)):
        print(
            f"{label:<20}{row['versions']:>10}{row['home_mib']:>10.1f}"
            f"{row['artifacts_mib']:>15.1f}{row['lake_mib']:>10.1f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
