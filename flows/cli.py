"""``quantrec``: manual runs, backfills and the demo, from the command line.

The only place that exits the process. Bad input ends in one paragraph on stderr (what,
where, the value, how to fix) and exit status 2; a failed flow run exits 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from datetime import date, timedelta

from quantrec.tasks.settings import prepare_process_environment

DEMO_START = date(2026, 1, 1)
DEMO_DAYS = 10


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date as YYYY-MM-DD, got {text!r}")


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML config file (default: built-in defaults)")
    parser.add_argument("--feed", choices=["synthetic", "movielens", "criteo", "table"],
                        help="where days come from")
    parser.add_argument("--path", help="movielens folder, criteo file or glob, table files")
    parser.add_argument("--spec", help="table feed: the TOML mapping file")
    parser.add_argument("--scenario", choices=["stable", "gradual", "sudden"])
    parser.add_argument("--shift-date", type=_date, help="day the sudden scenario shifts")
    parser.add_argument("--rows", type=int, help="rows per synthetic day")
    parser.add_argument("--json", action="store_true", help="print one JSON record per day")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quantrec", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the daily lifecycle for one date")
    run.add_argument("--date", type=_date, required=True)
    run.add_argument("--force", action="store_true",
                     help="train and register again although this date already ran on the "
                          "same data, config and code")
    run.add_argument("--wait", action="store_true",
                     help="queue behind a run of the same date instead of refusing")
    _add_config_options(run)
    search = commands.add_parser("search", help="run one date with a fresh precision search")
    search.add_argument("--date", type=_date, required=True)
    _add_config_options(search)
    fill = commands.add_parser("backfill", help="run the lifecycle for each day in a range")
    fill.add_argument("--start", type=_date, required=True)
    fill.add_argument("--end", type=_date, required=True)
    _add_config_options(fill)
    demo = commands.add_parser("demo", help=f"backfill {DEMO_DAYS} synthetic days with a shift")
    demo.add_argument("--rows", type=int, default=100_000, help="rows per day")
    demo.add_argument("--days", type=int, default=DEMO_DAYS)
    review = commands.add_parser("review", help="registry review of challengers")
    actions = review.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="pending challengers and their decision records")
    listing.add_argument("--config")
    listing.add_argument("--json", action="store_true")
    approve = actions.add_parser("approve", help="make a challenger the champion")
    approve.add_argument("version")
    approve.add_argument("--reason", default="")
    approve.add_argument("--config")
    reject = actions.add_parser("reject", help="reject a challenger (the champion stays)")
    reject.add_argument("version")
    reject.add_argument("--reason", required=True)
    reject.add_argument("--config")
    rollback = commands.add_parser("rollback", help="point the champion back at 'previous'")
    rollback.add_argument("--reason", default="")
    rollback.add_argument("--config")
    promote = commands.add_parser("promote", help="promote a version the gate did not (override)")
    promote.add_argument("version")
    promote.add_argument("--reason", required=True)
    promote.add_argument("--config")
    schedule = commands.add_parser(
        "schedule", help="serve the deployments here: daily-lifecycle on its cron, backfill "
                         "and quantization-search on demand (Ctrl-C stops)")
    schedule.add_argument("--cron", default=None, help="cron of daily-lifecycle")
    schedule.add_argument("--timezone", default=None, help="IANA timezone of the cron")
    schedule.add_argument("--config", help="TOML config the scheduled runs use")
    report = commands.add_parser(
        "report", help="lifecycle report: NE per day of the frozen int8 model, the daily "
                       "fp32 model and the managed champion (PNG + HTML)")
    report.add_argument("--start", type=_date, required=True)
    report.add_argument("--end", type=_date, required=True)
    report.add_argument("--out", required=True, help="folder to write the report into")
    report.add_argument("--shift-date", type=_date,
                        help="compare the days after this date (default: the config's "
                             "feed.shift_date, else every day)")
    report.add_argument("--config")
    readmit = commands.add_parser("readmit", help="move a quarantined day back into the lake")
    readmit.add_argument("--date", type=_date, required=True)
    commands.add_parser("bench", add_help=False,
                        help="inference benchmark: fp32, fp16, int8, searched side by side; "
                             "--train: training benchmark, naive vs quantrec's trainer")
    show = commands.add_parser("config", help="print the effective configuration")
    show.add_argument("--config")
    return parser


def resolve_config(args: argparse.Namespace):
    from quantrec.tasks.config import load_config

    config = load_config(getattr(args, "config", None))
    feed = {
        "name": getattr(args, "feed", None),
        "scenario": getattr(args, "scenario", None),
        "shift_date": getattr(args, "shift_date", None),
        "rows_per_day": getattr(args, "rows", None),
        "path": getattr(args, "path", None),
        "spec": getattr(args, "spec", None),
    }
    return config.with_overrides(feed=feed)


def print_records(records: list[dict], *, as_json: bool) -> None:
    if as_json:
        for record in records:
            print(json.dumps(record, sort_keys=True))
        return
    print(f"{'date':<11} {'NE fp32':>8} {'NE int8':>8} {'int8 vs fp32':>12} "
          f"{'NE searched':>11} {'searched vs fp32':>16} {'size':>6} {'plan':>8} "
          f"{'NE champion':>11}  {'decision':<17} champion")
    for r in records:
        m = r["metrics"]
        fp32 = m.get("fp32", {}).get("ne")
        int8, searched = m.get("int8", {}).get("ne"), m.get("searched", {}).get("ne")
        sizes = r["bytes"]
        size = f"{sizes['searched'] / sizes['fp32']:.3f}" if "searched" in sizes else "n/a"
        decision = r["decision"] + (f" {r['promoted_variant']}" if r["promoted_variant"] else "")
        print(f"{r['date']:<11} {_f(fp32):>8} {_f(int8):>8} {_delta(int8, fp32):>12} "
              f"{_f(searched):>11} {_delta(searched, fp32):>16} {size:>6} "
              f"{r.get('plan_source') or 'n/a':>8} {_f(m.get('champion', {}).get('ne')):>11}  "
              f"{decision:<17} v{r['champion_version']}")


def _delta(value: float | None, reference: float | None) -> str:
    return "n/a" if value is None or not reference else f"{(value - reference) / reference:+.4%}"


def _f(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def run_demo(args: argparse.Namespace) -> tuple[list[dict], object]:
    """Replay the days in order. Severe drift sends a day's winner to review instead of
    promoting it; the demo plays the reviewer and approves a challenger that passed every
    gate check (and says so), as an on-call engineer would after reading its record."""
    from quantrec.flows.daily_lifecycle import daily_lifecycle
    from quantrec.flows.review import approve_challenger
    from quantrec.tasks.config import QuantrecConfig

    end = DEMO_START + timedelta(days=args.days - 1)
    shift = DEMO_START + timedelta(days=args.days // 2)
    config = QuantrecConfig().with_overrides(
        feed={"scenario": "sudden", "shift_date": shift, "rows_per_day": args.rows}
    )
    print(f"quantrec demo: {args.days} synthetic days from {DEMO_START} to {end}, "
          f"{args.rows} rows a day, a sudden shift on {shift}\n", flush=True)
    records = []
    for k in range(args.days):
        record = daily_lifecycle(DEMO_START + timedelta(days=k), config)
        if record.get("challenger_version"):
            version = record["challenger_version"]
            print(f"demo reviewer: {record['date']} drifted severely; approving challenger "
                  f"version {version} ({record['challenger_variant']}), which passed every "
                  "gate check", flush=True)
            approve_challenger(config.registry.model_name, version,
                               "demo: scripted reviewer approves a challenger that passed "
                               "every gate check")
            record["champion_version"] = version
        records.append(record)
    return records, config


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        if "--train" in argv:
            from quantrec.models.train_bench import main as train_bench

            # naive per-table DLRM vs quantrec's trainer; its own options (--json, --rows ...)
            return train_bench([a for a in argv[1:] if a != "--train"])
        from quantrec.models.inference_bench import main as bench

        bench(argv[1:])  # its own options: --json, --max-rows, --train-rows, --threads
        return 0
    args = build_parser().parse_args(argv)
    home = prepare_process_environment()
    # MLflow announces every registered version on its INFO logger; the records say it.
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    from quantrec.data_checks.schema import SchemaError
    from quantrec.feeds.base import FeedError
    from quantrec.feeds.lake import LakeError
    from quantrec.tasks.config import ConfigError
    from quantrec.tasks.identity import RunInProgressError
    from quantrec.tasks.lifecycle import ReportError
    from quantrec.tasks.review import ReviewError

    try:
        if args.command == "config":
            print(resolve_config(args).model_dump_json(indent=2))
            return 0
        if args.command == "readmit":
            from quantrec.tasks.data import lake

            print(f"re-admitted {args.date}: {lake().readmit(args.date)}")
            return 0
        if args.command == "demo":
            records, config = run_demo(args)
            print_records(records, as_json=False)
            _print_demo_figures(records)
            _write_report(date.fromisoformat(records[0]["date"]),
                          date.fromisoformat(records[-1]["date"]), home.root / "report",
                          config, config.feed.shift_date)
            _print_where_to_look(home)
            return 0
        if args.command in ("review", "rollback", "promote"):
            return review_command(args)
        if args.command == "schedule":
            return schedule_command(args)
        if args.command == "report":
            from quantrec.tasks.config import load_config

            config = load_config(args.config)
            _write_report(args.start, args.end, args.out, config,
                          args.shift_date or config.feed.shift_date)
            return 0
        config = resolve_config(args)
        if args.command == "run":
            from quantrec.flows.daily_lifecycle import daily_lifecycle

            records = [daily_lifecycle(args.date, config, force=args.force, wait=args.wait)]
        elif args.command == "search":
            from quantrec.flows.search import quantization_search

            records = [quantization_search(args.date, config)]
        else:
            from quantrec.flows.backfill import backfill

            records = backfill(args.start, args.end, config)
        print_records(records, as_json=args.json)
        return _report_stops(records)
    except (ConfigError, LakeError, SchemaError, FeedError, ReviewError, ReportError) as err:
        print(f"quantrec: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`quantrec config | head`): not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except RunInProgressError as err:
        print(f"quantrec: {err}", file=sys.stderr)
        return 4
    except Exception as err:
        if _is_unreachable(err):
            print(f"quantrec: the MLflow tracking server at {home.tracking_uri} is unreachable "
                  f"({type(err).__name__}: {str(err)[:300]}). Nothing was promoted; the "
                  "champion is unchanged. Start the server (or unset MLFLOW_TRACKING_URI for "
                  "the embedded store) and rerun: finished stages are resumed.",
                  file=sys.stderr)
            return 5
        raise


def _is_unreachable(err: BaseException) -> bool:
    """Whether ``err`` (or its cause) is a failed connection to the tracking server."""
    import requests

    seen = err
    while seen is not None:
        if isinstance(seen, (requests.exceptions.ConnectionError, ConnectionRefusedError,
                             ConnectionResetError)):
            return True
        if "Max retries exceeded" in str(seen) or "Connection refused" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def review_command(args: argparse.Namespace) -> int:
    """``review list|approve|reject``, ``rollback``, ``promote``: print what changed."""
    from quantrec.tasks.config import load_config

    model_name = load_config(args.config).registry.model_name
    if args.command == "review" and args.action == "list":
        from quantrec.tasks.review import pending_reviews

        pending = pending_reviews(model_name)
        if args.json:
            for item in pending:
                print(json.dumps(item.__dict__, sort_keys=True, default=str))
            return 0
        if not pending:
            print(f"no challenger of {model_name} awaits review")
        for item in pending:
            print(f"version {item.version} ({item.variant}, run date {item.run_date}, "
                  f"aliases {', '.join(item.aliases) or '-'}): {item.reason}")
            decision = item.decision or {}
            for check in decision.get("checks", {}).get(item.variant, []):
                mark = "pass" if check.get("passed") else "FAIL"
                print(f"    {mark}  {check.get('name')} = {check.get('value')} "
                      f"(threshold {check.get('limit', check.get('threshold'))})")
        return 0
    from quantrec.flows import review

    if args.command == "rollback":
        outcome = review.rollback_champion(model_name, args.reason)
    elif args.command == "promote":
        outcome = review.promote_version(model_name, args.version, args.reason)
    elif args.action == "approve":
        outcome = review.approve_challenger(model_name, args.version, args.reason)
    else:
        outcome = review.reject_challenger(model_name, args.version, args.reason)
    print(json.dumps(outcome, sort_keys=True))
    return 0


def schedule_command(args: argparse.Namespace) -> int:
    """Serve the deployments from this process until interrupted (``flow.serve``)."""
    from prefect import serve

    from quantrec.flows.deployments import lifecycle_deployments
    from quantrec.tasks.config import load_config

    options = {k: v for k, v in (("cron", args.cron), ("timezone", args.timezone)) if v}
    config = load_config(args.config) if args.config else None
    deployments = lifecycle_deployments(config=config, **options)
    print("serving " + ", ".join(d.name for d in deployments) + "; Ctrl-C stops", flush=True)
    serve(*deployments)
    return 0


def _write_report(start: date, end: date, out, config, shift_date) -> None:
    from quantrec.tasks.lifecycle import write_report

    png, html, summary = write_report(start, end, out, config, shift_date=shift_date)
    print("\nLifecycle report: " + str(html) + " (" + str(png.name) + ")")
    for sentence in summary["sentences"]:
        print("  " + sentence)


def _report_stops(records: list[dict]) -> int:
    """Exit status 3 when a day stopped before training (bad or missing data), 0 otherwise;
    the reason goes to stderr so a scheduled shell run notices."""
    stopped = [r for r in records if "run_date" in r["checks"]]
    for record in stopped:
        where = f" Quarantined at {record['quarantined']}." if record.get("quarantined") else ""
        print(f"quantrec: {record['date']}: {record['reason']}.{where}", file=sys.stderr)
    return 3 if stopped else 0


def _print_demo_figures(records: list[dict]) -> None:
    from quantrec.tasks.tracking import stage_timings

    timings = stage_timings([r["mlflow_run_id"] for r in records])
    print("\nWall time per stage, seconds (mean over days; max):")
    for stage, values in timings.items():
        print(f"  {stage:<10} {sum(values) / len(values):7.2f}  {max(values):7.2f}")
    trained = [r for r in records if r["train_samples_per_s"]]
    if trained:
        rate = sum(r["train_samples_per_s"] for r in trained) / len(trained)
        print(f"Training: {rate:,.0f} samples/s (mean over days)")
        sizes = trained[-1]["bytes"]
        print("Model bytes: " + "  ".join(
            f"{name} {size:,} ({size / sizes['fp32']:.3f}x)" for name, size in sizes.items()))


def _print_where_to_look(home) -> None:
    print(f"\nState: {home.root}")
    print("Look at the runs: `make ui`, then")
    print("  Prefect UI  http://127.0.0.1:4200  (flow runs, task stages, summary artifacts)")
    print("  MLflow UI   http://127.0.0.1:5000  (runs, datasets, registered versions, aliases)")


if __name__ == "__main__":
    sys.exit(main())
