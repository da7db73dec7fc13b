"""The audit trail: an append-only history of every promotion decision, per registered model.

Each line of `<audit_dir>/<model>.jsonl` is one decision: what happened (promoted, rejected,
superseded, rolled back, a manual or forced promotion), when, from which champion to which,
who or what triggered it, and the gate's verdict. Lines are only ever appended, and each carries
the SHA-256 of the line before it, so an edited or deleted line breaks the chain and
`driftloop history --verify` names where. An entry has an id; appending an id already present
does nothing, so a promotion finished by reconciliation after a crash is recorded once.

The history is also shown where people look: a Prefect markdown artifact
(`promotion-history-<model>`) and the registered model's description in MLflow.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import json
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

GENESIS = "0" * 64  # the "previous hash" of the first entry

PROMOTED = "promoted"
REJECTED = "rejected"
SUPERSEDED = "superseded"
ROLLED_BACK = "rolled_back"
MANUAL_PROMOTION = "manual_promotion"  # `driftloop promote`, through the gate
FORCED_PROMOTION = "forced_promotion"  # `driftloop promote --force`: the gate was overridden
MANUAL_REFUSED = "manual_promotion_refused"  # `driftloop promote`: the gate said no


@dataclass(frozen=True)
class AuditEntry:
    id: str  # unique per decision, so a repeated append (recovery after a crash) is a no-op
    at: str  # ISO 8601, UTC
    model: str
    event: str
    champion_before: str | None
    champion_after: str | None
    version: str | None  # the version decided on (the candidate, or the one rolled back to)
    actor: str  # who: a Prefect flow run (and its deployment) or user@host
    trigger: str  # why: manual, schedule, a drift event id, a rollback reason
    reason: str
    gate: dict[str, Any] | None  # passed, metric, challenger/champion values, violations
    forced: bool
    previous_sha256: str
    sha256: str

    def describe(self) -> str:
        """One line for a terminal."""
        move = (
            f"champion {self.champion_before or 'none'} -> {self.champion_after or 'none'}"
            if self.champion_before != self.champion_after
            else f"champion stays {self.champion_after or 'none'}"
        )
        event = f"{self.event}{' (FORCED)' if self.forced else ''}"
        version = f"v{self.version}" if self.version else "-"
        return f"{self.at[:19]}Z  {event:<26} {version:<5} {move:<22} by {self.actor}; trigger: {self.trigger}"

    def gate_line(self, most: int = 3) -> str | None:
        """The gate's violations, the first `most` of them (a slice-by-slice list can be long)."""
        violations = (self.gate or {}).get("violations") or []
        if not violations:
            return None
        more = f"; and {len(violations) - most} more" if len(violations) > most else ""
        return "; ".join(violations[:most]) + more


