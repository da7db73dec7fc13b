"""Read-only views of the registry and the runs, for commands that must answer at once.

`driftloop status` needs a few rows: two aliases, their versions' tags and metrics, the last runs
of two experiments. Through MLflow's client that costs its import and its store's start (~4 s of
CPU on two cores) before the first query. On the embedded default the same rows are a few SQL
queries away, so `SqliteView` reads them straight from MLflow's SQLite store, read-only, with the
standard library. Any other store (an MLflow server, PostgreSQL) goes through `ClientView`.

`SqliteView` reads MLflow's SQL schema (registered_model_aliases, model_versions,
model_version_tags, experiments, runs, tags, latest_metrics), which MLflow owns:
tests/integration/test_registry_view.py checks on a real store that both views answer the same,
so an MLflow upgrade that changes those tables fails there; at run time a store whose tables it
cannot read (`sqlite3.Error`) is read through the client instead (`open_view`).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tasks.registry_names import VersionRef
from tasks.services import sqlite_path

if TYPE_CHECKING:
    from mlflow import MlflowClient


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    start_time: int | None  # milliseconds since the epoch, as MLflow stores it
    status: str  # MLflow's run status: RUNNING, FINISHED, FAILED, KILLED, SCHEDULED
    tags: dict[str, str]
    metrics: dict[str, float]  # the latest value of each


class RegistryView(Protocol):
    def version_by_alias(self, name: str, alias: str) -> VersionRef | None: ...

    def run_metrics(self, run_id: str) -> dict[str, float]: ...

    def recent_runs(self, experiment: str, limit: int) -> list[RunSummary]:
        """The experiment's newest active runs, newest first; none when it does not exist."""
        ...


class ClientView:
    """Any MLflow store, through its client."""

    def __init__(self, client: MlflowClient) -> None:
        self.client = client

    def version_by_alias(self, name: str, alias: str) -> VersionRef | None:
        from tasks.registry import version_by_alias

        if not self.client.search_registered_models(f"name = '{name}'"):
            return None
        return version_by_alias(name, alias, self.client)

    def run_metrics(self, run_id: str) -> dict[str, float]:
        return dict(self.client.get_run(run_id).data.metrics)

    def recent_runs(self, experiment: str, limit: int) -> list[RunSummary]:
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            return []
        runs = self.client.search_runs(
            [found.experiment_id], order_by=["attributes.start_time DESC"], max_results=limit
        )
        return [
            RunSummary(
                run.info.run_id, run.info.start_time, run.info.status, dict(run.data.tags), dict(run.data.metrics)
            )
            for run in runs
        ]


class SqliteView:
    """MLflow's embedded SQLite store, read-only, without importing MLflow."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise sqlite3.OperationalError(f"no MLflow store at {path}")
        self.connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)

    def _rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return self.connection.execute(sql, args).fetchall()

    def version_by_alias(self, name: str, alias: str) -> VersionRef | None:
        found = self._rows(
            "SELECT v.version, v.run_id FROM registered_model_aliases a JOIN model_versions v "
            "ON v.name = a.name AND v.version = a.version WHERE a.name = ? AND a.alias = ?",
            name,
            alias,
        )
        if not found:
            return None
        version, run_id = found[0]
        tags = self._rows("SELECT key, value FROM model_version_tags WHERE name = ? AND version = ?", name, version)
        return VersionRef(name, str(version), run_id or None, dict(tags))

    def run_metrics(self, run_id: str) -> dict[str, float]:
        rows = self._rows("SELECT key, value, is_nan FROM latest_metrics WHERE run_uuid = ?", run_id)
        return {key: math.nan if is_nan else float(value) for key, value, is_nan in rows}

    def recent_runs(self, experiment: str, limit: int) -> list[RunSummary]:
        runs = self._rows(
            "SELECT r.run_uuid, r.start_time, r.status FROM runs r JOIN experiments e "
            "ON e.experiment_id = r.experiment_id WHERE e.name = ? AND r.lifecycle_stage = 'active' "
            "ORDER BY r.start_time DESC, r.run_uuid LIMIT ?",
            experiment,
            limit,
        )
        return [
            RunSummary(
                run_id,
                start_time,
                status,
                dict(self._rows("SELECT key, value FROM tags WHERE run_uuid = ?", run_id)),
                self.run_metrics(run_id),
            )
            for run_id, start_time, status in runs
        ]


def open_view(tracking_uri: str, client: Callable[[], MlflowClient]) -> RegistryView:
    """The quick view where the store is an embedded SQLite file MLflow has created, else the client's."""
    path = sqlite_path(tracking_uri)
    if path is not None:
        try:
            view = SqliteView(path)
            view.recent_runs("", 1)  # the tables are there and readable
            view.version_by_alias("", "")
            return view
        except sqlite3.Error:
            pass
    return ClientView(client())
