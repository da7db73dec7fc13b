"""The single-writer lock of promotion: one decider at a time per registered model.

`locks` is either a folder (a file lock: every decider on one host, or on hosts sharing a file
system that honours `flock`) or a PostgreSQL URL (`DRIFTLOOP_COORDINATION_URL`: a session advisory
lock, for deciders on several hosts). Promotion takes it to move aliases; reconciliation takes it
to finish a promotion a dead run left half done.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

from filelock import FileLock

from tasks.pgsql import advisory_lock

LOCK_TIMEOUT_SECONDS = 300

Locks = Path | str  # a lock folder, or the PostgreSQL URL that coordinates several hosts


def promotion_lock(locks: Locks, model_name: str) -> AbstractContextManager[object]:
    """A lock per registered model, across processes (a folder) or across hosts (PostgreSQL)."""
    if isinstance(locks, str):
        return advisory_lock(locks, "promote", model_name, timeout=LOCK_TIMEOUT_SECONDS)
    locks.mkdir(parents=True, exist_ok=True)
    return FileLock(str(locks / f"promote-{model_name}.lock"), timeout=LOCK_TIMEOUT_SECONDS)
