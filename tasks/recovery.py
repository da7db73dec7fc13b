"""Leases and reconciliation: what a killed run leaves behind is found and repaired at the next start.

Every training run holds a lease for its lifetime: a record (JSON) and an exclusive OS lock
(`flock`) on a file named after its Prefect flow run. The kernel releases the lock when the
process dies, however it dies (kill -9 included), so "the lock is free but the record is still
there" means exactly "the run died without cleaning up". Reconciliation then, for that run:

- marks its Prefect flow run Crashed if the server still shows it running;
- ends its MLflow runs that are still RUNNING as KILLED, and records `abandoned` as their decision;
- fails its Optuna trials that are still RUNNING;
- finishes an interrupted promotion (a version registered as `promoting`): under the promotion
  lock the aliases are moved if the champion it beat is still the champion, otherwise the version
  is recorded as superseded;
- deletes the lease record.

It runs at the start of every training flow, when the deployments are served, and by hand
(`python -m flows.reconcile`). On several hosts the lock folder must be shared with working
`flock` semantics, or the lease becomes a PostgreSQL advisory lock (see the README).
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import optuna
from filelock import FileLock, Timeout
from mlflow import MlflowClient
from mlflow.entities import RunStatus
from prefect import get_run_logger, runtime, task
from prefect.cache_policies import NO_CACHE

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
    TAG_FLOW_RUN,
    TAG_REPLACED,
    TAG_VERSION,
    version_by_alias,
)
from tasks.services import redact
from tasks.stores import Stores

logger = logging.getLogger(__name__)

LEASE_FOLDER = "runs"
ABANDONED = "abandoned"  # the run died before its candidate reached a decision


@dataclass
class Repairs:
    """What reconciliation did, for the log and the tests."""

    dead_runs: list[str] = field(default_factory=list)
    prefect_crashed: list[str] = field(default_factory=list)
    mlflow_killed: list[str] = field(default_factory=list)
    optuna_failed: list[int] = field(default_factory=list)
    promotions_finished: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.dead_runs or self.errors)

    def summary(self) -> str:
        return (
            f"{len(self.dead_runs)} dead run(s): Prefect runs marked crashed {len(self.prefect_crashed)}, "
            f"MLflow runs killed {len(self.mlflow_killed)}, Optuna trials failed {len(self.optuna_failed)}, "
            f"promotions finished {self.promotions_finished or 'none'}"
            + (f"; errors: {self.errors}" if self.errors else "")
        )


def _lease_paths(lock_dir: Path, flow_run_id: str) -> tuple[Path, Path]:
    folder = lock_dir / LEASE_FOLDER
    return folder / f"{flow_run_id}.json", folder / f"{flow_run_id}.lock"


@contextmanager
def run_lease(stores: Stores, flow_run_id: str, model_name: str) -> Iterator[None]:
    """Hold the lease of one run for the block; a run that raises is reconciled on its way out."""
    lock_dir = stores.lock_dir
    record, lock_path = _lease_paths(lock_dir, flow_run_id)
    record.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path), timeout=0)
    lock.acquire()
    started = {"flow_run_id": flow_run_id, "model_name": model_name, "pid": os.getpid(), "host": socket.gethostname()}
    record.write_text(json.dumps({**started, "started_at": datetime.now(UTC).isoformat()}))
    try:
        yield
    except BaseException:
        lock.release()
        repairs = Repairs()
        # Prefect records this run's failure itself; the other services may be the very thing that
        # failed, in which case the record stays and the next start repairs what is left.
        try:
            reconcile_run(started, stores, repairs, mark_prefect=False)
        except Exception as error:  # the failure being raised matters more; the record stays for the next start
            repairs.errors.append(f"{type(error).__name__}: {error}")
        if repairs.errors:
            logger.warning(
                "run %s could not repair what it left behind (%s); the next start repairs it",
                flow_run_id,
                redact("; ".join(repairs.errors)),
            )
        elif _prefect_answers():
            _forget(lock_dir, flow_run_id)
        raise
    lock.release()
    _forget(lock_dir, flow_run_id)


def _prefect_answers() -> bool:
    """Whether Prefect can record this run's end itself; if not, the next start marks it crashed."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.api_healthcheck() is None


