"""Move an embedded home (SQLite, journal, local folders) to the server shape the environment names.

MLflow has no route from one tracking store to another, so the registry is copied through its
client, in the order it was written, so that every version keeps its number:

- each registered model, its tags, description and aliases;
- each version's run (its experiment by name, start and end times, status, parameters, every
  metric's history, tags, every artifact) and its logged model's files, byte for byte: the
  hashes recorded at training still match, or the copy is refused;
- the promotion history, line for line (its hash chain intact), into the coordination database
  or the shared audit folder;
- Optuna's studies (`optuna.copy_study`) and the data store's files (batches, the inference log,
  reports).

What is not copied: runs no version came from, MLflow's dataset inputs, and Prefect's flow run
history (the deployments are made again by `prefect deploy`). The source is only read. A model
the target registry already holds is refused, so a migration cannot be run twice by mistake.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import fsspec
import mlflow
import optuna
from mlflow import MlflowClient
from mlflow.entities import LoggedModelStatus, Metric, Param
from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from mlflow.exceptions import MlflowException

from tasks.artifacts import differences, download, manifest_of, recorded_manifest, run_manifest
from tasks.audit import AuditLog
from tasks.history_store import audit_log
from tasks.registry import ensure_experiment
from tasks.services import redact
from tasks.stores import Stores
from tasks.tune import make_storage

logger = logging.getLogger(__name__)

TAG_MIGRATED_FROM = "driftloop.migrated_from"  # on runs and versions: where the copy came from
BATCH = 500  # parameters or metric values per log_batch call (MLflow's limit is 1000)


class MigrationError(RuntimeError):
    """The migration cannot go on without losing or mixing something; nothing after it was written."""


@dataclass
class Migrated:
    models: dict[str, list[str]] = field(default_factory=dict)  # model -> versions copied
    aliases: dict[str, dict[str, str]] = field(default_factory=dict)
    history_lines: dict[str, int] = field(default_factory=dict)
    studies: list[str] = field(default_factory=list)
    data_files: int = 0

    def summary(self) -> str:
        lines = [
            f"model {name}: versions {', '.join(versions)}; aliases "
            + (", ".join(f"{a}={v}" for a, v in sorted(self.aliases.get(name, {}).items())) or "none")
            + f"; history {self.history_lines.get(name, 0)} lines"
            for name, versions in self.models.items()
        ]
        return "\n".join([*lines, f"optuna studies: {len(self.studies)}", f"data files: {self.data_files}"])


def client_for(stores: Stores) -> MlflowClient:
    return MlflowClient(tracking_uri=stores.mlflow_tracking_uri, registry_uri=stores.mlflow_tracking_uri)


def migrate(source: Stores, target: Stores) -> Migrated:
    """Copy everything `source` holds into `target`; what was copied. Raises MigrationError."""
    if source.mlflow_tracking_uri == target.mlflow_tracking_uri:
        raise MigrationError("the source and the target are the same MLflow store: set the server shape's variables")
    # MLflow resolves `models:/m-...` sources against its global stores: the target's, for the whole copy
    mlflow.set_tracking_uri(target.mlflow_tracking_uri)
    mlflow.set_registry_uri(target.mlflow_tracking_uri)
    src, dst = client_for(source), client_for(target)
    models = src.search_registered_models()
    for model in models:
        if _exists(dst, model.name):
            raise MigrationError(
                f"model {model.name} is already registered at {redact(target.mlflow_tracking_uri)}: "
                "nothing was copied (a migration runs once, into an empty registry)"
            )
    done = Migrated()
    for model in models:
        done.models[model.name] = _copy_model(src, dst, model, source, target)
        done.aliases[model.name] = {alias: str(number) for alias, number in model.aliases.items()}
        done.history_lines[model.name] = copy_history(audit_log(source.history, model.name), target, model.name)
    done.studies = copy_studies(source.optuna_storage, target.optuna_storage)
    done.data_files = copy_files(source.data_uri, target.data_uri)
    return done


def _exists(client: MlflowClient, name: str) -> bool:
    try:
        client.get_registered_model(name)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise
    return True


def _copy_model(
    src: MlflowClient, dst: MlflowClient, model: RegisteredModel, source: Stores, target: Stores
) -> list[str]:
    dst.create_registered_model(model.name, tags=dict(model.tags), description=model.description)
    versions = sorted(src.search_model_versions(f"name='{model.name}'"), key=lambda v: int(v.version))
    runs: dict[str, str] = {}  # source run id -> target run id
    for version in versions:
        if version.run_id and version.run_id not in runs:
            runs[version.run_id] = copy_run(src, dst, version.run_id, source, target)
        copy_version(src, dst, version, runs.get(version.run_id or ""), source)
    for alias, number in model.aliases.items():
        dst.set_registered_model_alias(model.name, alias, number)
    return [str(v.version) for v in versions]


def copy_run(src: MlflowClient, dst: MlflowClient, run_id: str, source: Stores, target: Stores) -> str:
    """A copy of run `run_id` in the target's experiment of the same name; its id."""
    run = src.get_run(run_id)
    experiment = src.get_experiment(run.info.experiment_id)
    experiment_id = ensure_experiment(target, experiment.name)  # under the target's artifact root
    tags = {**run.data.tags, TAG_MIGRATED_FROM: f"{redact(source.mlflow_tracking_uri)} run {run_id}"}
    copy = dst.create_run(experiment_id, start_time=run.info.start_time, tags=tags, run_name=run.info.run_name)
    new_id = copy.info.run_id
    params = [Param(k, v) for k, v in run.data.params.items()]
    for start in range(0, len(params), BATCH):
        dst.log_batch(new_id, params=params[start : start + BATCH])
    history = [m for key in run.data.metrics for m in src.get_metric_history(run_id, key)]
    metrics = [Metric(m.key, m.value, m.timestamp, m.step) for m in history]
    for start in range(0, len(metrics), BATCH):
        dst.log_batch(new_id, metrics=metrics[start : start + BATCH])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "artifacts"
        folder.mkdir()
        if src.list_artifacts(run_id):
            folder = download(f"runs:/{run_id}/", folder, src)
            dst.log_artifacts(new_id, str(folder))
    dst.set_terminated(new_id, status=run.info.status, end_time=run.info.end_time)
    if problems := differences(run_manifest(run_id, src), run_manifest(new_id, dst)):
        raise MigrationError(f"run {run_id} copied as {new_id}: its artifacts differ: " + "; ".join(problems))
    return new_id


