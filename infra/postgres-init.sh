#!/usr/bin/env bash
# One role and one database per store on one PostgreSQL server (infra/OPERATIONS.md, "Topology").
#
# The official postgres image runs this once, on an empty data directory, from
# /docker-entrypoint-initdb.d (compose.yaml mounts it there). It also works against a server you
# run yourself: set PGHOST, PGPORT, PGUSER (a superuser) and the four *_DB_PASSWORD variables, then
# run it again at will (it creates what is missing and resets the four passwords). Needs psql 15+.
#
# A shell script, not .sql: the passwords come from the environment (infra/compose.env). psql reads
# them from there itself (\getenv, psql 15 or later) and quotes them as literals (:'name'), so no
# password is ever part of a command line (`ps` shows every process's arguments to every user).
set -eo pipefail  # no -u: the image sources a non-executable script into its own shell

for var in PREFECT_DB_PASSWORD MLFLOW_DB_PASSWORD OPTUNA_DB_PASSWORD DRIFTLOOP_DB_PASSWORD; do
  value="$(printenv "$var" || true)"  # exported: psql reads it from the environment
  if [[ -z "$value" || "$value" == CHANGE-ME* ]]; then
    echo "postgres-init: $var is unset or still the template's placeholder; set it in infra/compose.env" >&2
    exit 1
  fi
done

# Connect as the image's superuser when run by the image; PGUSER etc. when run by hand.
psql=(psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-${PGUSER:-postgres}}" --dbname postgres)

"${psql[@]}" <<'SQL'
\getenv prefect_pw PREFECT_DB_PASSWORD
\getenv mlflow_pw MLFLOW_DB_PASSWORD
\getenv optuna_pw OPTUNA_DB_PASSWORD
\getenv driftloop_pw DRIFTLOOP_DB_PASSWORD
-- prefect: the Prefect server (API, background services, migrations)
-- mlflow: the MLflow tracking server (runs, registry, aliases)
-- optuna: every study, shared by all workers that tune it
-- driftloop: the promotion lock (advisory locks) and the promotion history (DRIFTLOOP_COORDINATION_URL)
SELECT format('CREATE ROLE %I LOGIN', name) FROM unnest(ARRAY['prefect', 'mlflow', 'optuna', 'driftloop']) AS name
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = name) \gexec
ALTER ROLE prefect WITH LOGIN PASSWORD :'prefect_pw';
ALTER ROLE mlflow WITH LOGIN PASSWORD :'mlflow_pw';
ALTER ROLE optuna WITH LOGIN PASSWORD :'optuna_pw';
ALTER ROLE driftloop WITH LOGIN PASSWORD :'driftloop_pw';

-- Each role owns its database, so each store's migrations can create and alter its own tables
-- (since PostgreSQL 15 only the owner may create objects in the public schema).
SELECT format('CREATE DATABASE %I OWNER %I ENCODING %L', name, name, 'UTF8')
  FROM unnest(ARRAY['prefect', 'mlflow', 'optuna', 'driftloop']) AS name
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = name) \gexec

-- One store's credentials open no other store's database.
REVOKE CONNECT, TEMPORARY ON DATABASE prefect, mlflow, optuna, driftloop FROM PUBLIC;

-- Prefect's migrations run CREATE EXTENSION IF NOT EXISTS pg_trgm: created here by the superuser,
-- the migration finds it and the prefect role needs no extra privilege.
\connect prefect
CREATE EXTENSION IF NOT EXISTS pg_trgm;
SQL
echo "postgres-init: roles and databases prefect, mlflow, optuna, driftloop are ready"
