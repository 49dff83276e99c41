# python deploy/serve.py  — serves the quantrec deployments from this process: daily-lifecycle on
# its cron schedule, backfill on demand (Run button in the Prefect UI or `prefect deployment run`).
# For a work pool and workers instead, see deploy/prefect.yaml.
from prefect import serve

from flows.deployments import lifecycle_deployments
from tasks.settings import prepare_process_environment

if __name__ == "__main__":
    prepare_process_environment()
    serve(*lifecycle_deployments())
