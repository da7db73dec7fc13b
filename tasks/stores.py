"""Where state lives: one home folder by default, every store a URI that config can move.

Nothing here runs at import. `Stores.from_env()` resolves the locations once per process;
`DataStore` is the only code that touches landed, quarantined and processed batches, through
fsspec, so a `s3://` or `gs://` data root is a change of URI (plus the fsspec driver).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from tasks.pgsql import is_postgres_url
from tasks.services import redact, sqlite_path, with_busy_timeout

DEFAULT_HOME = ".driftloop"


@dataclass(frozen=True)
class Stores:
    """Locations of every store. Defaults live under `home`; each can be overridden by env."""

    home: Path
    mlflow_tracking_uri: str
    mlflow_artifact_root: str | None  # None: the tracking server's own artifact store
    optuna_storage: str
    data_uri: str
    lock_dir: Path
    audit_dir: Path  # the append-only promotion history (tasks/audit.py); shared, like lock_dir
    # a PostgreSQL database every host reaches: when set, the promotion lock and the promotion
    # history live there instead of lock_dir and audit_dir (tasks/pgsql.py); run leases stay per host
    coordination_url: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Stores:
        env = os.environ if env is None else env
        home = Path(env.get("DRIFTLOOP_HOME", DEFAULT_HOME)).expanduser().resolve()
        tracking = with_busy_timeout(
            env.get("DRIFTLOOP_MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")
        )
        # a tracking server keeps the artifacts where it was told to (its --artifacts-destination):
        # a folder of this machine would be one no other worker, and no server, can read
        local_root = None if tracking.startswith(("http://", "https://")) else (home / "mlflow" / "artifacts").as_uri()
        return cls(
            home=home,
            mlflow_tracking_uri=tracking,
            mlflow_artifact_root=env.get("DRIFTLOOP_MLFLOW_ARTIFACT_ROOT", local_root),
            optuna_storage=env.get("DRIFTLOOP_OPTUNA_STORAGE", f"journal:{home / 'optuna' / 'journal.log'}"),
            data_uri=env.get("DRIFTLOOP_DATA_URI", (home / "data").as_uri()),
            lock_dir=Path(env.get("DRIFTLOOP_LOCK_DIR", str(home / "locks"))),
            audit_dir=Path(env.get("DRIFTLOOP_AUDIT_DIR", str(home / "audit"))),
            coordination_url=coordination_url(env.get("DRIFTLOOP_COORDINATION_URL")),
        )

    @property
    def promotion_locks(self) -> Path | str:
        """Where the promotion lock is taken: the coordination database, else the lock folder."""
        return self.coordination_url or self.lock_dir

    @property
    def history(self) -> Path | str:
        """Where the promotion history is kept: the coordination database, else the audit folder."""
        return self.coordination_url or self.audit_dir

    def ensure_local_dirs(self) -> None:
        """Create the local folders the default (file and SQLite) stores need."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        if (database := sqlite_path(self.mlflow_tracking_uri)) is not None:
            database.parent.mkdir(parents=True, exist_ok=True)
        if self.optuna_storage.startswith("journal:"):
            Path(self.optuna_storage.removeprefix("journal:")).parent.mkdir(parents=True, exist_ok=True)
        if self.optuna_storage.startswith("sqlite:///"):
            Path(self.optuna_storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)