def _forget(lock_dir: Path, flow_run_id: str) -> None:
    for path in _lease_paths(lock_dir, flow_run_id):
        path.unlink(missing_ok=True)


def lease_is_free(lock_path: Path) -> bool:
    """True when no living process holds the lease's lock."""
    try:
        with FileLock(str(lock_path), timeout=0):
            return True
    except Timeout:
        return False


def dead_leases(lock_dir: Path) -> list[dict[str, Any]]:
    """Records of runs whose process is gone without cleaning up."""
    folder = lock_dir / LEASE_FOLDER
    if not folder.exists():
        return []
    dead = []
    for record in sorted(folder.glob("*.json")):
        lock_path = record.with_suffix(".lock")
        if lease_is_free(lock_path):
            try:
                dead.append(json.loads(record.read_text()))
            except (OSError, json.JSONDecodeError):  # killed while writing its record
                dead.append({"flow_run_id": record.stem, "model_name": None})
    return dead


def reconcile(stores: Stores) -> Repairs:
    """Repair what every dead run left; a no-op when every lease is held or none exists."""
    repairs = Repairs()
    for record in dead_leases(stores.lock_dir):
        errors_before = len(repairs.errors)
        reconcile_run(record, stores, repairs, optuna=True)
        if len(repairs.errors) == errors_before:
            _forget(stores.lock_dir, record["flow_run_id"])
    return repairs


def reconcile_run(
    record: dict[str, Any],
    stores: Stores,
    repairs: Repairs,
    *,
    optuna: bool = False,
    mark_prefect: bool = True,
) -> None:
    """Bring every service's record of one dead run to a final state.

    `optuna=False` when the run is repairing itself on its way out: Optuna already failed the
    trial that raised, and a concurrent run's trials must not be touched.
    """
    flow_run_id = record["flow_run_id"]
    repairs.dead_runs.append(flow_run_id)
    client = MlflowClient(tracking_uri=stores.mlflow_tracking_uri, registry_uri=stores.mlflow_tracking_uri)
    steps = [lambda: _finish_mlflow(client, flow_run_id, stores, repairs)]
    if optuna:
        steps.append(lambda: _fail_trials(stores.optuna_storage, flow_run_id, repairs))
    if mark_prefect:
        steps.append(lambda: _crash_flow_run(flow_run_id, repairs))
    for step in steps:
        try:
            step()
        except Exception as error:  # one unreachable service must not stop the repairs of the others
            repairs.errors.append(f"{flow_run_id}: {type(error).__name__}: {error}")


def _finish_mlflow(client: MlflowClient, flow_run_id: str, stores: Stores, repairs: Repairs) -> None:
    runs = client.search_runs(
        experiment_ids=[e.experiment_id for e in client.search_experiments()],
        filter_string=f"tags.`{TAG_FLOW_RUN}` = '{flow_run_id}'",
    )
    for run in runs:
        version = run.data.tags.get(TAG_VERSION)
        model_name = run.data.tags.get("driftloop.model_name")
        if version and model_name:
            finished = finish_promotion(client, model_name, version, stores.promotion_locks, stores.history)
            if finished:
                repairs.promotions_finished.append(f"{model_name}/{version}: {finished}")
        if run.info.status == RunStatus.to_string(RunStatus.RUNNING):
            client.set_terminated(run.info.run_id, status="KILLED")
            repairs.mlflow_killed.append(run.info.run_id)
        if TAG_DECISION not in run.data.tags:
            client.set_tag(run.info.run_id, TAG_DECISION, ABANDONED)
            client.set_tag(run.info.run_id, TAG_DECISION_REASON, f"flow run {flow_run_id} died before a decision")


