"""The server shape for real: Prefect server, MLflow tracking server and Optuna on one PostgreSQL.

A throwaway cluster (tests/postgres.py), one database per store, the artifacts in a folder behind
the MLflow server (an object store's place). The training flow runs as a user would start it, with
only environment variables pointing it at the servers: no code path may assume SQLite or a path.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from flows.local_stack import free_port, prefect_server, stack_env, stop
from tests.budget import with_small_budget
from tests.postgres import Cluster
from tests.servers import start_mlflow_server

pytestmark = pytest.mark.e2e

CONFIG = "bikeshare"  # a small dataset: the stores are under test, not the model


def test_a_training_run_keeps_every_store_in_postgresql(cluster: Cluster, tmp_path: Path, repo_root: Path) -> None:
    for database in ("prefect", "mlflow", "optuna"):
        cluster.create_database(database)
    home = tmp_path / "home"
    mlflow_port = free_port()
    mlflow_server = start_mlflow_server(
        cluster.url("mlflow"), tmp_path / "artifacts", mlflow_port, tmp_path / "mlflow-server.log"
    )
    env = {
        **stack_env(home),
        "PREFECT_API_DATABASE_CONNECTION_URL": cluster.url("prefect", driver="asyncpg"),
        "DRIFTLOOP_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}",
        "DRIFTLOOP_OPTUNA_STORAGE": cluster.url("optuna"),
    }
    config = tmp_path / f"{CONFIG}.yaml"
    config.write_text(
        yaml.safe_dump(with_small_budget(yaml.safe_load((repo_root / "configs" / f"{CONFIG}.yaml").read_text())))
    )
    try:
        with prefect_server(home, env) as (_, served_env):
            run = subprocess.run(
                [sys.executable, "-m", "flows.training", "--config", str(config)],
                cwd=repo_root, env=served_env, capture_output=True, text=True, timeout=900,
            )  # fmt: skip
    finally:
        stop(mlflow_server)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    model = yaml.safe_load(config.read_text())["model_name"]
    # the registry and its champion are rows in PostgreSQL, served by the MLflow server
    assert cluster.query("mlflow", "SELECT name, version FROM model_versions") == [(model, 1)]
    assert cluster.query("mlflow", "SELECT alias, version FROM registered_model_aliases") == [("champion", 1)]
    # the study: every trial in PostgreSQL, none left running
    studies = optuna.get_all_study_summaries(storage=cluster.url("optuna"))
    assert len(studies) == 1
    states = [state for (state,) in cluster.query("optuna", "SELECT state FROM trials")]
    assert states == ["COMPLETE"] * 3
    # the flow run and its tasks: Prefect's own tables, in PostgreSQL
    runs = cluster.query(
        "prefect", "SELECT flow.name, flow_run.state_type FROM flow_run JOIN flow ON flow.id = flow_run.flow_id"
    )
    assert runs == [("training", "COMPLETED")]
    assert cluster.query("prefect", "SELECT count(*) FROM task_run WHERE state_type = 'COMPLETED'")[0][0] >= 10
    assert cluster.query("prefect", "SELECT extname FROM pg_extension WHERE extname = 'pg_trgm'") == [("pg_trgm",)]
    # nothing fell back to a local database or journal
    local = [p for p in home.rglob("*") if p.is_file() and p.parent.name in {"mlflow", "optuna", "artifacts"}]
    assert local == []
    assert not (home / "prefect" / "prefect.db").exists()
    # the model's files are behind the server, in its artifact store, and only there
    assert any(p.name == "MLmodel" for p in (tmp_path / "artifacts").rglob("*"))
