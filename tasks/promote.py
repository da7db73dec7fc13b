"""Promote and roll back: the only code that registers versions and moves the aliases.

An MLflow alias update is last-writer-wins, so promotion is one guarded step, under a lock per
registered model:
- idempotency: a version already registered with this candidate's key (same data, config and
  code) is the answer; no second version is made, and a candidate that lost that race is
  recorded as `superseded` on its run;
- the champion the gate compared against must still be the champion. If another run promoted
  in between, the candidate is judged again against the new champion on its own holdout
  (`rejudge`): it is promoted if it beats it, otherwise recorded as `superseded`;
- the version is registered together with its decision, so no version ever exists without one.
  A promotion is registered as `promoting`, the aliases move (`previous-champion` first, so a
  crash in between leaves both valid), then it is recorded as `promoted`; a run killed in
  between is finished by reconciliation (tasks/recovery.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import mlflow
from mlflow import MlflowClient
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.artifacts import TAG_RUN_MANIFEST, run_manifest
from tasks.audit import (
    FORCED_PROMOTION,
    MANUAL_PROMOTION,
    MANUAL_REFUSED,
    PROMOTED,
    ROLLED_BACK,
    AuditLog,
    gate_summary,
    publish_history,
)
from tasks.card import publish_card
from tasks.faults import AFTER_REGISTER, failpoint
from tasks.gate import GateReport
from tasks.history_store import audit_log
from tasks.locks import Locks, promotion_lock
from tasks.registry import (
    CHAMPION,
    PREVIOUS,
    PROMOTING,
    TAG_COMPARED_WITH,
    TAG_DECIDED_AT,
    TAG_DECISION,
    TAG_DECISION_REASON,
    TAG_GATE_PASSED,
    TAG_IDEMPOTENCY_KEY,
    TAG_REPLACED,
    TAG_VERSION,
    VersionRef,
    get_version,
    version_by_alias,
)
from tasks.stores import Stores
from tasks.train import Candidate


@dataclass(frozen=True)
class Decision:
    model_name: str
    version: str | None  # None: the candidate was not registered (a duplicate that lost the race)
    outcome: str  # promoted | rejected | superseded | rolled_back
    reason: str
    champion_before: str | None
    champion_after: str | None
    reused: bool = False  # True: an earlier run with the same key decided; nothing was trained


class RollbackError(RuntimeError):
    """There is nothing to roll back to."""


def _record(client: MlflowClient, name: str, version: str, tags: dict[str, str]) -> None:
    for key, value in {**tags, TAG_DECIDED_AT: datetime.now(UTC).isoformat()}.items():
        client.set_model_version_tag(name, version, key, value)


def version_with_key(client: MlflowClient, name: str, key: str, champion: str | None) -> VersionRef | None:
    """The version registered from the same data, config and code whose decision still holds, if any.

    A decision is a comparison, so it holds only against the same champion: the version is the
    champion itself, or it was judged against the current champion (`none` when there is none).
    Rejected against version 3 and version 3 rolled back since: the same data is judged again.
    """
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        return None
    found = client.search_model_versions(f"name = '{name}' and tags.`{TAG_IDEMPOTENCY_KEY}` = '{key}'")
    holding = [v for v in found if str(v.version) == champion or v.tags.get(TAG_COMPARED_WITH) == (champion or "none")]
    if not holding:
        return None
    first = min(holding, key=lambda v: int(v.version))
    return VersionRef(name, str(first.version), first.run_id, dict(first.tags))


def earlier_decision(client: MlflowClient, name: str, key: str) -> Decision | None:
    """The decision already taken for this key against today's champion, as a rerun reports it; None if none."""
    champion = version_by_alias(name, CHAMPION, client)
    current = champion.version if champion else None
    found = version_with_key(client, name, key, current)
    if found is None:
        return None
    outcome = found.tags.get(TAG_DECISION, "unknown")
    reason = (
        f"version {found.version} was already trained from the same data, config and code and judged against "
        f"the same champion (decision: {outcome}: {found.tags.get(TAG_DECISION_REASON, '')}); nothing new to train"
    )
    return Decision(name, found.version, outcome, reason, current, current, reused=True)


Rejudge = Callable[[str], GateReport]  # the gate again, against another champion version