def coordination_url(url: str | None) -> str | None:
    """The coordination database's URL: PostgreSQL only (locks across hosts need a server)."""
    if not url:
        return None
    if not is_postgres_url(url):
        raise ValueError(f"DRIFTLOOP_COORDINATION_URL must be a PostgreSQL URL (postgresql://...), got {redact(url)!r}")
    return url


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class DataStore:
    """Landed, quarantined and processed batches under one root URI.

    Landed batches are immutable and content-addressed: the file name starts with the SHA-256
    of the bytes, and landing the same bytes twice is a no-op. A rejected batch is moved, never
    deleted, to quarantine/ next to a JSON file that says why.
    """

    # landed/quarantine/processed: batches; inference: the scored log; labels: delayed labels;
    # monitoring: drift-check results and alerts; reports: Evidently HTML reports; tuning: the frames
    # a shared study's workers tune on (tasks/tune_share.py).
    AREAS = ("landed", "quarantine", "processed", "inference", "labels", "monitoring", "reports", "tuning")

    def __init__(self, root_uri: str) -> None:
        self.root_uri = root_uri.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.root_uri)

    def _path(self, area: str, dataset: str, name: str = "") -> str:
        if area not in self.AREAS:
            raise ValueError(f"unknown data area {area!r}")
        return "/".join(part for part in (self.root, area, dataset, name) if part)

    def path(self, area: str, dataset: str, name: str = "") -> str:
        """Where an object of `area` lives (whether or not it exists yet)."""
        return self._path(area, dataset, name)

    def land(self, dataset: str, name: str, data: bytes) -> tuple[str, str]:
        """Store `data` as an immutable landed batch; returns (path, sha256).

        The same bytes are never stored twice: a batch already landed or already processed is
        reused where it is (a rerun reads the very file the first run validated). A batch in
        quarantine is landed again, so a rerun reports its failures again and moves it back.
        """
        digest = sha256_bytes(data)
        name = f"{digest[:16]}-{name}"
        processed = self._path("processed", dataset, name)
        if self.fs.exists(processed):
            return processed, digest
        path = self._path("landed", dataset, name)
        if not self.fs.exists(path):
            self.put("landed", dataset, name, data)
        return path, digest

    def processed_path(self, dataset: str, path: str) -> str:
        """Where a landed batch lives once it passed validation."""
        return self._moved_path("processed", dataset, path)

    def _moved_path(self, area: str, dataset: str, path: str) -> str:
        """Where a landed batch lives once moved to `area` (it keeps its content-addressed name)."""
        return self._path(area, dataset, path.rsplit("/", 1)[-1])

    def settle(self, path: str, dataset: str) -> str:
        """Move a batch that passed validation from landed/ to processed/ (byte-identical); idempotent."""
        target = self.processed_path(dataset, path)
        if path == target:
            return target
        self.fs.makedirs(self._path("processed", dataset), exist_ok=True)
        self._move_unless_gone(path, target)
        return target

    def read_landed(self, path: str, dataset: str) -> bytes:
        """A landed batch's bytes, also once a concurrent run on the same bytes has settled or quarantined it."""
        moved = [self._moved_path(area, dataset, path) for area in ("processed", "quarantine")]
        for candidate in [path, *moved]:
            try:
                return self.read_bytes(candidate)
            except FileNotFoundError:
                continue
        name = path.rsplit("/", 1)[-1]
        raise FileNotFoundError(f"batch {name} is in none of landed/, processed/ or quarantine/ of {dataset}")

    def _move_unless_gone(self, source: str, target: str) -> None:
        """Move `source` to `target`, unless it is gone: a run on the same bytes moved it first."""
        try:
            self.fs.mv(source, target)
        except FileNotFoundError:
            if self.fs.exists(source):
                raise

    def put(self, area: str, dataset: str, name: str, data: bytes) -> str:
        """Write (or replace) one object atomically (readers never see half of it); `name` may contain `/`."""
        path = self._path(area, dataset, name)
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        # a name of its own: two runs landing the same bytes at once must not move each other's file
        tmp = f"{path}.{uuid.uuid4().hex}.partial"
        self.fs.pipe_file(tmp, data)
        self.fs.mv(tmp, path)
        return path

    def remove(self, path: str) -> None:
        """Delete one object, and its folder once empty; one already gone is fine (another remover was first)."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(path)
        if isinstance(self.fs, LocalFileSystem):  # an object store has no folders to leave behind
            with contextlib.suppress(OSError):
                self.fs.rmdir(path.rsplit("/", 1)[0])

    def find(self, area: str, dataset: str, suffix: str = "") -> list[str]:
        """Every object under area/dataset (recursively) whose name ends with `suffix`, sorted."""
        folder = self._path(area, dataset)
        if not self.fs.exists(folder):
            return []
        return sorted(p for p in self.fs.find(folder) if p.endswith(suffix) and not p.endswith(".partial"))

    def read_bytes(self, path: str) -> bytes:
        return bytes(self.fs.cat_file(path))

    def open(self, path: str) -> Any:
        """A seekable binary file: readers such as Parquet's footer need only part of an object."""
        return self.fs.open(path, "rb")

    def quarantine(self, path: str, dataset: str, reason: dict[str, Any]) -> str:
        """Move a landed batch to quarantine/ and write its machine-readable reason beside it.

        The same bytes quarantined again (a later run, another contract) keep what was said of
        them before: the reason file holds the newest reason, its earlier ones under `earlier`.
        """
        target = self._moved_path("quarantine", dataset, path)
        name = target.rsplit("/", 1)[-1]
        self.fs.makedirs(self._path("quarantine", dataset), exist_ok=True)
        reason_path = self._path("quarantine", dataset, f"{name}.reason.json")
        record = dict(reason)
        if self.fs.exists(reason_path):
            previous = json.loads(self.read_bytes(reason_path))
            record["earlier"] = [*previous.pop("earlier", []), previous]
        # the reason first: a crash in between leaves a reason and the batch still in landed/
        self.put("quarantine", dataset, f"{name}.reason.json", json.dumps(record, indent=2, default=str).encode())
        self._move_unless_gone(path, target)
        return target

    def listing(self, area: str, dataset: str) -> list[str]:
        folder = self._path(area, dataset)
        if not self.fs.exists(folder):
            return []
        return sorted(p for p in self.fs.ls(folder, detail=False) if not p.endswith(".partial"))

    def uri(self, path: str) -> str:
        """A URI a person or MLflow can follow back to the batch."""
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        return f"{'file' if protocol == 'local' else protocol}://{path}"
