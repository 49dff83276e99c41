"""``quantrec``: manual runs, backfills, review and the demo, from the command line.

The only place that exits the process. Bad input ends in one paragraph on stderr (what,
where, the value, how to fix); the exit status says what happened (``ExitCode``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from datetime import date, timedelta

from quantrec.flows.errors import EPILOG, ExitCode, Terminated, classify
from quantrec.tasks.settings import prepare_process_environment

DEMO_START = date(2026, 1, 1)
DEMO_DAYS = 10


# Commands that run Prefect flows: without PREFECT_API_URL they start a temporary server.
FLOW_COMMANDS = {"run", "search", "backfill", "demo", "review", "rollback", "promote"}


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a date as YYYY-MM-DD, got {text!r}") from err


def _parents() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """(``--config`` for every command that reads the config, the run options)."""
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument("--config", help="TOML config file (default: built-in defaults)")
    runs = argparse.ArgumentParser(add_help=False, parents=[config])
    runs.add_argument("--feed", help="where days come from: synthetic, movielens, criteo, table")
    runs.add_argument("--path", help="movielens folder, criteo file or glob, table files")
    runs.add_argument("--spec", help="table feed: the TOML mapping file")
    runs.add_argument("--scenario", choices=["stable", "gradual", "sudden"])
    runs.add_argument("--shift-date", type=_date, help="day the sudden scenario shifts")
    runs.add_argument("--rows", type=int, help="rows per synthetic day")
    runs.add_argument("--json", action="store_true", help="print one JSON record per day")
    return config, runs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quantrec", description=__doc__.splitlines()[0], epilog=EPILOG
    )
    parser.add_argument(
        "--verbose", action="store_true", help="on an error, show the full traceback too"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    config, runs = _parents()

    def command(name: str, handler, help: str, parents=(config,)) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, parents=list(parents), epilog=EPILOG)
        sub.set_defaults(handler=handler)
        return sub

    run = command("run", run_command, "run the daily lifecycle for one date", (runs,))
    run.add_argument("--date", type=_date, required=True)
    run.add_argument(
        "--force",
        action="store_true",
        help="train and register again although this date already ran on the "
        "same data, config and code",
    )
    run.add_argument(
        "--wait",
        action="store_true",
        help="queue behind a run of the same date instead of refusing",
    )
    search = command(
        "search", search_command, "run one date with a fresh precision search", (runs,)
    )
    search.add_argument("--date", type=_date, required=True)
    fill = command(
        "backfill", backfill_command, "run the lifecycle for each day in a range", (runs,)
    )
    fill.add_argument("--start", type=_date, required=True)
    fill.add_argument("--end", type=_date, required=True)
    demo = command("demo", demo_command, f"backfill {DEMO_DAYS} synthetic days with a shift", ())
    demo.add_argument("--rows", type=int, default=100_000, help="rows per day")
    demo.add_argument("--days", type=int, default=DEMO_DAYS)
    review = commands.add_parser("review", help="registry review of challengers")
    actions = review.add_subparsers(dest="action", required=True)
    listing = actions.add_parser(
        "list", parents=[config], help="pending challengers and their decision records"
    )
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=review_list_command)
    approve = actions.add_parser("approve", parents=[config], help="make a challenger the champion")
    approve.add_argument("version")
    approve.add_argument("--reason", default="")
    approve.set_defaults(handler=review_command)
    reject = actions.add_parser(
        "reject", parents=[config], help="reject a challenger (the champion stays)"
    )
    reject.add_argument("version")
    reject.add_argument("--reason", required=True)
    reject.set_defaults(handler=review_command)
    rollback = command("rollback", review_command, "point the champion back at 'previous'")
    rollback.add_argument("--reason", default="")
    promote = command("promote", review_command, "promote a version the gate did not (override)")
    promote.add_argument("version")
    promote.add_argument("--reason", required=True)
    schedule = command(
        "schedule",
        schedule_command,
        "serve the deployments here: daily-lifecycle on its "
        "cron, backfill and quantization-search on demand (Ctrl-C stops)",
    )
    schedule.add_argument("--cron", default=None, help="cron of daily-lifecycle")
    schedule.add_argument("--timezone", default=None, help="IANA timezone of the cron")
    report = command(
        "report",
        report_command,
        "lifecycle report: NE per day of the frozen int8 model, "
        "the daily fp32 model and the managed champion (PNG + HTML)",
    )
    report.add_argument("--start", type=_date, required=True)
    report.add_argument("--end", type=_date, required=True)
    report.add_argument("--out", required=True, help="folder to write the report into")
    report.add_argument(
        "--shift-date",
        type=_date,
        help="compare the days after this date (default: the config's "
        "feed.shift_date, else every day)",
    )
    verify = command(
        "verify",
        verify_command,
        "check a registered version's files against its manifest (SHA-256)",
    )
    verify.add_argument("version")
    debug = command(
        "debug",
        debug_command,
        "numeric debugger: a version's activations against its fp32 parent, layer by "
        "layer and table by table (SQNR, cosine, max relative error, first divergence)",
    )
    debug.add_argument("--version", required=True)
    debug.add_argument("--against", help="reference version (default: the fp32 parent)")
    debug.add_argument("--rows", type=int, help="rows of the day to compare on (default 4096)")
    debug.add_argument("--date", type=_date, help="day of the rows (default: its run date)")
    debug.add_argument("--threshold-db", type=float, help="SQNR that diverges (default 15)")
    debug.add_argument("--csv", action="store_true", help="print the table as CSV")
    readmit = command(
        "readmit",
        readmit_command,
        "re-read a quarantined day from its source and admit it if it passes the contract",
        (runs,),
    )
    readmit.add_argument("--date", type=_date, required=True)
    from quantrec.benchmarks.cli import HELP as BENCH_HELP
    from quantrec.benchmarks.cli import configure as configure_bench

    configure_bench(command("bench", bench_command, BENCH_HELP, ()))
    from quantrec.flows.train_command import HELP as TRAIN_HELP
    from quantrec.flows.train_command import configure as configure_train

    configure_train(command("train", train_command, TRAIN_HELP, (runs,)))
    from quantrec.flows.stack_cli import HELP as STACK_HELP
    from quantrec.flows.stack_cli import configure as configure_stack

    configure_stack(commands.add_parser("stack", help=STACK_HELP, epilog=EPILOG))
    command("config", config_command, "print the effective configuration", (runs,))
    gc = command("gc", gc_command, "delete the versions the retention policy does not keep")
    gc.add_argument("--dry-run", action="store_true", help="say what would go, delete nothing")
    gc.add_argument("--keep-days", type=int, help="run dates kept whole (default: the config's)")
    return parser


def resolve_config(args: argparse.Namespace):
    """The config file (or the defaults) with the command line's feed options on top."""
    from quantrec.tasks.config import load_config

    config = load_config(getattr(args, "config", None))
    return config.with_feed(
        getattr(args, "feed", None),
        scenario=getattr(args, "scenario", None),
        shift_date=getattr(args, "shift_date", None),
        rows_per_day=getattr(args, "rows", None),
        path=getattr(args, "path", None),
        spec=getattr(args, "spec", None),
    )


