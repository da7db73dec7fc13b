"""`driftloop status`: the state of one model in a few lines, read from the registry and the history.

It reads through a `RegistryView` (tasks/registry_view.py), so on the embedded store it needs neither
MLflow nor Prefect imported.
"""

from __future__ import annotations

from datetime import UTC, datetime

from tasks.audit import AuditLog
from tasks.registry_names import CHAMPION, PREVIOUS, TAG_DECIDED_AT, TAG_DECISION, TAG_VERSION
from tasks.registry_view import RegistryView
from tasks.settings import TrainingConfig


def _when(millis: int | None) -> str:
    return "?" if millis is None else datetime.fromtimestamp(millis / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def model_status(view: RegistryView, config: TrainingConfig, audit: AuditLog, runs: int = 5) -> str:
    """Champion and rollback target, the last training runs, the last drift check, the last decision."""
    name, metric = config.model_name, config.gate.metric
    lines = [f"model {name} ({config.task}, gated on {metric})"]
    for alias in (CHAMPION, PREVIOUS):
        found = view.version_by_alias(name, alias)
        if found is None:
            lines.append(f"  {alias}: none")
            continue
        value = view.run_metrics(found.run_id).get(f"holdout_{metric}") if found.run_id else None
        lines.append(
            f"  {alias}: version {found.version}, trained on {found.tags.get('driftloop.window', '?')}, "
            f"holdout {metric} {'?' if value is None else f'{value:.4f}'}, "
            f"{found.tags.get(TAG_DECISION, '?')} {found.tags.get(TAG_DECIDED_AT, '?')[:19]}, "
            f"trigger: {found.tags.get('driftloop.reason', '?')}"
        )
    training = view.recent_runs(name, runs)
    lines.append(f"last {len(training)} training runs:" if training else "no training runs yet")
    for run in training:
        tags = run.tags
        value = run.metrics.get(f"holdout_{metric}")
        lines.append(
            f"  {_when(run.start_time)}  {tags.get('driftloop.window', '?')}  "
            f"{tags.get(TAG_DECISION, run.status.lower()):<10} version {tags.get(TAG_VERSION, '-'):<3} "
            f"{metric} {'?' if value is None else f'{value:.4f}'}  ({tags.get('driftloop.reason', '?')})"
        )
    checks = view.recent_runs(f"{name}-monitoring", 1)
    if checks:
        check = checks[0]
        share, tags = check.metrics.get("drift_share"), check.tags
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
