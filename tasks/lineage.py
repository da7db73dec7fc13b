"""Lineage: what a training run records about itself, and the set-up every run starts with."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from prefect import get_run_logger, runtime, task

from tasks.ingest import LandedBatch
from tasks.settings import TimeWindow, TrainingConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
CODE_PACKAGES = ("tasks", "flows")  # driftloop's own code, whatever installed it
MODEL_LIBRARIES = ("driftloop", "scikit-learn", "optuna", "numpy", "pandas")  # versions that shape a model


@dataclass(frozen=True)
class RunContext:
    """Why and from what a training run happened; recorded on the MLflow run and the version."""

    reason: str
    window: TimeWindow
    flow_run_id: str | None
    git_revision: str
    config_sha256: str
    idempotency_key: str  # same data, config and code: same key (see `idempotency_key`)

    @property
    def study_name(self) -> str:
        """One Optuna study per training run, named so a person can find it from the run."""
        return f"{self.window.label()}-{(self.flow_run_id or self.config_sha256)[:8]}"


def git_revision(root: Path = REPO_ROOT) -> str:
    """HEAD's commit, with `-dirty` when tracked files changed; `unknown` outside a git checkout."""
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}-dirty" if dirty else head


def config_sha256(config: TrainingConfig) -> str:
    return hashlib.sha256(config.model_dump_json().encode()).hexdigest()


def code_sha256(root: Path = REPO_ROOT) -> str:
    """The identity of the code that trains: driftloop's source files and the libraries that shape a model.

    Every source file of driftloop's packages counts by path and content. It needs no git checkout
    (an installed wheel has the same files), and an upgrade of the code or of scikit-learn changes
    it, so a rerun after an upgrade trains anew.
    """
    digest = hashlib.sha256()
    for package in CODE_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    for library in MODEL_LIBRARIES:
        try:
            version = importlib.metadata.version(library)
        except importlib.metadata.PackageNotFoundError:
            version = "not installed"
        digest.update(f"{library}=={version}\0".encode())
    return digest.hexdigest()


def idempotency_key(code_digest: str, config_digest: str, window: TimeWindow, batch_digests: list[str]) -> str:
    """Same data, config and code give the same key; why or when the run happened does not count."""
    identity = {
        "config_sha256": config_digest,
        "code_sha256": code_digest,
        "window": window.label(),
        "batches": sorted(batch_digests),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


@task
def prepare(config: TrainingConfig, window: TimeWindow, reason: str, batches: list[LandedBatch]) -> RunContext:
    """Pin down the run's lineage: why, on what data and window, from which code and config."""
    flow_run_id = runtime.flow_run.id
    revision, config_digest = git_revision(), config_sha256(config)
    context = RunContext(
        reason=reason,
        window=window,
        flow_run_id=str(flow_run_id) if flow_run_id else None,
        git_revision=revision,
        config_sha256=config_digest,
        idempotency_key=idempotency_key(code_sha256(), config_digest, window, [b.digest for b in batches]),
    )
    get_run_logger().info(
        "training %s on %s (reason: %s, revision %s)",
        config.model_name,
        window.label(),
        reason,
        context.git_revision[:12],
    )
    return context