# --- handlers: each returns the exit status --------------------------------------------


def run_command(args: argparse.Namespace) -> int:
    from quantrec.flows.daily_lifecycle import daily_lifecycle

    config = _checked_run(resolve_config(args), args.date, args.date)
    outcome = daily_lifecycle(args.date, config, force=args.force, wait=args.wait)
    return _finish([outcome], as_json=args.json)


def search_command(args: argparse.Namespace) -> int:
    from quantrec.flows.search import quantization_search

    config = _checked_run(resolve_config(args), args.date, args.date)
    return _finish([quantization_search(args.date, config)], as_json=args.json)


def backfill_command(args: argparse.Namespace) -> int:
    from quantrec.flows.backfill import backfill

    config = _checked_run(resolve_config(args), args.start, args.end)
    return _finish(backfill(args.start, args.end, config), as_json=args.json)


def _checked_run(config, start: date, end: date):
    """``config`` if the dates can run on this home, before any flow (and Prefect's server)
    starts: the range in order, no date in the future, and a lake holding this feed's days
    (``FeedError`` / ``LakeError``, exit 2)."""
    from quantrec.feeds.base import FeedError, check_run_date
    from quantrec.tasks.settings import quantrec_home

    if end < start:
        raise FeedError(
            f"backfill --end {end} is before --start {start}; give an end on or after the "
            f"start (e.g. --start {end} --end {start})"
        )
    check_run_date(end)
    schema = config.feed.build(end).schema()
    quantrec_home().day_lake().bind(config.feed.kind, schema.partition_columns)
    return config


