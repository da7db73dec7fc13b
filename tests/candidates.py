"""Real candidates for promotion tests: a tiny sklearn model logged to MLflow (skops), not registered.

The promotion step registers what it is given, so these tests need what training produces: a
logged model with its file hashes recorded, and an idempotency key.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.tracking import _tracking_service
from mlflow.tracking._model_registry import utils as registry_utils
from sklearn.dummy import DummyClassifier

from tasks.artifacts import hash_tags
from tasks.registry import TAG_IDEMPOTENCY_KEY
from tasks.train import Candidate


def logged_candidate(name: str, key: str | None = None) -> Candidate:
    """Log a one-feature classifier under the active tracking URI; `key` defaults to a fresh one."""
    key = key or uuid.uuid4().hex
    model = DummyClassifier(strategy="prior").fit(np.array([[0.0], [1.0]]), np.array([0, 1]))
    with mlflow.start_run(tags={"driftloop.model_name": name, TAG_IDEMPOTENCY_KEY: key}) as run:
        info = mlflow.sklearn.log_model(model, name="model", serialization_format="skops", pip_requirements=[])
        hashes = hash_tags(info.model_uri)
        mlflow.set_tags(hashes)
    return Candidate(
        name=name,
        run_id=run.info.run_id,
        model_uri=info.model_uri,
        params={},
        idempotency_key=key,
        version_tags={**hashes, TAG_IDEMPOTENCY_KEY: key, "driftloop.run_id": run.info.run_id},
    )


def registry_of_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, experiment: str) -> MlflowClient:
    """Point MLflow's global URIs at a SQLite registry under `tmp_path` (restored after the test)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setattr(_tracking_service.utils, "_tracking_uri", None)
    monkeypatch.setattr(registry_utils, "_registry_uri", None)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment_id = mlflow.create_experiment(experiment, artifact_location=(tmp_path / "artifacts").as_uri())
    mlflow.set_experiment(experiment_id=experiment_id)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)
