"""The champion the service answers with, and how it follows the alias without a failed request.

`load_served` loads one registered version through the same hash-checked loader as batch scoring
(tasks/artifacts.py), refuses a version whose signature is not the config's features, and has it
answer its own logged input example (the smoke record) before it may serve. `ChampionFollower`
reads the alias every `serving.poll_seconds`; when it moves (promotion, rollback) the new version is
loaded beside the old one and swapped in by one reference assignment: a request reads the
reference once, so it is answered wholly by one version, and the old model lives until the last
request holding it ends. A version that fails to load or to answer is never served: the old one
stays and the error is kept for /health and /metrics; the same version is not tried again until
the alias moves once more.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.models import Model

from tasks.artifacts import download, load_verified_folder, recorded_manifest
from tasks.registry import CHAMPION, TAG_DECIDED_AT, version_by_alias
from tasks.score import scored_frame
from tasks.settings import TrainingConfig

log = logging.getLogger("driftloop.serve")

TAG_DATA_DIGEST = "driftloop.batch_sha256"  # the training batches' digests, recorded at training


class RefusedVersion(RuntimeError):
    """A version the service will not answer with, and why."""


@dataclass(frozen=True)
class ServedVersion:
    """One loaded version and what /model says of it."""

    model: Any
    name: str
    version: str
    run_id: str | None
    data_digest: str | None
    promoted_at: str | None
    loaded_at: datetime

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "alias": CHAMPION,
            "run_id": self.run_id,
            "training_data_digest": self.data_digest,
            "promoted_at": self.promoted_at,
            "loaded_at": self.loaded_at.isoformat(),
        }


def load_served(config: TrainingConfig, version: str, client: MlflowClient) -> ServedVersion:
    """Load `version` of the config's model, check it, have it answer its smoke record; RefusedVersion if not."""
    name = config.model_name
    what = f"model {name} version {version}"
    try:
        found = client.get_model_version(name, version)
        recorded = recorded_manifest(dict(found.tags), what)
        with tempfile.TemporaryDirectory() as tmp:
            folder = download(f"models:/{name}/{version}", Path(tmp), client)
            model = load_verified_folder(folder, recorded, what)
            logged = Model.load(str(folder))
            example = logged.load_input_example(str(folder))
    except RefusedVersion:
        raise
    except Exception as error:
        raise RefusedVersion(f"{what} failed to load: {type(error).__name__}: {error}") from error
    check_signature(config, logged, what)
    smoke_test(config, model, example, what)
    tags = dict(found.tags)
    return ServedVersion(
        model=model,
        name=name,
        version=str(version),
        run_id=found.run_id,
        data_digest=tags.get(TAG_DATA_DIGEST),
        promoted_at=tags.get(TAG_DECIDED_AT),
        loaded_at=datetime.now(UTC),
    )


def check_signature(config: TrainingConfig, logged: Model, what: str) -> None:
    """The version must take exactly the config's features: otherwise requests validated by the config mislead it."""
    signature = logged.signature
    if signature is None:
        raise RefusedVersion(f"{what} has no signature: it was not logged by driftloop's training")
    names = set(signature.inputs.input_names())
    wanted = set(config.features.all)
    if names != wanted:
        missing, extra = sorted(wanted - names), sorted(names - wanted)
        raise RefusedVersion(f"{what} takes other inputs than the config's features (missing {missing}, extra {extra})")


def smoke_test(config: TrainingConfig, model: Any, example: Any, what: str) -> None:
    """The version answers its own logged input example with one finite prediction per row."""
    if not isinstance(example, pd.DataFrame) or example.empty:
        raise RefusedVersion(f"{what} has no input example to answer: it was not logged by driftloop's training")
    try:
        prediction, confidence, _ = scored_frame(model, example, config)
    except Exception as error:
        raise RefusedVersion(f"{what} failed to answer its input example: {type(error).__name__}: {error}") from error
    numbers = confidence if confidence is not None else prediction
    values = np.asarray(numbers, dtype="float64")
    if len(values) != len(example) or not np.isfinite(values).all():
        raise RefusedVersion(f"{what} answered its input example with {values.tolist()}: not one finite value per row")
    if config.task != "regression" and ((values < 0) | (values > 1)).any():
        raise RefusedVersion(f"{what} answered probabilities outside [0, 1]: {values.tolist()}")


class ChampionFollower:
    """Holds the served version and moves it when the champion alias moves."""

    def __init__(
        self,
        config: TrainingConfig,
        client: MlflowClient,
        loader: Callable[[TrainingConfig, str, MlflowClient], ServedVersion] = load_served,
        on_swap: Callable[[ServedVersion], None] | None = None,
    ) -> None:
        self.config = config
        self.client = client
        self.loader = loader
        self.on_swap = on_swap
        self.current: ServedVersion | None = None  # replaced whole, never changed in place
        self.last_error: str | None = None
        self.refused: dict[str, str] = {}  # version -> why; not tried again until the alias moves
        self.failed_loads = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one refresh at a time (the poller and a forced refresh)

    def refresh(self) -> bool:
        """Read the alias once; load and swap in a new champion. True when the served version changed."""
        with self._lock:
            try:
                ref = version_by_alias(self.config.model_name, CHAMPION, self.client)
            except Exception as error:  # the registry is down: keep answering with what we have
                self.last_error = f"reading the champion alias failed: {type(error).__name__}: {error}"
                log.warning(self.last_error)
                return False
            if ref is None:
                if self.current is None:
                    self.last_error = f"no champion: {self.config.model_name} has no version with alias {CHAMPION!r}"
                return False
            if self.current is not None and ref.version == self.current.version:
                self.refused.clear()
                return False
            if ref.version in self.refused:
                return False
            try:
                served = self.loader(self.config, ref.version, self.client)
            except RefusedVersion as error:
                self.refused = {ref.version: str(error)}
                self.failed_loads += 1
                self.last_error = str(error)
                log.error("%s; still serving %s", error, self.current.version if self.current else "nothing")
                return False
            self.current = served
            self.last_error = None
            self.refused.clear()
            log.info("now serving %s version %s", served.name, served.version)
            if self.on_swap:
                self.on_swap(served)
            return True

    def start(self) -> None:
        self.refresh()
        self._thread = threading.Thread(target=self._poll, name="champion-follower", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(self.config.serving.poll_seconds):
            self.refresh()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
