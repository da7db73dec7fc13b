"""The quick SQLite view of the registry answers exactly what MLflow's client answers, on a real store.

`driftloop status` reads MLflow's SQLite tables directly (tasks/registry_view.py); this is where an
MLflow upgrade that changes them would show.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from tasks.registry_view import ClientView, SqliteView, open_view
from tests.candidates import registry_of_its_own

NAME = "view-model"


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[MlflowClient, Path]:
    client = registry_of_its_own(tmp_path, monkeypatch, NAME)
    client.create_registered_model(NAME)
    runs = []
    for index in range(4):
        with mlflow.start_run(tags={"driftloop.window": f"window {index}", "driftloop.decision": "promoted"}) as run:
            mlflow.log_metric("holdout_roc_auc", 0.6 + index / 100)
            mlflow.log_metric("holdout_roc_auc", 0.7 + index / 100)  # the latest value is the one read
            mlflow.log_metric("gap", math.nan)
            mlflow.log_params({"learning_rate": 0.1 * (index + 1), "max_depth": index + 2})
            mlflow.log_text('{"a": 1}', "gate/report.json")
            for path in ("explanations/pd/a.png", "explanations/pd-b.json", "explanations/pd_c.json", "other/x.txt"):
                mlflow.log_text(path, path)  # '-' sorts before '/', '_' after: the client's order is per folder
        runs.append(run.info.run_id)
        version = client.create_model_version(NAME, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
        client.set_model_version_tag(NAME, version.version, "driftloop.decision", f"decision {index}")
        time.sleep(0.01)  # distinct start times: the order is by start time
    client.delete_run(runs[1])  # a deleted run is never listed
    client.delete_model_version(NAME, "1")  # nor a deleted version
    with mlflow.start_run(run_name="still running"):
        pass
    client.set_terminated(mlflow.last_active_run().info.run_id, status="FAILED")
    client.set_registered_model_alias(NAME, "champion", "3")
    client.set_registered_model_alias(NAME, "previous-champion", "2")
    monitoring = mlflow.create_experiment(f"{NAME}-monitoring")
    with mlflow.start_run(experiment_id=monitoring, tags={"driftloop.status": "drift"}):
        mlflow.log_metric("drift_share", 0.25)
    return client, tmp_path / "mlflow.db"


def _same(left: object, right: object) -> bool:
    return repr(left) == repr(right)  # NaN == NaN in a repr, not in ==


def test_the_sqlite_view_answers_what_the_client_answers(store: tuple[MlflowClient, Path]) -> None:
    client, path = store
    quick, slow = SqliteView(path, lambda: client), ClientView(client)
    for alias in ("champion", "previous-champion", "no-such-alias"):
        assert quick.version_by_alias(NAME, alias) == slow.version_by_alias(NAME, alias)
    assert quick.version_by_alias("no-such-model", "champion") is None
    assert slow.version_by_alias("no-such-model", "champion") is None
    champion = quick.version_by_alias(NAME, "champion")
    assert champion is not None
    assert champion.version == "3"
    assert champion.tags["driftloop.decision"] == "decision 2"
    assert champion.run_id is not None
    assert _same(quick.run_metrics(champion.run_id), slow.run_metrics(champion.run_id))
    assert quick.run_metrics(champion.run_id)["holdout_roc_auc"] == pytest.approx(0.72)
    for experiment, limit in ((NAME, 10), (NAME, 2), (f"{NAME}-monitoring", 1), ("no-such-experiment", 5)):
        assert _same(quick.recent_runs(experiment, limit), slow.recent_runs(experiment, limit))
    listed = quick.recent_runs(NAME, 10)
    assert [run.status for run in listed] == ["FAILED", "FINISHED", "FINISHED", "FINISHED"]  # newest first
    assert [run.tags.get("driftloop.window") for run in listed[1:]] == ["window 3", "window 2", "window 0"]


def test_open_view_reads_sqlite_directly_and_anything_else_through_the_client(
    store: tuple[MlflowClient, Path], tmp_path: Path
) -> None:
    client, path = store
    assert isinstance(open_view(f"sqlite:///{path}", lambda: client), SqliteView)
    not_mlflow = tmp_path / "other.db"
    not_mlflow.write_bytes(b"")  # a file MLflow never made: its tables are missing
    assert isinstance(open_view(f"sqlite:///{not_mlflow}", lambda: client), ClientView)
    assert isinstance(open_view(f"sqlite:///{tmp_path / 'absent.db'}", lambda: client), ClientView)
    assert isinstance(open_view("http://127.0.0.1:5000", lambda: client), ClientView)


def test_the_sqlite_view_reads_versions_runs_and_run_files_as_the_client_does(
    store: tuple[MlflowClient, Path],
) -> None:
    client, path = store
    quick, slow = SqliteView(path, lambda: client), ClientView(client)
    for version in ("1", "2", "3", "4", "99", "two"):
        assert quick.version(NAME, version) == slow.version(NAME, version)
    assert quick.version(NAME, "1") is None  # deleted
    found = quick.version(NAME, "3")
    assert found is not None
    assert found.aliases == ["champion"]
    assert found.ref.run_id is not None
    run_id = found.ref.run_id
    assert _same(quick.run(run_id), slow.run(run_id))
    assert quick.run(run_id).params["max_depth"] == "4"
    for file in ("gate/report.json", "gate/missing.json", "explanations/pd/a.png"):
        assert quick.read_run_file(run_id, file) == slow.read_run_file(run_id, file)
    assert quick.read_run_file(run_id, "gate/report.json") == '{"a": 1}'
    assert quick.read_run_file(run_id, "gate/missing.json") is None
    for folder in ("explanations", "other", "absent"):
        assert quick.run_files(run_id, folder) == slow.run_files(run_id, folder)
    assert quick.run_files(run_id, "explanations") == [
        "explanations/pd/a.png",
        "explanations/pd-b.json",
        "explanations/pd_c.json",
    ]
