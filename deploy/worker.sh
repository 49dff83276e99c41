#!/usr/bin/env bash
# deploy/worker.sh — a process work pool `quantrec`, the deployments of deploy/prefect.yaml
# on it, and a worker on this machine that runs their flow runs (Ctrl-C stops it). Every
# machine that runs flows starts one; any number of them may share the pool:
#
#   quantrec stack up --postgres            # once, on the machine that keeps the stores
#   export PREFECT_API_URL=http://HOST:4200/api MLFLOW_TRACKING_URI=http://HOST:5000
#   export QUANTREC_HOME=/srv/quantrec      # this machine's lake, stage results and locks
#   bash deploy/worker.sh
#   prefect deployment run daily-lifecycle/daily-lifecycle --param run_date=2026-03-04
#
# Step by step, it does what an operator would type:
#   prefect work-pool create quantrec --type process
#   QUANTREC_REPO=$PWD prefect --no-prompt deploy --all --prefect-file deploy/prefect.yaml
#   prefect worker start --pool quantrec --type process
#
# The worker starts each flow run as a child process with its own environment: the three
# variables above reach the run through it. Two runs of one model and date never overlap,
# whichever workers pick them up: each holds the Prefect global concurrency limit
# quantrec-run:<model>:<date> (tasks/concurrency.py); a run of a date that is already
# running is refused, or queues with the parameter wait=true.
set -euo pipefail
: "${PREFECT_API_URL:?set PREFECT_API_URL to the Prefect server (quantrec stack up prints it)}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export QUANTREC_REPO="${QUANTREC_REPO:-$repo}"
export PREFECT_SERVER_ANALYTICS_ENABLED=false MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true
# What the quantrec CLI sets for its own runs (tasks/settings.py): MLflow calls fail fast and
# the tasks' retries pace them; no progress bars in the flow runs' logs.
export MLFLOW_HTTP_REQUEST_MAX_RETRIES="${MLFLOW_HTTP_REQUEST_MAX_RETRIES:-2}"
export MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="${MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR:-1}"
export MLFLOW_HTTP_REQUEST_TIMEOUT="${MLFLOW_HTTP_REQUEST_TIMEOUT:-30}"
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false MLFLOW_LOGGING_LEVEL=WARNING
pool=quantrec  # the work_pool of every deployment in deploy/prefect.yaml
export PREFECT_HOME="${PREFECT_HOME:-${QUANTREC_HOME:-$repo/.quantrec}/prefect}"
if ! prefect work-pool inspect "$pool" >/dev/null 2>&1; then
  prefect work-pool create "$pool" --type process
fi
(cd "$QUANTREC_REPO" && prefect --no-prompt deploy --all --prefect-file deploy/prefect.yaml)
exec prefect worker start --pool "$pool" --type process --name "${QUANTREC_WORKER_NAME:-$(hostname)-$$}"