def apply_decision(
    client: MlflowClient,
    candidate: Candidate,
    report: GateReport,
    compared_with: str | None,
    locks: Locks,
    rejudge: Rejudge | None = None,
    audit: AuditLog | None = None,
) -> Decision:
    """Register the candidate with its decision; move the aliases if and only if it beat the champion.

    Every decision is appended to `audit` (the promotion history) before it is final on the version.
    """
    name = candidate.name
    trigger = candidate.version_tags.get("driftloop.reason", "unknown")
    with promotion_lock(locks, name):
        current = version_by_alias(name, CHAMPION, client)
        before = current.version if current else None
        duplicate = version_with_key(client, name, candidate.idempotency_key, before)
        if duplicate is not None:
            reason = (
                f"version {duplicate.version} was registered from the same data, config and code while "
                "this run trained; this candidate is not registered"
            )
            _record_run(client, candidate.run_id, "superseded", reason)
            if audit is not None:
                audit.append(
                    id=f"superseded-run:{candidate.run_id}",
                    event="superseded",
                    champion_before=before,
                    champion_after=before,
                    version=None,
                    trigger=trigger,
                    reason=reason,
                    gate=gate_summary(report),
                )
            return Decision(name, None, "superseded", reason, before, before)
        if not report.passed:
            outcome, reason = "rejected", report.reason
        elif before == compared_with:
            outcome, reason = "promoted", report.reason
        else:
            outcome, reason, report = _judge_again(before, compared_with, report, rejudge)
        judged_against = before if outcome != "rejected" else compared_with
        version = _register(client, candidate, report, judged_against, outcome, reason)
        failpoint(AFTER_REGISTER)
        if outcome == "promoted":
            if before is not None:
                client.set_registered_model_alias(name, PREVIOUS, before)
            client.set_registered_model_alias(name, CHAMPION, version)
        if audit is not None:  # before `promoted` is final: recovery re-appends the same id, a no-op
            audit.append(
                id=f"{outcome}:{version}",
                event=outcome,
                champion_before=before,
                champion_after=version if outcome == "promoted" else before,
                version=version,
                trigger=trigger,
                reason=reason,
                gate=gate_summary(report),
            )
        if outcome == "promoted":
            _record(client, name, version, {TAG_DECISION: "promoted", TAG_REPLACED: before or "none"})
        _record_run(client, candidate.run_id, outcome, reason)
    return Decision(name, version, outcome, reason, before, version if outcome == "promoted" else before)


def _judge_again(
    before: str | None, compared_with: str | None, report: GateReport, rejudge: Rejudge | None
) -> tuple[str, str, GateReport]:
    """The champion changed while the candidate was evaluated: judge it against the new one."""
    changed = (
        f"champion changed from {compared_with or 'none'} to {before or 'none'} while this candidate was evaluated"
    )
    if before is None or rejudge is None:
        return "superseded", f"{changed}; it was never compared with the new champion", report
    again = rejudge(before)
    if again.passed:
        return "promoted", f"{changed}; judged again: {again.reason}", again
    return "superseded", f"{changed}; judged again, it does not beat it: {again.reason}", again


def _register(
    client: MlflowClient,
    candidate: Candidate,
    report: GateReport,
    compared_with: str | None,
    outcome: str,
    reason: str,
) -> str:
    """Create the version with its decision already on it (`promoting` until the aliases moved)."""
    tags = {
        **candidate.version_tags,
        TAG_RUN_MANIFEST: json.dumps(run_manifest(candidate.run_id), sort_keys=True),
        TAG_GATE_PASSED: str(report.passed).lower(),
        TAG_COMPARED_WITH: compared_with or "none",
        TAG_DECISION: PROMOTING if outcome == "promoted" else outcome,
        TAG_DECISION_REASON: reason[:4000],
        TAG_DECIDED_AT: datetime.now(UTC).isoformat(),
    }
    version = mlflow.register_model(candidate.model_uri, candidate.name, tags=tags).version
    client.set_tag(candidate.run_id, TAG_VERSION, str(version))  # before the aliases: recovery finds it
    return str(version)


def _record_run(client: MlflowClient, run_id: str, outcome: str, reason: str) -> None:
    client.set_tag(run_id, TAG_DECISION, outcome)
    client.set_tag(run_id, TAG_DECISION_REASON, reason[:4000])


