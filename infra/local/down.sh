#!/usr/bin/env bash
# Stop what infra/local/up.sh started, by PID: the serving process first (it pauses its
# deployments), then the UIs and the server last, as Prefect wants.
set -uo pipefail
run="${DRIFTLOOP_HOME:?}/run"
for name in serve mlflow-ui prefect-server; do
  pidfile="$run/$name.pid"
  [[ -f "$pidfile" ]] || continue
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -KILL -- "-$pid" 2>/dev/null
    echo "stopped $name (pid $pid)"
  fi
  rm -f "$pidfile"
done
