#!/usr/bin/env bash
# Start a local Prefect server (with its UI), an MLflow UI, and the process serving driftloop's
# deployments. Each runs in the background with its PID and log under $DRIFTLOOP_HOME/run.
# Everything binds to 127.0.0.1. `make down` stops them.
set -euo pipefail
config="${1:-configs/flights.yaml}"
home="${DRIFTLOOP_HOME:?}"
bin="$(pwd)/.venv/bin"
run="$home/run"
mkdir -p "$run" "$PREFECT_HOME" "$home/mlflow"
api="http://127.0.0.1:${PREFECT_PORT}/api"

start() {  # name, command...
  local name=$1; shift
  if [[ -f "$run/$name.pid" ]] && kill -0 "$(cat "$run/$name.pid")" 2>/dev/null; then
    echo "$name already running (pid $(cat "$run/$name.pid"))"; return
  fi
  setsid "$@" >"$run/$name.log" 2>&1 &
  echo $! >"$run/$name.pid"
  echo "started $name (pid $!, log $run/$name.log)"
}

wait_for() {  # name, url, seconds
  for _ in $(seq "$3"); do
    curl -fsS "$2" >/dev/null 2>&1 && { echo "$1 is up: $2"; return; }
    sleep 1
  done
  echo "$1 did not answer at $2; see $run/$1.log" >&2; exit 1
}

# The UI finds the API from these settings (not from --port), so set them for any port.
PREFECT_SERVER_API_HOST=127.0.0.1 PREFECT_SERVER_API_PORT="$PREFECT_PORT" \
  start prefect-server "$bin/prefect" server start --host 127.0.0.1 --port "$PREFECT_PORT"
wait_for prefect-server "$api/health" 90

tracking="${DRIFTLOOP_MLFLOW_TRACKING_URI:-sqlite:///$home/mlflow/mlflow.db}"
artifacts="${DRIFTLOOP_MLFLOW_ARTIFACT_ROOT:-file://$home/mlflow/artifacts}"
start mlflow-ui "$bin/mlflow" server --backend-store-uri "$tracking" --default-artifact-root "$artifacts" \
  --host 127.0.0.1 --port "$MLFLOW_PORT"
wait_for mlflow-ui "http://127.0.0.1:${MLFLOW_PORT}/health" 90

PREFECT_API_URL="$api" start serve "$bin/python" -m flows.deployments --config "$config"
for _ in $(seq 60); do
  PREFECT_API_URL="$api" "$bin/prefect" deployment ls 2>/dev/null | grep -q "training" && break
  sleep 1
done
PREFECT_API_URL="$api" "$bin/prefect" deployment ls
cat <<MSG

Prefect UI:  http://127.0.0.1:${PREFECT_PORT}
MLflow UI:   http://127.0.0.1:${MLFLOW_PORT}
Run training: PREFECT_API_URL=$api .venv/bin/prefect deployment run training/$(basename "$config" .yaml | tr _ -)
Stop:         make down
MSG