def rollback(client: MlflowClient, name: str, reason: str, locks: Locks, audit: AuditLog | None = None) -> Decision:
    """Make `previous-champion` the champion again; the alias chain steps back one version."""
    with promotion_lock(locks, name):
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
        if audit is not None:
            before = current.version if current else None
            audit.append(
                id=f"{ROLLED_BACK}:{before}->{previous.version}:{datetime.now(UTC).isoformat()}",
                event=ROLLED_BACK,
                champion_before=before,
                champion_after=previous.version,
                version=previous.version,
                trigger=reason,
                reason=f"rolled back to version {previous.version}",
            )
    before = current.version if current else None
    return Decision(name, before or "none", "rolled_back", reason, before, previous.version)


class ManualPromotionError(RuntimeError):
    """A manual promotion that cannot happen: the version is already champion, or the gate said no."""


def promote_version(
    client: MlflowClient,
    name: str,
    version: str,
    report: GateReport | None,
    reason: str,
    locks: Locks,
    audit: AuditLog,
    force: bool = False,
) -> Decision:
    """Make a registered version champion by hand: only if `report` passed, unless forced (recorded).

    `report` judged `version` against the champion of the moment; if the champion changed since,
    the caller must judge again, so a stale verdict never moves the aliases.
    """
    with promotion_lock(locks, name):
        current = version_by_alias(name, CHAMPION, client)
        before = current.version if current else None
        if before == version:
            raise ManualPromotionError(f"{name}: version {version} is already the champion")
        if report is not None and (report.champion_version or None) != before:
            raise ManualPromotionError(
                f"{name}: the champion changed to {before} while version {version} was judged; run it again"
            )
        passed = report is not None and report.passed
        gate = gate_summary(report) if report is not None else None
        stamp = datetime.now(UTC).isoformat()
        if not passed and not force:
            why = report.reason if report is not None else "not judged"
            audit.append(
                id=f"{MANUAL_REFUSED}:{version}:{stamp}",
                event=MANUAL_REFUSED,
                champion_before=before,
                champion_after=before,
                version=version,
                trigger=reason,
                reason=why,
                gate=gate,
            )
            raise ManualPromotionError(f"{name}: the gate rejected version {version}: {why}")
        if before is not None:
            client.set_registered_model_alias(name, PREVIOUS, before)
        client.set_registered_model_alias(name, CHAMPION, version)
        event = MANUAL_PROMOTION if passed else FORCED_PROMOTION
        why = f"{reason}; gate {'passed' if passed else 'OVERRIDDEN with --force'}"
        audit.append(
            id=f"{event}:{version}:{stamp}",
            event=event,
            champion_before=before,
            champion_after=version,
            version=version,
            trigger=reason,
            reason=why,
            gate=gate,
            forced=not passed,
        )
        _record(
            client,
            name,
            version,
            {TAG_DECISION: PROMOTED, TAG_DECISION_REASON: why[:4000], TAG_REPLACED: before or "none"}
            | ({"driftloop.forced": "true"} if not passed else {}),
        )
    return Decision(name, version, PROMOTED, why, before, version)


@task(cache_policy=NO_CACHE)
def promote(
    candidate: Candidate, report: GateReport, compared_with: str | None, stores: Stores, rejudge: Rejudge | None = None
) -> Decision:
    client = MlflowClient()
    audit = audit_log(stores.history, candidate.name)
    decision = apply_decision(client, candidate, report, compared_with, stores.promotion_locks, rejudge, audit)
    publish_history(client, audit)
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


@task(name="model-card", cache_policy=NO_CACHE)
def model_card(decision: Decision, stores: Stores) -> str | None:
    """The card of the version just decided on (none when nothing was registered or decided anew)."""
    if decision.version is None or decision.reused:
        return None
    card = publish_card(MlflowClient(), decision.model_name, decision.version, stores.history)
    get_run_logger().info("model card of %s version %s published", decision.model_name, decision.version)
    return card


@task(name="earlier-decision", cache_policy=NO_CACHE)
def find_earlier_decision(model_name: str, idempotency_key: str) -> Decision | None:
    """A rerun on the same data, config and code returns the first run's decision; nothing is retrained."""
    decision = earlier_decision(MlflowClient(), model_name, idempotency_key)
    if decision is not None:
        get_run_logger().info("%s", decision.reason)
    return decision
