#!/usr/bin/env bash
# Start a local Prefect server (with its UI), an MLflow UI, and the process serving driftloop's
# deployments. Each runs in the background with its PID and log under $DRIFTLOOP_HOME/run.
# Everything binds to 127.0.0.1. `make down` stops them.
#
# Authentication is off unless asked for (docs/security.md):
#   PREFECT_SERVER_API_AUTH_STRING=<user:password>  the Prefect API answers 401 without it; our
#                                                   clients here send it as PREFECT_API_AUTH_STRING
#   DRIFTLOOP_MLFLOW_AUTH=basic                     MLflow's basic-auth app; the admin's password
#                                                   comes from MLFLOW_AUTH_ADMIN_PASSWORD (first start)
# MLFLOW_WORKERS sets the MLflow server's worker processes (default 4).
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
    kill -0 "$(cat "$run/$1.pid")" 2>/dev/null || { echo "$1 exited; its log ($run/$1.log) ends:" >&2; tail -n 5 "$run/$1.log" >&2; exit 1; }
    sleep 1
  done
  echo "$1 did not answer at $2; see $run/$1.log" >&2; exit 1
}

if [[ -n "${PREFECT_SERVER_API_AUTH_STRING:-}" ]]; then
  # The serving process and the CLI calls below are clients of that server: they send the same string.
  export PREFECT_API_AUTH_STRING="${PREFECT_API_AUTH_STRING:-$PREFECT_SERVER_API_AUTH_STRING}"
fi

mlflow_app=()
case "${DRIFTLOOP_MLFLOW_AUTH:-none}" in
  none) ;;
  basic)
    "$bin/python" -c "import flask_wtf" 2>/dev/null || {
      echo "DRIFTLOOP_MLFLOW_AUTH=basic needs Flask-WTF (the mlflow[auth] extra), which .venv lacks" >&2; exit 1; }
    export MLFLOW_AUTH_CONFIG_PATH="${MLFLOW_AUTH_CONFIG_PATH:-$home/mlflow/basic_auth.ini}"
    if [[ ! -f "$MLFLOW_AUTH_CONFIG_PATH" ]]; then
      # No secret in this file: the admin's password is read from MLFLOW_AUTH_ADMIN_PASSWORD when
      # the user database is created; users' passwords are stored as salted hashes in it.
      cat >"$MLFLOW_AUTH_CONFIG_PATH" <<INI
[mlflow]
default_permission = READ
database_uri = sqlite:///$home/mlflow/basic_auth.db
admin_username = admin
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
# Each request's password check costs ~0.1 s (scrypt); remember a good one for a minute. A
# changed password is then refused everywhere within 60 s.
auth_cache_ttl_seconds = 60
INI
    fi
    # The auth app signs its CSRF tokens with this; a new one per start only resets open sign-up forms.
    MLFLOW_FLASK_SERVER_SECRET_KEY="${MLFLOW_FLASK_SERVER_SECRET_KEY:-$("$bin/python" -c 'import secrets; print(secrets.token_hex(32))')}"
    export MLFLOW_FLASK_SERVER_SECRET_KEY
    mlflow_app=(--app-name basic-auth) ;;
  *) echo "DRIFTLOOP_MLFLOW_AUTH must be 'none' or 'basic', not '$DRIFTLOOP_MLFLOW_AUTH'" >&2; exit 2 ;;
esac

# The UI finds the API from these settings (not from --port), so set them for any port.
PREFECT_SERVER_API_HOST=127.0.0.1 PREFECT_SERVER_API_PORT="$PREFECT_PORT" \
  start prefect-server "$bin/prefect" server start --host 127.0.0.1 --port "$PREFECT_PORT"

tracking="${DRIFTLOOP_MLFLOW_TRACKING_URI:-sqlite:///$home/mlflow/mlflow.db}"
artifacts="${DRIFTLOOP_MLFLOW_ARTIFACT_ROOT:-file://$home/mlflow/artifacts}"
# The store URIs go by environment, not on the command line, which any local user can read with
# `ps`: a database URI may hold a password.
MLFLOW_BACKEND_STORE_URI="$tracking" MLFLOW_DEFAULT_ARTIFACT_ROOT="$artifacts" \
  start mlflow-ui "$bin/mlflow" server "${mlflow_app[@]}" --host 127.0.0.1 --port "$MLFLOW_PORT" \
  --workers "${MLFLOW_WORKERS:-4}"  # 4: MLflow's default
# Both servers start at once; the deployments are served once Prefect answers.
wait_for prefect-server "$api/health" 90
wait_for mlflow-ui "http://127.0.0.1:${MLFLOW_PORT}/health" 90

PREFECT_API_URL="$api" start serve "$bin/python" -m flows.deployments --config "$config"
for _ in $(seq 60); do
  PREFECT_API_URL="$api" "$bin/prefect" deployment ls 2>/dev/null | grep -q "training" && break
  kill -0 "$(cat "$run/serve.pid")" 2>/dev/null || { echo "serve exited; its log ($run/serve.log) ends:" >&2; tail -n 5 "$run/serve.log" >&2; exit 1; }
  sleep 1
done
PREFECT_API_URL="$api" "$bin/prefect" deployment ls
cat <<MSG

Prefect UI:  http://127.0.0.1:${PREFECT_PORT}
MLflow UI:   http://127.0.0.1:${MLFLOW_PORT}
Run training: PREFECT_API_URL=$api .venv/bin/prefect deployment run training/$(basename "$config" .yaml | tr _ -)
Stop:         make down
MSG
if [[ -n "${PREFECT_SERVER_API_AUTH_STRING:-}" ]]; then
  echo "Prefect API auth: on (clients need PREFECT_API_AUTH_STRING; the UI asks for it)"
fi
if [[ ${#mlflow_app[@]} -gt 0 ]]; then
  echo "MLflow basic auth: on (clients need MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD)"
fi
