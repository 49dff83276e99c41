"""``quantrec stack up|down|status``: the local server stack of ``tasks.stack``.

quantrec stack up --postgres [--mlflow-port 5000] [--prefect-port 4200] [--pg-port N]
quantrec stack down [--remove]
"""

from __future__ import annotations

import argparse
import os
import sys

from quantrec.flows.errors import ExitCode

HELP = "local PostgreSQL, MLflow and Prefect servers under $QUANTREC_HOME (up, down, status)"


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    up = actions.add_parser("up", help="start the stack and print its addresses")
    up.add_argument(
        "--postgres",
        action="store_true",
        help="both stores on a PostgreSQL cluster in the home (default: the home's SQLite)",
    )
    up.add_argument("--mlflow-port", type=int, default=int(os.environ.get("MLFLOW_PORT", 5000)))
    up.add_argument("--prefect-port", type=int, default=int(os.environ.get("PREFECT_PORT", 4200)))
    up.add_argument("--pg-port", type=int, default=0, help="PostgreSQL's port (0: a free one)")
    up.add_argument("--no-ui", action="store_true", help="the Prefect API without its UI")
    down = actions.add_parser("down", help="stop the stack")
    down.add_argument(
        "--remove", action="store_true", help="also delete its databases and artifacts"
    )
    actions.add_parser("status", help="print the addresses of the running stack")
    parser.set_defaults(handler=stack_command)


def stack_command(args: argparse.Namespace) -> int:
    from quantrec.tasks.settings import quantrec_home
    from quantrec.tasks.stack import StackError, describe, stack_down, stack_status, stack_up

    home = quantrec_home()
    try:
        if args.action == "up":
            state = stack_up(
                home,
                postgres=args.postgres,
                mlflow_port=args.mlflow_port,
                prefect_port=args.prefect_port,
                pg_port=args.pg_port,
                ui=not args.no_ui,
            )
            print(describe(home, state), flush=True)
        elif args.action == "down":
            was_up = stack_down(home, remove=args.remove)
            gone = " and removed" if args.remove else ""
            print(f"stack of {home.root} {'stopped' if was_up else 'was not running'}{gone}")
        else:
            state = stack_status(home)
            if state is None:
                print(f"no stack is running on {home.root}")
                return ExitCode.FAILED
            print(describe(home, state))
    except StackError as err:
        print(f"quantrec: {err}", file=sys.stderr)
        return ExitCode.FAILED
    return ExitCode.OK