def copy_version(
    src: MlflowClient, dst: MlflowClient, version: ModelVersion, run_id: str | None, source: Stores
) -> None:  # fmt: skip
    """Register a byte-identical copy of `version` (same number) from its logged model's files."""
    what = f"model {version.name} version {version.version}"
    model_id = version.model_id or logged_model_id(version.source)
    if model_id is None:
        raise MigrationError(f"{what} has no logged model (registered before MLflow 3?): copy it by hand")
    logged = src.get_logged_model(model_id)
    if run_id is None:
        raise MigrationError(f"{what} has no run: copy it by hand")
    experiment = dst.get_run(run_id).info.experiment_id
    with tempfile.TemporaryDirectory() as tmp:
        files = version_files(src, version.name, version.version, Path(tmp))
        copy = dst.create_logged_model(
            experiment, name=logged.name, source_run_id=run_id, tags=dict(logged.tags), params=dict(logged.params),
            model_type=logged.model_type,
        )  # fmt: skip
        dst.log_model_artifacts(copy.model_id, str(files))
    dst.finalize_logged_model(copy.model_id, LoggedModelStatus.READY)
    tags = {**version.tags, TAG_MIGRATED_FROM: f"{redact(source.mlflow_tracking_uri)} version {version.version}"}
    made = dst.create_model_version(
        version.name, f"models:/{copy.model_id}", run_id=run_id, tags=tags, description=version.description,
        model_id=copy.model_id,
    )  # fmt: skip
    if str(made.version) != str(version.version):
        raise MigrationError(
            f"{what} became version {made.version} in the target (the source skips a number): "
            "the history names versions by number, so the copy stops here"
        )
    verify_version(dst, version.name, version.version, dict(version.tags))


def version_files(client: MlflowClient, name: str, number: str, into: Path) -> Path:
    """A version's model files, from `client`'s stores."""
    return download(f"models:/{name}/{number}", into, client)


def logged_model_id(source: str | None) -> str | None:
    """`m-...` from a version's source `models:/m-...` (the store may not fill in `model_id`)."""
    if source and source.startswith("models:/m-"):
        return source.removeprefix("models:/").split("/", 1)[0]
    return None


def verify_version(client: MlflowClient, name: str, number: str, tags: dict[str, str]) -> None:
    """The copied model's files match the hashes recorded at training."""
    what = f"model {name} version {number} (copied)"
    with tempfile.TemporaryDirectory() as tmp:
        found = manifest_of(version_files(client, name, number, Path(tmp)))
    if problems := differences(recorded_manifest(tags, what), found):
        raise MigrationError(f"{what}: " + "; ".join(problems))


def copy_history(source: AuditLog, target: Stores, model: str) -> int:
    """The promotion history line for line (the chain stays verifiable); how many lines the target holds."""
    problems = source.verify()
    if problems:
        raise MigrationError(f"the promotion history at {source.where} is broken: {problems[0]}")
    lines = source._lines()
    destination = audit_log(target.history, model)
    with destination._writer() as (existing, write):
        if existing != lines[: len(existing)]:
            raise MigrationError(f"the promotion history at {destination.where} already holds other decisions")
        for line in lines[len(existing) :]:
            write(line)
    return len(lines)


def copy_studies(source: str, target: str) -> list[str]:
    """Optuna's studies, each under its name; ones the target already has are left alone."""
    if source == target:
        return []
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    present = {s.study_name for s in optuna.get_all_study_summaries(make_storage(target))}
    copied = []
    for summary in optuna.get_all_study_summaries(make_storage(source)):
        if summary.study_name not in present:
            optuna.copy_study(
                from_study_name=summary.study_name, from_storage=make_storage(source), to_storage=make_storage(target)
            )
            copied.append(summary.study_name)
    return copied


def copy_files(source_uri: str, target_uri: str) -> int:
    """Every file of the data store; a file already in the target must be the same size, or it stops."""
    if source_uri.rstrip("/") == target_uri.rstrip("/"):
        return 0
    source_fs, source_root = fsspec.core.url_to_fs(source_uri)
    target_fs, target_root = fsspec.core.url_to_fs(target_uri)
    if not source_fs.exists(source_root):
        return 0
    copied = 0
    for path in source_fs.find(source_root):
        relative = path[len(source_root.rstrip("/")) + 1 :]
        destination = f"{target_root.rstrip('/')}/{relative}"
        if target_fs.exists(destination):
            if target_fs.size(destination) != source_fs.size(path):
                raise MigrationError(f"{target_uri}/{relative} exists and differs from the source's: not overwritten")
            continue
        target_fs.makedirs(destination.rsplit("/", 1)[0], exist_ok=True)
        with source_fs.open(path, "rb") as reader, target_fs.open(destination, "wb") as writer:
            writer.write(reader.read())
        copied += 1
    return copied
