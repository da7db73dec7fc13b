"""Hostile model artifacts: our loaders run no code that our own training did not write.

A real registry (SQLite) and real logged models. The attacks: bytes of a registered model
changed in the artifact store; a pickle payload that writes a marker file, registered with
correct-looking hashes or swapped in for a good model's file; a version registered by someone
else. The control test shows the payload is live: MLflow's own loader executes it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from prefect.logging import disable_run_logger

from tasks.artifacts import UntrustedModelError, hash_tags, load_version
from tasks.gate import Check, GateReport
from tasks.promote import apply_decision
from tasks.registry import get_version
from tasks.score import score
from tasks.settings import load_config
from tasks.stores import DataStore, Stores
from tests.candidates import logged_candidate, registry_of_its_own

NAME = "hostile-model"


class Payload:
    """Unpickling this object writes `marker`: what an attacker's model file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",))


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    return registry_of_its_own(tmp_path, monkeypatch, "hostile")


def passed() -> GateReport:
    return GateReport("roc_auc", True, [Check("first model", True, "no champion yet")], 0.7, None, None)


def champion_of(client: MlflowClient, tmp_path: Path) -> str:
    decision = apply_decision(client, logged_candidate(NAME), passed(), None, tmp_path / "locks")
    assert decision.version is not None
    return decision.version


def model_file(client: MlflowClient, version: str, name: str) -> Path:
    """The file as the artifact store holds it (a local folder here; a bucket in production)."""
    source = client.get_model_version(NAME, version).source  # models:/m-<id> in MLflow 3
    location = client.get_logged_model(source.rsplit("/", 1)[-1]).artifact_location
    path = Path(location.removeprefix("file://")) / name
    assert path.exists(), f"{path} missing"
    return path


def log_payload(marker: Path) -> str:
    """A pickle-format sklearn-flavour model whose file runs code when unpickled; returns its URI."""
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(Payload(marker), name="model", serialization_format="pickle")
    marker.unlink(missing_ok=True)  # MLflow loads what it logs (a pickle model runs here, too): start clean
    return info.model_uri


def test_a_good_version_loads(client: MlflowClient, tmp_path: Path) -> None:
    version = champion_of(client, tmp_path)

    model = load_version(NAME, version, client)

    assert model.predict([[0.5]]).shape == (1,)


def test_a_tampered_model_file_is_refused(client: MlflowClient, tmp_path: Path) -> None:
    version = champion_of(client, tmp_path)
    path = model_file(client, version, "model.skops")
    path.write_bytes(path.read_bytes() + b"\0")

    with pytest.raises(UntrustedModelError, match=r"model.skops: sha256 .* but .* was recorded"):
        load_version(NAME, version, client)


def test_a_deleted_model_file_is_refused(client: MlflowClient, tmp_path: Path) -> None:
    version = champion_of(client, tmp_path)
    model_file(client, version, "MLmodel").unlink()

    with pytest.raises(UntrustedModelError, match="MLmodel: missing"):
        load_version(NAME, version, client)


def test_the_payload_is_live_mlflow_itself_would_run_it(client: MlflowClient, tmp_path: Path) -> None:
    """Control: without our loader, loading this model executes the attacker's code."""
    marker = tmp_path / "marker-control"
    uri = log_payload(marker)
    program = (
        f"import mlflow; mlflow.set_tracking_uri({mlflow.get_tracking_uri()!r}); mlflow.sklearn.load_model({uri!r})"
    )

    subprocess.run([sys.executable, "-c", program], capture_output=True, timeout=120, check=False)

    assert marker.read_text() == "code ran"


def test_a_pickle_model_with_correct_hashes_is_never_unpickled(client: MlflowClient, tmp_path: Path) -> None:
    """Someone with registry access registers a pickle model and records its true hashes."""
    marker = tmp_path / "marker-registered"
    uri = log_payload(marker)
    version = mlflow.register_model(uri, NAME, tags=hash_tags(uri)).version

    with pytest.raises(UntrustedModelError, match="serialized as 'pickle'; only skops is loaded"):
        load_version(NAME, str(version), client)
    assert not marker.exists()


def test_a_payload_swapped_in_for_a_good_model_file_is_never_loaded(client: MlflowClient, tmp_path: Path) -> None:
    version = champion_of(client, tmp_path)
    marker = tmp_path / "marker-swapped"
    payload_uri = log_payload(marker)
    payload = Path(mlflow.artifacts.download_artifacts(artifact_uri=payload_uri)) / "model.pkl"
    model_file(client, version, "model.skops").write_bytes(payload.read_bytes())

    with pytest.raises(UntrustedModelError, match=r"model\.skops: sha256"):
        load_version(NAME, version, client)
    assert not marker.exists()


def test_a_version_registered_outside_driftloop_is_refused(client: MlflowClient, tmp_path: Path) -> None:
    candidate = logged_candidate(NAME)
    version = mlflow.register_model(candidate.model_uri, NAME).version  # no recorded hashes

    with pytest.raises(UntrustedModelError, match="no recorded artifact hashes"):
        load_version(NAME, str(version), client)


def test_the_scorer_refuses_a_tampered_champion_and_logs_nothing(
    client: MlflowClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, repo_root: Path
) -> None:
    config = load_config(repo_root / "configs" / "flights.yaml").model_copy(update={"model_name": NAME})
    version = champion_of(client, tmp_path)
    path = model_file(client, version, "model.skops")
    path.write_bytes(path.read_bytes()[:-10])
    monkeypatch.setenv("DRIFTLOOP_HOME", str(tmp_path / "home"))
    stores = Stores.from_env()
    batch = pd.DataFrame({"x": [0.5]})

    with disable_run_logger(), pytest.raises(UntrustedModelError, match=r"model\.skops"):
        score.fn(config=config, frame=batch, batch_id="b1", champion=get_version(NAME, version), stores=stores)
    assert DataStore(stores.data_uri).find("inference", config.name) == []
