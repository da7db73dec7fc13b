"""Where a model's promotion history lives: a folder on one machine, or PostgreSQL for several hosts."""

from __future__ import annotations

from pathlib import Path

from tasks.audit import AuditLog
from tasks.audit_pg import PostgresAuditLog


def audit_log(history: Path | str, model: str) -> AuditLog:
    """The history of `model`: in a folder, or in PostgreSQL when `history` is its URL (`Stores.history`)."""
    if isinstance(history, str):
        return PostgresAuditLog(history, model)
    return AuditLog(history, model)
