"""`driftloop status`: the state of one model in a few lines, read from MLflow and the history."""

from __future__ import annotations

from datetime import UTC, datetime

from mlflow import MlflowClient
from mlflow.entities import Run

from tasks.audit import AuditLog
from tasks.registry import CHAMPION, PREVIOUS, TAG_DECIDED_AT, TAG_DECISION, TAG_VERSION, version_by_alias
from tasks.settings import TrainingConfig


def _when(millis: int | None) -> str:
    return "?" if millis is None else datetime.fromtimestamp(millis / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _experiment_runs(client: MlflowClient, name: str, limit: int) -> list[Run]:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return []
    return list(
        client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=limit)
    )


def model_status(client: MlflowClient, config: TrainingConfig, audit: AuditLog, runs: int = 5) -> str:
    """Champion and rollback target, the last training runs, the last drift check, the last decision."""
    name, metric = config.model_name, config.gate.metric
    lines = [f"model {name} ({config.task}, gated on {metric})"]
    for alias in (CHAMPION, PREVIOUS):
        found = version_by_alias(name, alias, client) if client.search_registered_models(f"name = '{name}'") else None
        if found is None:
            lines.append(f"  {alias}: none")
            continue
        value = client.get_run(found.run_id).data.metrics.get(f"holdout_{metric}") if found.run_id else None
        lines.append(
            f"  {alias}: version {found.version}, trained on {found.tags.get('driftloop.window', '?')}, "
            f"holdout {metric} {'?' if value is None else f'{value:.4f}'}, "
            f"{found.tags.get(TAG_DECISION, '?')} {found.tags.get(TAG_DECIDED_AT, '?')[:19]}, "
            f"trigger: {found.tags.get('driftloop.reason', '?')}"
        )
    training = _experiment_runs(client, name, runs)
    lines.append(f"last {len(training)} training runs:" if training else "no training runs yet")
    for run in training:
        tags = run.data.tags
        value = run.data.metrics.get(f"holdout_{metric}")
        lines.append(
            f"  {_when(run.info.start_time)}  {tags.get('driftloop.window', '?')}  "
            f"{tags.get(TAG_DECISION, run.info.status.lower()):<10} version {tags.get(TAG_VERSION, '-'):<3} "
            f"{metric} {'?' if value is None else f'{value:.4f}'}  ({tags.get('driftloop.reason', '?')})"
        )
    checks = _experiment_runs(client, f"{name}-monitoring", 1)
    if checks:
        check = checks[0]
        share, tags = check.data.metrics.get("drift_share"), check.data.tags
        lines.append(
            f"last drift check: {tags.get('driftloop.status', '?')} on {tags.get('driftloop.window', '?')} "
            f"(drifted share {'?' if share is None else f'{share:.2f}'}, "
            f"version {tags.get('driftloop.model_version', '?')}, as of {tags.get('driftloop.as_of', '?')[:10]})"
        )
    else:
        lines.append("no drift check yet")
    entries = audit.entries()
    if entries:
        lines.append(f"history: {len(entries)} decisions; last: {entries[-1].describe()}")
    else:
        lines.append("history: no decisions recorded yet")
    return "\n".join(lines)