def demo_command(args: argparse.Namespace) -> int:
    home = prepare_process_environment()
    outcomes, config = run_demo(args)
    print_records(outcomes, as_json=False)
    _print_demo_figures(outcomes)
    _write_report(
        outcomes[0].date, outcomes[-1].date, home.root / "report", config, config.feed.shift_date
    )
    _print_where_to_look(home)
    return ExitCode.OK


def config_command(args: argparse.Namespace) -> int:
    print(resolve_config(args).model_dump_json(indent=2))
    return ExitCode.OK


def verify_command(args: argparse.Namespace) -> int:
    """``verify VERSION``: every stored file of the version against its manifest."""
    import tempfile
    from pathlib import Path

    from mlflow.exceptions import MlflowException

    from quantrec.tasks.config import load_config
    from quantrec.tasks.tracking import connect, verified_copy

    model_name = load_config(args.config).registry.model_name
    _, client = connect()
    try:
        client.get_model_version(model_name, str(args.version))
    except MlflowException:
        print(
            f"quantrec: model {model_name!r} has no version {args.version!r} in the registry "
            f"at {client.tracking_uri}; nothing to verify",
            file=sys.stderr,
        )
        return ExitCode.BAD_INPUT
    with tempfile.TemporaryDirectory(prefix="quantrec-verify-") as tmp:
        local = verified_copy(model_name, args.version, Path(tmp))
        count = sum(1 for path in local.rglob("*") if path.is_file())
    print(f"model {model_name!r} version {args.version}: all {count} files match its manifest")
    return ExitCode.OK


def debug_command(args: argparse.Namespace) -> int:
    """``debug --version V``: the numerics table of V against its reference."""
    from quantrec.tasks.config import load_config
    from quantrec.tasks.registry import version_numerics

    model_name = load_config(args.config).registry.model_name
    given = {"rows": args.rows, "threshold_db": args.threshold_db}
    found = version_numerics(
        model_name,
        args.version,
        against=args.against,
        run_date=args.date,
        **{k: v for k, v in given.items() if v is not None},
    )
    if args.csv:
        print(found.report.to_csv(), end="")
        return ExitCode.OK
    print(
        f"model {model_name!r}: {found.compared} against {found.reference}, "
        f"on rows of {found.run_date}\n"
    )
    print(found.report.table(reference=found.reference, compared=found.compared))
    return ExitCode.OK


def readmit_command(args: argparse.Namespace) -> int:
    from quantrec.tasks.data import readmit_day

    path, said = readmit_day(args.date, resolve_config(args).feed)
    print(said, file=sys.stdout if path else sys.stderr)
    return ExitCode.OK if path else ExitCode.STOPPED


