#!/usr/bin/env bash
# make ui — the Prefect server and the MLflow UI on $QUANTREC_HOME, bound to 127.0.0.1, and
# the deployments served against that server (`quantrec schedule`), so the Deployments page
# lists them and their Run button works; QUANTREC_UI_SERVE=0 leaves them out. While they are
# served, daily-lifecycle also runs on its cron (06:00 UTC) on this home. Ctrl-C stops all.
# make ui POSTGRES=1 (QUANTREC_POSTGRES=1): both servers on a PostgreSQL cluster in the home
# (`quantrec stack up --postgres`, tasks/stack.py); Ctrl-C runs `quantrec stack down`.
set -euo pipefail
home="${QUANTREC_HOME:-.quantrec}"
mkdir -p "$home"
home="$(cd "$home" && pwd)"
export QUANTREC_HOME="$home"
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
# Runs started from now on link their Prefect artifacts to this MLflow UI, and the CLI runs
# its flows on this Prefect server instead of starting a temporary one (while it answers).
echo "http://127.0.0.1:$mlflow_port" >"$home/mlflow-ui.url"
echo "http://127.0.0.1:$prefect_port/api" >"$home/prefect-api.url"

# Job control puts each server in its own process group, so stopping one stops all it spawned.
set -m
pids=()
if [ -n "${QUANTREC_POSTGRES:-}" ] && [ "${QUANTREC_POSTGRES}" != "0" ]; then
  # Detached servers: `stack down` (on exit) stops them and the cluster.
  trap 'quantrec stack down' EXIT
  quantrec stack up --postgres --mlflow-port "$mlflow_port" --prefect-port "$prefect_port"
  export MLFLOW_TRACKING_URI="http://127.0.0.1:$mlflow_port"
  sleep infinity &  # what `wait` below waits on until Ctrl-C (the servers are detached)
  pids+=($!)
else
  prefect server start --host 127.0.0.1 --port "$prefect_port" &
  pids+=($!)
  mlflow server --host 127.0.0.1 --port "$mlflow_port" --workers 1 \
    --backend-store-uri "sqlite:///$home/mlflow.db" \
    --default-artifact-root "$home/mlartifacts" &
  pids+=($!)
fi
stop() {
  trap - INT TERM EXIT
  # Newest first: the served deployments stop while the API they report to is still up.
  # Each gets Ctrl-C and ten seconds; whatever still runs then is killed.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    pid=${pids[$i]}
    kill -INT -- "-$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
  wait
  if [ -n "${QUANTREC_POSTGRES:-}" ] && [ "${QUANTREC_POSTGRES}" != "0" ]; then
    quantrec stack down
  fi
}
trap stop INT TERM EXIT

# Serve the deployments once the Prefect API answers (a cold start takes a while).
if [ "${QUANTREC_UI_SERVE:-1}" != "0" ]; then
  for _ in $(seq 1 120); do
    curl -fsS "http://127.0.0.1:$prefect_port/api/health" >/dev/null 2>&1 && break
    sleep 1
  done
  PREFECT_API_URL="http://127.0.0.1:$prefect_port/api" quantrec schedule &
  pids+=($!)
fi

sleep 3
cat <<TXT

quantrec state: $home
  Prefect UI  http://127.0.0.1:$prefect_port   (flow runs, task stages, artifacts, deployments)
  MLflow UI   http://127.0.0.1:$mlflow_port/#/experiments?workflowType=machine_learning
              (runs, datasets, registered models, aliases; "Model training" in its sidebar)
Ctrl-C stops all.

TXT
wait
