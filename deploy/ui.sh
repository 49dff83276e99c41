#!/usr/bin/env bash
# make ui — the Prefect server and the MLflow UI on $QUANTREC_HOME, bound to 127.0.0.1.
# Ctrl-C stops both.
set -euo pipefail
home="${QUANTREC_HOME:-.quantrec}"
mkdir -p "$home"
home="$(cd "$home" && pwd)"
export PREFECT_HOME="${PREFECT_HOME:-$home/prefect}"
prefect_port="${PREFECT_PORT:-4200}"
mlflow_port="${MLFLOW_PORT:-5000}"
# The Prefect UI calls the API at the address these settings give, not at --port's.
export PREFECT_SERVER_API_HOST=127.0.0.1
export PREFECT_SERVER_API_PORT="$prefect_port"
export PREFECT_UI_API_URL="http://127.0.0.1:$prefect_port/api"
# No telemetry: the servers and their UIs send nothing anywhere.
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export MLFLOW_DISABLE_TELEMETRY=true
export DO_NOT_TRACK=true
# Runs started from now on link their Prefect artifacts to this MLflow UI.
echo "http://127.0.0.1:$mlflow_port" >"$home/mlflow-ui.url"

# Job control puts each server in its own process group, so stopping one stops all it spawned.
set -m
pids=()
prefect server start --host 127.0.0.1 --port "$prefect_port" &
pids+=($!)
mlflow server --host 127.0.0.1 --port "$mlflow_port" --workers 1 \
  --backend-store-uri "sqlite:///$home/mlflow.db" \
  --default-artifact-root "$home/mlartifacts" &
pids+=($!)
stop() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  wait
}
trap stop INT TERM EXIT

sleep 3
cat <<TXT

quantrec state: $home
  Prefect UI  http://127.0.0.1:$prefect_port   (flow runs, task stages, summary artifacts)
  MLflow UI   http://127.0.0.1:$mlflow_port/#/experiments?workflowType=machine_learning
              (runs, datasets, registered models, aliases; "Model training" in its sidebar)
Ctrl-C stops both.

TXT
wait
