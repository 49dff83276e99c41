# python deploy/serve.py [--cron ... --timezone ... --config ...]  — the same as
# `quantrec schedule`: serves daily-lifecycle on its cron schedule, and backfill and
# quantization-search on demand (the Prefect UI's Run button, or `prefect deployment run`).
# For a work pool and workers instead, see deploy/prefect.yaml.
import sys

from quantrec.flows.cli import main

if __name__ == "__main__":
    sys.exit(main(["schedule", *sys.argv[1:]]))
