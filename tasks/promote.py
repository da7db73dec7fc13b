"""Promote and roll back: the only code that moves the `champion` and `previous-champion` aliases.

An MLflow alias update is last-writer-wins, so promotion is one guarded step:
- a lock per registered model, so two runs cannot decide at once;
- under the lock, the champion the gate compared against must still be the champion; if another
  run promoted in the meantime, this candidate is `superseded` (it was never compared with the
  new champion), not promoted;
- `previous-champion` moves before `champion`, so a crash in between leaves both aliases valid;
- the decision and its reason are recorded on the version, whatever they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from filelock import FileLock
from mlflow import MlflowClient
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.gate import GateReport
from tasks.registry import (
    CHAMPION,
    PREVIOUS,
    TAG_COMPARED_WITH,
    TAG_DECIDED_AT,
    TAG_DECISION,
    TAG_DECISION_REASON,
    TAG_GATE_PASSED,
    TAG_REPLACED,
    get_version,
    version_by_alias,
)
from tasks.stores import Stores
from tasks.train import Candidate

LOCK_TIMEOUT_SECONDS = 300


@dataclass(frozen=True)
class Decision:
    model_name: str
    version: str
    outcome: str  # promoted | rejected | superseded | rolled_back
    reason: str
    champion_before: str | None
    champion_after: str | None


class RollbackError(RuntimeError):
    """There is nothing to roll back to."""


def promotion_lock(lock_dir: Path, model_name: str) -> FileLock:
    """A cross-process lock per registered model (a shared folder for several hosts)."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    return FileLock(str(lock_dir / f"promote-{model_name}.lock"), timeout=LOCK_TIMEOUT_SECONDS)


def _record(client: MlflowClient, name: str, version: str, tags: dict[str, str]) -> None:
    for key, value in {**tags, TAG_DECIDED_AT: datetime.now(UTC).isoformat()}.items():
        client.set_model_version_tag(name, version, key, value)


def apply_decision(
    client: MlflowClient,
    name: str,
    version: str,
    report: GateReport,
    compared_with: str | None,
    lock_dir: Path,
) -> Decision:
    """Move the aliases if and only if the gate passed against the current champion."""
    with promotion_lock(lock_dir, name):
        current = version_by_alias(name, CHAMPION, client)
        before = current.version if current else None
        base = {TAG_GATE_PASSED: str(report.passed).lower(), TAG_COMPARED_WITH: compared_with or "none"}
        if not report.passed:
            outcome, reason, after = "rejected", report.reason, before
        elif before != compared_with:
            outcome, after = "superseded", before
            reason = (
                f"champion changed from {compared_with or 'none'} to {before} while this candidate was "
                "evaluated; it was never compared with the new champion"
            )
        else:
            if before is not None:
                client.set_registered_model_alias(name, PREVIOUS, before)
            client.set_registered_model_alias(name, CHAMPION, version)
            outcome, reason, after = "promoted", report.reason, version
            base[TAG_REPLACED] = before or "none"
        _record(client, name, version, {**base, TAG_DECISION: outcome, TAG_DECISION_REASON: reason[:4000]})
    return Decision(name, version, outcome, reason, before, after)


def rollback(client: MlflowClient, name: str, reason: str, lock_dir: Path) -> Decision:
    """Make `previous-champion` the champion again; the alias chain steps back one version."""
    with promotion_lock(lock_dir, name):
        current = version_by_alias(name, CHAMPION, client)
        previous = version_by_alias(name, PREVIOUS, client)
        if previous is None:
            raise RollbackError(f"{name}: no '{PREVIOUS}' alias, so there is no version to roll back to")
        if current is not None and current.version == previous.version:
            raise RollbackError(f"{name}: '{PREVIOUS}' is already the champion (version {current.version})")
        client.set_registered_model_alias(name, CHAMPION, previous.version)
        older = get_version(name, previous.version, client).tags.get(TAG_REPLACED, "none")
        if older != "none":
            client.set_registered_model_alias(name, PREVIOUS, older)
        else:
            client.delete_registered_model_alias(name, PREVIOUS)
        if current is not None:
            _record(client, name, current.version, {TAG_DECISION: "rolled_back", TAG_DECISION_REASON: reason})
        client.set_model_version_tag(name, previous.version, "driftloop.restored_reason", reason)
    before = current.version if current else None
    return Decision(name, before or "none", "rolled_back", reason, before, previous.version)


@task(cache_policy=NO_CACHE)
def promote(candidate: Candidate, report: GateReport, compared_with: str | None, stores: Stores) -> Decision:
    decision = apply_decision(MlflowClient(), candidate.name, candidate.version, report, compared_with, stores.lock_dir)
    get_run_logger().info(
        "%s version %s %s: %s (champion %s -> %s)",
        decision.model_name,
        decision.version,
        decision.outcome,
        decision.reason,
        decision.champion_before,
        decision.champion_after,
    )
    return decision
