"""Artifacts we can trust: hashes recorded when a model is logged, checked before it is loaded.

Loading a model runs code from its files, so our loaders only load a version from our registry,
only after every file of the model matches the SHA-256 recorded when it was logged (the hashes
live in the tracking store, not beside the files they vouch for), and only through skops with our
own list of trusted types. MLflow's own loaders are never used: they unpickle by default, and
read skops' trusted types from the model's own MLmodel file, which an attacker can edit.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import yaml
from mlflow import MlflowClient

Manifest = dict[str, str]  # relative path -> sha256

# Version and run tags that hold the recorded hashes.
TAG_MODEL_MANIFEST = "driftloop.model_manifest"  # JSON manifest of the model's files
TAG_MODEL_SHA256 = "driftloop.model_sha256"  # sha256 of that manifest: one value to compare
TAG_RUN_MANIFEST = "driftloop.run_artifacts"  # JSON manifest of the run's other artifacts

# MLflow saves sklearn models with skops (no pickle). These are exactly the non-default types our
# Pipeline holds (tests/unit/test_model.py checks it for every task type), named rather than taken
# from whatever a file lists. All three come from HistGradientBoosting itself: its fitted trees, and
# the internal preprocessor it builds for categorical features, a FunctionTransformer whose func is
# `partial(check_array, ...)`. A partial is only as safe as what it wraps: skops lists the wrapped
# callable as a type of its own, so a partial around anything but check_array is still refused.
SKOPS_TRUSTED_TYPES = [
    "functools.partial",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.utils.validation.check_array",
]


class UntrustedModelError(RuntimeError):
    """A model we refuse to load: unrecorded, tampered with, or not in our safe format."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# Written by the MLflow client into the folder it downloads a model to (name and version): not
# part of what was logged, and never read by our loader.
WRITTEN_ON_DOWNLOAD = {"registered_model_meta"}


def manifest_of(folder: Path) -> Manifest:
    """Every file under `folder` with its SHA-256, keyed by its path relative to `folder`."""
    files = (p for p in sorted(folder.rglob("*")) if p.is_file())
    return {str(p.relative_to(folder)): sha256_file(p) for p in files if p.name not in WRITTEN_ON_DOWNLOAD}


def manifest_sha256(manifest: Manifest) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def differences(recorded: Manifest, found: Manifest) -> list[str]:
    """What differs between two manifests, file by file, in words."""
    problems = [f"{path}: missing" for path in sorted(recorded.keys() - found.keys())]
    problems += [f"{path}: not recorded (added later)" for path in sorted(found.keys() - recorded.keys())]
    problems += [
        f"{path}: sha256 {found[path][:12]}... but {recorded[path][:12]}... was recorded"
        for path in sorted(recorded.keys() & found.keys())
        if recorded[path] != found[path]
    ]
    return problems


def download(artifact_uri: str, into: Path, client: MlflowClient | None = None) -> Path:
    """Download into `into`, from the stores `client` points at (default: MLflow's configured ones)."""
    uris = {"tracking_uri": client.tracking_uri, "registry_uri": client._registry_uri} if client else {}
    name, _, version = artifact_uri.removeprefix("models:/").rpartition("/")
    if client and artifact_uri.startswith("models:/") and name and version.isdigit():
        # MLflow resolves a registered version against its global registry, whatever `registry_uri` says
        artifact_uri = client.get_model_version_download_uri(name, version)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=str(into), **uris))


def model_manifest(model_uri: str) -> Manifest:
    """The manifest of a logged model's files, read back from the artifact store."""
    with tempfile.TemporaryDirectory() as tmp:
        return manifest_of(download(model_uri, Path(tmp)))


def hash_tags(model_uri: str) -> dict[str, str]:
    """The tags that record a logged model's file hashes (on its run, then on its version)."""
    manifest = model_manifest(model_uri)
    return {TAG_MODEL_MANIFEST: json.dumps(manifest, sort_keys=True), TAG_MODEL_SHA256: manifest_sha256(manifest)}


def run_manifest(run_id: str, client: MlflowClient | None = None) -> Manifest:
    """The manifest of a run's own artifacts (the model is logged separately in MLflow 3)."""
    uris = {"tracking_uri": client.tracking_uri} if client else {}
    with tempfile.TemporaryDirectory() as tmp:
        return manifest_of(Path(mlflow.artifacts.download_artifacts(run_id=run_id, dst_path=tmp, **uris)))


def recorded_manifest(tags: dict[str, str], what: str) -> Manifest:
    raw = tags.get(TAG_MODEL_MANIFEST)
    if not raw or not tags.get(TAG_MODEL_SHA256):
        raise UntrustedModelError(f"{what}: no recorded artifact hashes, so it was not produced by driftloop")
    manifest: Manifest = json.loads(raw)
    if manifest_sha256(manifest) != tags[TAG_MODEL_SHA256]:
        raise UntrustedModelError(f"{what}: the recorded manifest does not match its recorded hash")
    return manifest


def verify_model_folder(folder: Path, recorded: Manifest, what: str) -> None:
    problems = differences(recorded, manifest_of(folder))
    if problems:
        raise UntrustedModelError(
            f"{what}: artifacts do not match the hashes recorded at training: " + "; ".join(problems)
        )


def load_verified_folder(folder: Path, recorded: Manifest, what: str) -> Any:
    """Load a downloaded model folder once its files match `recorded`; skops only, our types only."""
    verify_model_folder(folder, recorded, what)
    flavor = (yaml.safe_load((folder / "MLmodel").read_text()) or {}).get("flavors", {}).get("sklearn", {})
    if flavor.get("serialization_format") != "skops":
        raise UntrustedModelError(
            f"{what}: serialized as {flavor.get('serialization_format', 'pickle')!r}; only skops is loaded"
        )
    # skops lists every scikit-learn estimator when it is imported (~3 s): imported where a model is
    # read, not by every flow process that imports this module (a triggered run reaches Running sooner)
    import skops.io

    path = folder / flavor["pickled_model"]
    untrusted = sorted(set(skops.io.get_untrusted_types(file=path)) - set(SKOPS_TRUSTED_TYPES))
    if untrusted:
        raise UntrustedModelError(f"{what}: {path.name} holds types outside our trusted list: {untrusted}")
    return skops.io.load(path, trusted=SKOPS_TRUSTED_TYPES)


def load_version(name: str, version: str, client: MlflowClient | None = None) -> Any:
    """Load a registered version's sklearn Pipeline after checking every file against its hashes."""
    client = client or MlflowClient()
    found = client.get_model_version(name, version)
    what = f"model {name} version {version}"
    recorded = recorded_manifest(dict(found.tags), what)
    with tempfile.TemporaryDirectory() as tmp:
        return load_verified_folder(download(f"models:/{name}/{version}", Path(tmp), client), recorded, what)


def load_logged(model_uri: str, tags: dict[str, str], what: str) -> Any:
    """Load a logged, not yet registered, model against the hashes recorded on its run."""
    recorded = recorded_manifest(tags, what)
    with tempfile.TemporaryDirectory() as tmp:
        return load_verified_folder(download(model_uri, Path(tmp)), recorded, what)
