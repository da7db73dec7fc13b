"""The single-writer lock of promotion: one decider at a time per registered model.

A file lock in a folder every decider shares (a shared folder for several hosts). Promotion takes
it to move aliases; reconciliation takes it to finish a promotion a dead run left half done.
"""

from __future__ import annotations

from pathlib import Path

from filelock import FileLock

LOCK_TIMEOUT_SECONDS = 300


def promotion_lock(lock_dir: Path, model_name: str) -> FileLock:
    """A cross-process lock per registered model."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    return FileLock(str(lock_dir / f"promote-{model_name}.lock"), timeout=LOCK_TIMEOUT_SECONDS)
