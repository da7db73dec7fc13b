"""The MLflow side: connect to the stores, read the registry. Alias moves live in tasks/promote.py.

Aliases, not stages: `champion` is production, `previous-champion` is the rollback target.
Every candidate becomes a model version; its decision is recorded in version tags.
"""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from prefect import task

from tasks.registry_names import (  # noqa: F401  (the registry's vocabulary, re-exported for its readers)
    CHAMPION,
    PREVIOUS,
    PROMOTING,
    TAG_BEST_PARAMS,
    TAG_COMPARED_WITH,
    TAG_DECIDED_AT,
    TAG_DECISION,
    TAG_DECISION_REASON,
    TAG_FITTED_UNTIL,
    TAG_FLOW_RUN,
    TAG_GATE_PASSED,
    TAG_IDEMPOTENCY_KEY,
    TAG_REPLACED,
    TAG_VERSION,
    VersionRef,
)
from tasks.services import TASK_RETRY_DELAYS, bound_http_retries, retry_if_transient, use_wal
from tasks.stores import Stores


def configure_mlflow(stores: Stores, experiment: str) -> str:
    """Point MLflow at our stores and make `experiment` (with our artifact root) the active one."""
    use_wal(stores.mlflow_tracking_uri)
    bound_http_retries()
    mlflow.set_tracking_uri(stores.mlflow_tracking_uri)
    mlflow.set_registry_uri(stores.mlflow_tracking_uri)
    experiment_id = ensure_experiment(stores, experiment)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def ensure_experiment(stores: Stores, name: str) -> str:
    """The experiment's id, creating it with an explicit artifact location (never ./mlruns).

    Against a tracking server with no artifact root set, the server's own (proxied) store.
    """
    client = MlflowClient(tracking_uri=stores.mlflow_tracking_uri)
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return str(existing.experiment_id)
    try:
        root = stores.mlflow_artifact_root
        return str(client.create_experiment(name, artifact_location=f"{root}/{name}" if root else None))
    except MlflowException as error:  # created by a concurrent run in between
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        found = client.get_experiment_by_name(name)
        assert found is not None
        return str(found.experiment_id)


def _is_missing(error: MlflowException) -> bool:
    return error.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}


def version_by_alias(name: str, alias: str, client: MlflowClient | None = None) -> VersionRef | None:
    client = client or MlflowClient()
    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException as error:
        if _is_missing(error):
            return None
        raise
    return VersionRef(name, str(version.version), version.run_id, dict(version.tags))


def get_version(name: str, version: str, client: MlflowClient | None = None) -> VersionRef:
    found = (client or MlflowClient()).get_model_version(name, version)
    return VersionRef(name, str(found.version), found.run_id, dict(found.tags))


def champion(name: str, client: MlflowClient | None = None) -> VersionRef | None:
    return version_by_alias(name, CHAMPION, client)


RETRY_TRANSIENT: dict[str, Any] = {
    "retries": len(TASK_RETRY_DELAYS),
    "retry_delay_seconds": TASK_RETRY_DELAYS,
    "retry_condition_fn": retry_if_transient,
}


@task(name="find-champion", **RETRY_TRANSIENT)
def find_champion(model_name: str) -> VersionRef | None:
    """The version the challenger must beat, read once so evaluation and promotion agree on it."""
    return champion(model_name)


@task(name="connect", **RETRY_TRANSIENT)
def connect(stores: Stores, model_name: str) -> None:
    """Create the local stores if they are local, and point MLflow at ours."""
    stores.ensure_local_dirs()
    configure_mlflow(stores, experiment=model_name)
