"""Read-only views of the registry and the runs, for commands that must answer at once.

`driftloop status` and `driftloop card` need a few rows (aliases, a version's tags, a run's params
and metrics, the last runs of two experiments) and a few small run files. Through MLflow's client
that costs its import and its store's start (~4 s of CPU on two cores) before the first query. On
the embedded default the rows are a few SQL queries away and the files are local, so `SqliteView`
reads them straight from MLflow's SQLite store, read-only, with the standard library; run files
under an artifact root that is not a local folder are read through the client. Any other store
(an MLflow server, PostgreSQL) goes through `ClientView`.

`SqliteView` reads MLflow's SQL schema (registered_model_aliases, model_versions,
model_version_tags, experiments, runs, tags, latest_metrics), which MLflow owns:
tests/integration/test_registry_view.py checks on a real store that both views answer the same,
so an MLflow upgrade that changes those tables fails there; at run time a store whose tables it
cannot read (`sqlite3.Error`) is read through the client instead (`open_view`).
"""

from __future__ import annotations

import math
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urlparse

from tasks.registry_names import VersionRef
from tasks.services import sqlite_path

if TYPE_CHECKING:
    from mlflow import MlflowClient


# MLflow's error codes for a model, version or alias that is not there
MISSING = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"})


def _unless_missing(lookup: Callable[[], Any]) -> Any:
    """What `lookup` returns, or None when MLflow says the model, version or alias is not there."""
    from mlflow.exceptions import MlflowException

    try:
        return lookup()
    except MlflowException as error:
        if error.error_code in MISSING:
            return None
        raise


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    start_time: int | None  # milliseconds since the epoch, as MLflow stores it
    status: str  # MLflow's run status: RUNNING, FINISHED, FAILED, KILLED, SCHEDULED
    tags: dict[str, str]
    metrics: dict[str, float]  # the latest value of each


@dataclass(frozen=True)
class VersionFacts:
    ref: VersionRef
    created_at: int  # milliseconds since the epoch
    aliases: list[str]


@dataclass(frozen=True)
class RunFacts:
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]


class RegistryView(Protocol):
    def version_by_alias(self, name: str, alias: str) -> VersionRef | None: ...

    def version(self, name: str, version: str) -> VersionFacts | None:
        """The version, or None when the model has no such version."""
        ...

    def run(self, run_id: str) -> RunFacts: ...

    def run_metrics(self, run_id: str) -> dict[str, float]: ...

    def recent_runs(self, experiment: str, limit: int) -> list[RunSummary]:
        """The experiment's newest active runs, newest first; none when it does not exist."""
        ...

    def read_run_file(self, run_id: str, path: str) -> str | None:
        """A run artifact's text, or None when the run has no such file."""
        ...

    def run_files(self, run_id: str, folder: str) -> list[str]:
        """Every artifact path under `folder` of the run, recursively."""
        ...


class ClientView:
    """Any MLflow store, through its client."""

    def __init__(self, client: MlflowClient) -> None:
        self.client = client

    def version_by_alias(self, name: str, alias: str) -> VersionRef | None:
        found = _unless_missing(lambda: self.client.get_model_version_by_alias(name, alias))
        if found is None:
            return None
        return VersionRef(name, str(found.version), found.run_id or None, dict(found.tags))

    def version(self, name: str, version: str) -> VersionFacts | None:
        found = _unless_missing(lambda: self.client.get_model_version(name, version))
        if found is None:
            return None
        ref = VersionRef(name, str(found.version), found.run_id or None, dict(found.tags))
        return VersionFacts(ref, int(found.creation_timestamp), sorted(found.aliases or []))

    def run(self, run_id: str) -> RunFacts:
        data = self.client.get_run(run_id).data
        return RunFacts(dict(data.params), dict(data.metrics), dict(data.tags))

    def run_metrics(self, run_id: str) -> dict[str, float]:
        return dict(self.client.get_run(run_id).data.metrics)

    def read_run_file(self, run_id: str, path: str) -> str | None:
        from mlflow.exceptions import MlflowException

        with tempfile.TemporaryDirectory() as folder:
            try:
                local = Path(self.client.download_artifacts(run_id, path, folder))
                return local.read_text(encoding="utf-8")
            except (MlflowException, OSError):
                return None

    def run_files(self, run_id: str, folder: str) -> list[str]:
        paths = []
        for item in self.client.list_artifacts(run_id, folder or None):
            paths += self.run_files(run_id, item.path) if item.is_dir else [item.path]
        return paths

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

    def __init__(self, path: Path, client: Callable[[], MlflowClient]) -> None:
        if not path.is_file():
            raise sqlite3.OperationalError(f"no MLflow store at {path}")
        self.connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        self._make_client = client

    @cached_property
    def _client_view(self) -> ClientView:
        """For run files under a remote artifact root: only then is MLflow imported."""
        return ClientView(self._make_client())

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

    def version(self, name: str, version: str) -> VersionFacts | None:
        try:
            number = int(version)
        except ValueError:
            return None
        found = self._rows(
            "SELECT version, run_id, creation_time FROM model_versions "
            "WHERE name = ? AND version = ? AND current_stage != 'Deleted_Internal'",
            name,
            number,
        )
        if not found:
            return None
        number, run_id, created = found[0]
        tags = self._rows("SELECT key, value FROM model_version_tags WHERE name = ? AND version = ?", name, number)
        aliases = self._rows("SELECT alias FROM registered_model_aliases WHERE name = ? AND version = ?", name, number)
        ref = VersionRef(name, str(number), run_id or None, dict(tags))
        return VersionFacts(ref, int(created), sorted(alias for (alias,) in aliases))

    def run(self, run_id: str) -> RunFacts:
        params = self._rows("SELECT key, value FROM params WHERE run_uuid = ?", run_id)
        tags = self._rows("SELECT key, value FROM tags WHERE run_uuid = ?", run_id)
        return RunFacts(dict(params), self.run_metrics(run_id), dict(tags))

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

    def _artifact_folder(self, run_id: str) -> Path | None:
        """The run's artifact folder when it is a local one (a file: URI), else None."""
        found = self._rows("SELECT artifact_uri FROM runs WHERE run_uuid = ?", run_id)
        uri = urlparse(found[0][0]) if found and found[0][0] else None
        return Path(unquote(uri.path)) if uri is not None and uri.scheme in {"", "file"} else None

    def read_run_file(self, run_id: str, path: str) -> str | None:
        folder = self._artifact_folder(run_id)
        if folder is None:
            return self._client_view.read_run_file(run_id, path)
        try:
            return (folder / path).read_text(encoding="utf-8")
        except OSError:
            return None

    def run_files(self, run_id: str, folder: str) -> list[str]:
        root = self._artifact_folder(run_id)
        if root is None:
            return self._client_view.run_files(run_id, folder)
        paths: list[str] = []
        here = root / folder
        # The client's order: each folder's entries sorted by path, folders expanded where they sort.
        for entry in sorted(here.iterdir(), key=lambda p: p.name) if here.is_dir() else []:
            relative = str(entry.relative_to(root))
            paths += self.run_files(run_id, relative) if entry.is_dir() else [relative]
        return paths


def open_view(tracking_uri: str, client: Callable[[], MlflowClient]) -> RegistryView:
    """The quick view where the store is an embedded SQLite file MLflow has created, else the client's."""
    path = sqlite_path(tracking_uri)
    if path is not None:
        try:
            view = SqliteView(path, client)
            view.recent_runs("", 1)  # the tables are there and readable
            view.version_by_alias("", "")
            return view
        except sqlite3.Error:
            pass
    return ClientView(client())