def entry_digest(fields: dict[str, Any]) -> str:
    """SHA-256 of an entry's content (every field but its own digest), canonical JSON."""
    body = {key: value for key, value in fields.items() if key != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def current_actor() -> str:
    """Who is acting: the Prefect flow run (and deployment) when inside one, else user@host."""
    try:
        from prefect import runtime

        flow_run_id = runtime.flow_run.id
        if flow_run_id:
            deployment = runtime.deployment.name
            where = f" of deployment '{deployment}'" if deployment else ""
            return f"prefect flow run '{runtime.flow_run.name}' ({flow_run_id}){where}"
    except Exception:  # noqa: S110 - outside Prefect there is no run to name; fall through to the user
        pass
    return f"{getpass.getuser()}@{socket.gethostname()}"


class AuditLog:
    """The append-only history of one registered model, one JSON line per decision, in a file.

    `tasks/audit_pg.py` keeps the same lines in PostgreSQL for several hosts; `tasks.history_store.audit_log` picks.
    """

    def __init__(self, folder: Path, model: str) -> None:
        self.model = model
        self.history: Path | str = folder  # what `audit_log` was given
        self.path = folder / f"{model}.jsonl"
        self.where = str(self.path)  # how problems name the history

    def _lines(self) -> list[str]:
        if not self.path.exists():
            return []
        return [line for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]

    @contextmanager
    def _writer(self) -> Iterator[tuple[list[str], Callable[[str], None]]]:
        """The lines so far and a way to add one, both under the history's lock (one writer at a time)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # one writer at a time, whichever process
            try:
                handle.seek(0)
                lines = [line for line in handle.read().splitlines() if line.strip()]

                def write(line: str) -> None:
                    handle.seek(0, os.SEEK_END)
                    handle.write(line + "\n")
                    handle.flush()
                    os.fsync(handle.fileno())  # a decision the registry shows is never missing from the history

                yield lines, write
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def entries(self) -> list[AuditEntry]:
        return [AuditEntry(**json.loads(line)) for line in self._lines()]

    def append(
        self,
        *,
        id: str,
        event: str,
        champion_before: str | None,
        champion_after: str | None,
        version: str | None,
        trigger: str,
        reason: str,
        gate: dict[str, Any] | None = None,
        forced: bool = False,
        actor: str | None = None,
    ) -> AuditEntry:
        """Add one entry (or return the one already recorded under `id`)."""
        with self._writer() as (lines, write):
            for line in lines:
                if json.loads(line)["id"] == id:
                    return AuditEntry(**json.loads(line))
            fields: dict[str, Any] = {
                "id": id,
                "at": datetime.now(UTC).isoformat(),
                "model": self.model,
                "event": event,
                "champion_before": champion_before,
                "champion_after": champion_after,
                "version": version,
                "actor": actor or current_actor(),
                "trigger": trigger,
                "reason": reason,
                "gate": gate,
                "forced": forced,
                "previous_sha256": json.loads(lines[-1])["sha256"] if lines else GENESIS,
            }
            fields["sha256"] = entry_digest(fields)
            write(json.dumps(fields, sort_keys=True))
        return AuditEntry(**fields)

    def verify(self) -> list[str]:
        """Every break in the chain: an edited, inserted or deleted line; empty when intact."""
        problems = []
        previous = GENESIS
        for number, entry in enumerate(self.entries(), start=1):
            fields = asdict(entry)
            if entry.previous_sha256 != previous:
                problems.append(
                    f"{self.where}:{number}: does not follow line {number - 1} (a line was removed or moved)"
                )
            if entry_digest(fields) != entry.sha256:
                problems.append(f"{self.where}:{number}: content does not match its sha256 (the line was edited)")
            previous = entry.sha256
        return problems


def gate_summary(report: Any) -> dict[str, Any]:
    """What the history keeps of a gate report (tasks/gate.py GateReport)."""
    return {
        "passed": report.passed,
        "metric": report.metric,
        "challenger_value": report.challenger_value,
        "champion_value": report.champion_value,
        "champion_version": report.champion_version,
        "violations": report.violations,
    }


def history_markdown(model: str, entries: list[AuditEntry], limit: int = 50) -> str:
    """The newest `limit` entries as a table, newest first (the Prefect artifact, the MLflow description)."""
    lines = [
        f"# Promotion history: {model}",
        "",
        f"{len(entries)} decisions recorded, append-only and hash-chained; newest first"
        f"{f' (the last {limit} shown)' if len(entries) > limit else ''}. "
        f"Full history: `driftloop history --model {model}`.",
        "",
        "| when (UTC) | event | version | champion | by | trigger | gate |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for entry in reversed(entries[-limit:]):
        gate = entry.gate or {}
        verdict = "" if not gate else ("passed" if gate.get("passed") else "failed: " + "; ".join(gate["violations"]))
        if entry.forced:
            verdict = f"**overridden (--force)**; {verdict}"
        move = f"{entry.champion_before or 'none'} → {entry.champion_after or 'none'}"
        lines.append(
            f"| {entry.at[:19]} | {entry.event} | {entry.version or '-'} | {move} | {_cell(entry.actor)} "
            f"| {_cell(entry.trigger)} | {_cell(verdict)[:300]} |"
        )
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def publish_history(client: Any, log: AuditLog) -> None:
    """Show the history where people look: the registered model in MLflow, the Prefect UI when in a run."""
    from tasks.notify import artifact_key, publish_markdown

    entries = log.entries()
    # MLflow keeps at most 5000 characters of description on a SQL store: the newest ten fit.
    client.update_registered_model(log.model, description=history_markdown(log.model, entries, limit=10)[:5000])
    publish_markdown(
        history_markdown(log.model, entries),
        key=artifact_key("promotion-history", log.model),
        description=f"Promotion history of {log.model}",
    )
