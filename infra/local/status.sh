#!/usr/bin/env bash
# Which of the processes started by infra/local/up.sh are alive.
run="${DRIFTLOOP_HOME:?}/run"
for name in prefect-server mlflow-ui serve; do
  if [[ -f "$run/$name.pid" ]] && kill -0 "$(cat "$run/$name.pid")" 2>/dev/null; then
    echo "$name: running (pid $(cat "$run/$name.pid"))"
  else
    echo "$name: stopped"
  fi
done