def finish_promotion(
    client: MlflowClient, name: str, version: str, locks: Locks, history: Path | str | None = None
) -> str | None:
    """Complete a promotion interrupted between registering the version and moving the aliases.

    The decision goes into the promotion history under the id the interrupted run would have
    used, so it is there exactly once whether or not that run got as far as writing it.
    """
    tags = client.get_model_version(name, version).tags
    if tags.get(TAG_DECISION) != PROMOTING:
        return None
    with promotion_lock(locks, name):
        current = version_by_alias(name, CHAMPION, client)
        before = current.version if current else None
        compared_with = tags.get(TAG_COMPARED_WITH, "none")
        if before == version:
            outcome, reason = "promoted", tags.get(TAG_DECISION_REASON, "promoted")
        elif (before or "none") == compared_with:
            if before is not None:
                client.set_registered_model_alias(name, PREVIOUS, before)
            client.set_registered_model_alias(name, CHAMPION, version)
            client.set_model_version_tag(name, version, TAG_REPLACED, before or "none")
            outcome = "promoted"
            reason = f"{tags.get(TAG_DECISION_REASON, '')} (promotion completed by reconciliation)".strip()
        else:
            outcome = "superseded"
            reason = f"champion changed from {compared_with} to {before} before this interrupted promotion finished"
        if history is not None:
            audit_log(history, name).append(
                id=f"{outcome}:{version}",
                event=outcome,
                champion_before=compared_with if compared_with != "none" else None,
                champion_after=version if outcome == "promoted" else before,
                version=version,
                trigger=tags.get("driftloop.reason", "unknown"),
                reason=reason,
                actor="reconciliation (tasks/recovery.py)",
            )
        for key, value in {
            TAG_DECISION: outcome,
            TAG_DECISION_REASON: reason,
            TAG_DECIDED_AT: datetime.now(UTC).isoformat(),
        }.items():
            client.set_model_version_tag(name, version, key, value)
    if (run_id := client.get_model_version(name, version).run_id) is not None:
        client.set_tag(run_id, TAG_DECISION, outcome)
    return outcome


def _fail_trials(storage_uri: str, flow_run_id: str, repairs: Repairs) -> None:
    """Fail the RUNNING trials of the run's studies (their names end with the flow run's id, see lineage)."""
    from tasks.tune import make_storage

    storage = make_storage(storage_uri)
    for study in storage.get_all_studies():
        if not study.study_name.endswith(flow_run_id[:8]):
            continue
        for trial in storage.get_all_trials(study._study_id, deepcopy=False):
            if trial.state == optuna.trial.TrialState.RUNNING:
                storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
                repairs.optuna_failed.append(trial.number)


def _crash_flow_run(flow_run_id: str, repairs: Repairs) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(flow_run_id))
        if run.state is None or run.state.is_final():
            return
        client.set_flow_run_state(
            UUID(flow_run_id),
            Crashed(message="the process died (its lease was free); marked crashed by reconciliation"),
            force=True,
        )
        repairs.prefect_crashed.append(flow_run_id)


@contextmanager
def flow_run_lease(stores: Stores, model_name: str) -> Iterator[None]:
    """The lease of the current Prefect flow run (see `run_lease`)."""
    flow_run_id = runtime.flow_run.id
    if not flow_run_id:
        raise RuntimeError("a lease belongs to a flow run: call this inside a Prefect flow")
    with run_lease(stores, str(flow_run_id), model_name):
        yield


@task(name="reconcile", cache_policy=NO_CACHE)
def recover(stores: Stores) -> Repairs:
    """Startup reconciliation: repair what dead runs left before this run starts."""
    repairs = reconcile(stores)
    logger = get_run_logger()
    if repairs:
        logger.warning("reconciliation: %s", repairs.summary())
    else:
        logger.info("reconciliation: no run died without cleaning up")
    return repairs