def gc_command(args: argparse.Namespace) -> int:
    from quantrec.tasks.config import load_config
    from quantrec.tasks.retention import collect

    registry = load_config(args.config).registry
    keep_days = registry.keep_days if args.keep_days is None else args.keep_days
    if keep_days < 1:
        print(f"quantrec: --keep-days must be at least 1; got {keep_days}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    done = collect(registry.model_name, keep_days=keep_days, dry_run=args.dry_run)
    for number in done.plan.keep:
        print(f"keep  version {number:>5}: {done.plan.why[number]}")
    for number in done.plan.drop:
        print(f"{'would delete' if args.dry_run else 'deleted'} version {number:>5}")
    print(done.summary())
    return ExitCode.OK


def report_command(args: argparse.Namespace) -> int:
    from quantrec.tasks.config import load_config

    config = load_config(args.config)
    _write_report(
        args.start,
        args.end,
        args.out,
        config,
        args.shift_date or getattr(config.feed, "shift_date", None),
    )
    return ExitCode.OK


def bench_command(args: argparse.Namespace) -> int:
    from quantrec.benchmarks.cli import run

    return run(args)


def train_command(args: argparse.Namespace) -> int:
    from quantrec.flows.train_command import run

    return run(args, resolve_config(args))


def _finish(outcomes: list, *, as_json: bool) -> int:
    print_records(outcomes, as_json=as_json)
    return _report_stops(outcomes)


def print_records(outcomes: list, *, as_json: bool) -> None:
    """One line per run date (a table), or one JSON record per line with ``--json``."""
    if as_json:
        for outcome in outcomes:
            print(json.dumps(outcome.to_record(), sort_keys=True))
        return
    print(
        f"{'date':<11} {'train':<9} {'NE fp32':>8} {'NE LR':>7} {'NE truth':>8} "
        f"{'NE int8':>8} {'int8 vs fp32':>12} {'NE searched':>11} {'searched vs fp32':>16} "
        f"{'size':>6} {'plan':>8} {'NE champion':>11}  {'decision':<17} champion"
    )
    for o in outcomes:
        ne = {name: values.get("ne") for name, values in o.metrics.items()}
        fp32, int8, searched = ne.get("fp32"), ne.get("int8"), ne.get("searched")
        size = f"{o.bytes['searched'] / o.bytes['fp32']:.3f}" if "searched" in o.bytes else "n/a"
        decision = o.decision + (f" {o.promoted_variant}" if o.promoted_variant else "")
        print(
            f"{o.date.isoformat():<11} {o.training_mode or 'n/a':<9} {_f(fp32):>8} "
            f"{_f(ne.get('baseline.logistic')):>7} {_f(ne.get('ground_truth')):>8} "
            f"{_f(int8):>8} {_delta(int8, fp32):>12} "
            f"{_f(searched):>11} {_delta(searched, fp32):>16} {size:>6} "
            f"{o.plan_source or 'n/a':>8} {_f(ne.get('champion')):>11}  "
            f"{decision:<17} v{o.champion_version}"
        )


def _delta(value: float | None, reference: float | None) -> str:
    return "n/a" if value is None or not reference else f"{(value - reference) / reference:+.4%}"


def _f(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def run_demo(args: argparse.Namespace) -> tuple[list, object]:
    """Replay the days in order. Severe drift sends a day's winner to review instead of
    promoting it; the demo plays the reviewer and approves a challenger that passed every
    gate check (and says so), as an on-call engineer would after reading its record."""
    from quantrec.flows.backfill import print_progress
    from quantrec.flows.daily_lifecycle import daily_lifecycle
    from quantrec.flows.review import approve_challenger
    from quantrec.tasks.config import QuantrecConfig

    end = DEMO_START + timedelta(days=args.days - 1)
    shift = DEMO_START + timedelta(days=args.days // 2)
    config = QuantrecConfig().with_feed(
        "synthetic", scenario="sudden", shift_date=shift, rows_per_day=args.rows
    )
    print(
        f"quantrec demo: {args.days} synthetic days from {DEMO_START} to {end}, "
        f"{args.rows} rows a day, a sudden shift on {shift}\n",
        flush=True,
    )
    outcomes = []
    for k in range(args.days):
        started = time.monotonic()
        outcome = daily_lifecycle(DEMO_START + timedelta(days=k), config)
        print_progress(outcome, k + 1, args.days, time.monotonic() - started)
        if outcome.challenger_version:
            version = outcome.challenger_version
            print(
                f"demo reviewer: {outcome.date} drifted severely; approving challenger "
                f"version {version} ({outcome.challenger_variant}), which passed every "
                "gate check",
                flush=True,
            )
            approve_challenger(
                config.registry.model_name,
                version,
                "demo: scripted reviewer approves a challenger that passed every gate check",
            )
            outcome = outcome.replace(champion_version=version)
        outcomes.append(outcome)
    return outcomes, config


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    home = prepare_process_environment()
    from quantrec.flows.errors import quiet_engine_tracebacks, stop_on_sigterm

    stop_on_sigterm()
    if args.command in FLOW_COMMANDS and not os.environ.get("PREFECT_API_URL"):
        from quantrec.tasks.settings import tie_temporary_servers_to_this_process

        tie_temporary_servers_to_this_process()
    # MLflow announces every new store and registered version on its INFO logger.
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    if not args.verbose and args.command in FLOW_COMMANDS:
        quiet_engine_tracebacks()
    if args.command in FLOW_COMMANDS:  # epochs and search units on stderr, as they happen
        from quantrec.models.progress import print_progress_to

        print_progress_to(sys.stderr)
    from quantrec.data_checks.schema import SchemaError
    from quantrec.feeds.base import FeedError
    from quantrec.feeds.lake import LakeError
    from quantrec.models.manifest import IntegrityError
    from quantrec.models.numerics import NumericsError
    from quantrec.models.report_render import ReportError
    from quantrec.tasks.config import ConfigError
    from quantrec.tasks.review import ReviewError
    from quantrec.tasks.settings import RunInProgressError

    try:
        return int(args.handler(args))
    except (
        ConfigError,
        LakeError,
        SchemaError,
        FeedError,
        ReviewError,
        ReportError,
        IntegrityError,
        NumericsError,
    ) as err:
        print(f"quantrec: {err}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    except BrokenPipeError:
        # The reader went away (`quantrec config | head`): not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.OK
    except RunInProgressError as err:
        print(f"quantrec: {err}", file=sys.stderr)
        return ExitCode.RUN_IN_PROGRESS
    except (Exception, Terminated, KeyboardInterrupt) as err:
        if args.verbose:
            raise
        code, paragraph = classify(err, tracking_uri=home.tracking_uri, home=str(home.root))
        print(paragraph, file=sys.stderr)
        return code


def review_list_command(args: argparse.Namespace) -> int:
    """``review list``: the pending challengers with their gate checks."""
    from quantrec.tasks.config import load_config
    from quantrec.tasks.review import pending_reviews

    model_name = load_config(args.config).registry.model_name
    pending = pending_reviews(model_name)
    if args.json:
        for item in pending:
            print(json.dumps(item.__dict__, sort_keys=True, default=str))
        return ExitCode.OK
    if not pending:
        print(f"no challenger of {model_name} awaits review")
    for item in pending:
        print(
            f"version {item.version} ({item.variant}, run date {item.run_date}, "
            f"aliases {', '.join(item.aliases) or '-'}): {item.reason}"
        )
        decision = item.decision or {}
        for check in decision.get("checks", {}).get(item.variant, []):
            mark = "pass" if check.get("passed") else "FAIL"
            print(
                f"    {mark}  {check.get('name')} = {check.get('value')} "
                f"(threshold {check.get('threshold')})"
            )
    return ExitCode.OK


def review_command(args: argparse.Namespace) -> int:
    """``review approve|reject``, ``rollback``, ``promote``: print what changed."""
    from quantrec.flows import review
    from quantrec.tasks.config import load_config

    model_name = load_config(args.config).registry.model_name
    if args.command == "rollback":
        outcome = review.rollback_champion(model_name, args.reason)
    elif args.command == "promote":
        outcome = review.promote_version(model_name, args.version, args.reason)
    elif args.action == "approve":
        outcome = review.approve_challenger(model_name, args.version, args.reason)
    else:
        outcome = review.reject_challenger(model_name, args.version, args.reason)
    print(json.dumps(outcome, sort_keys=True))
    return ExitCode.OK


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
    return ExitCode.OK


def _write_report(start: date, end: date, out, config, shift_date) -> None:
    from quantrec.tasks.lifecycle import write_report

    png, html, summary = write_report(start, end, out, config, shift_date=shift_date)
    print("\nLifecycle report: " + str(html) + " (" + str(png.name) + ")")
    for sentence in summary["sentences"]:
        print("  " + sentence)


def _report_stops(outcomes: list) -> int:
    """``FAILED`` when a day's run failed, ``STOPPED`` when a day stopped before training
    (bad or missing data), else ``OK``; the reasons go to stderr so a scheduled shell run
    notices."""
    stopped = [o for o in outcomes if o.stopped]
    failed = [o for o in outcomes if o.decision == "failed"]
    for outcome in (*stopped, *failed):
        where = f" Quarantined at {outcome.quarantined}." if outcome.quarantined else ""
        print(f"quantrec: {outcome.date}: {outcome.reason}.{where}", file=sys.stderr)
    if failed:
        return ExitCode.FAILED
    return ExitCode.STOPPED if stopped else ExitCode.OK


def _print_demo_figures(outcomes: list) -> None:
    from quantrec.tasks.tracking import stage_timings

    timings = stage_timings([o.mlflow_run_id for o in outcomes])
    print("\nWall time per stage, seconds (mean over days; max):")
    for stage, values in timings.items():
        print(f"  {stage:<10} {sum(values) / len(values):7.2f}  {max(values):7.2f}")
    trained = [o for o in outcomes if o.train_samples_per_s]
    if trained:
        rate = sum(o.train_samples_per_s for o in trained) / len(trained)
        print(f"Training: {rate:,.0f} samples/s (mean over days)")
        sizes = trained[-1].bytes
        print(
            "Model bytes: "
            + "  ".join(
                f"{name} {size:,} ({size / sizes['fp32']:.3f}x)" for name, size in sizes.items()
            )
        )


def _print_where_to_look(home) -> None:
    print(f"\nState: {home.root}")
    print("Look at the runs: `make ui`, then")
    print("  Prefect UI  http://127.0.0.1:4200  (flow runs, task stages, summary artifacts)")
    print("  MLflow UI   http://127.0.0.1:5000  (runs, datasets, registered versions, aliases)")


if __name__ == "__main__":
    sys.exit(main())
