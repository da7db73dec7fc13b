"""The promotion history in PostgreSQL: the same hash-chained lines as the file, for several hosts.

One table, one row per decision, numbered per model. An append takes a transaction-scoped
advisory lock per model, reads the last line and writes the next, so the chain stays one chain
whichever host decides; `(model, id)` is unique, so a repeated append is still a no-op.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tasks.audit import AuditLog
from tasks.pgsql import advisory_key, connect
from tasks.services import redact

TABLE = "driftloop_promotion_history"
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    model text NOT NULL,
    seq bigint NOT NULL,
    id text NOT NULL,
    line text NOT NULL,
    PRIMARY KEY (model, seq),
    UNIQUE (model, id)
)
"""


class PostgresAuditLog(AuditLog):
    """`AuditLog` with its lines in a table of the coordination database."""

    def __init__(self, url: str, model: str) -> None:
        self.model = model
        self.url = url
        self.history = url
        self.where = f"{redact(url)}#{TABLE}/{model}"

    def _lines(self) -> list[str]:
        with connect(self.url) as db:
            if db.execute("SELECT to_regclass(%s)", (TABLE,)).fetchone()[0] is None:
                return []
            rows = db.execute(f"SELECT line FROM {TABLE} WHERE model = %s ORDER BY seq", (self.model,)).fetchall()  # noqa: S608 - a constant
        return [row[0] for row in rows]

    @contextmanager
    def _writer(self) -> Iterator[tuple[list[str], Callable[[str], None]]]:
        with connect(self.url) as db:
            # CREATE TABLE IF NOT EXISTS races with itself on a fresh database: serialise it too
            db.execute("SELECT pg_advisory_xact_lock(%s)", (advisory_key("history-schema"),))
            db.execute(SCHEMA)
            db.commit()
            with db.transaction():
                db.execute("SELECT pg_advisory_xact_lock(%s)", (advisory_key("history", self.model),))
                rows = db.execute(f"SELECT line FROM {TABLE} WHERE model = %s ORDER BY seq", (self.model,)).fetchall()  # noqa: S608
                lines = [row[0] for row in rows]

                def write(line: str) -> None:
                    db.execute(
                        f"INSERT INTO {TABLE} (model, seq, id, line) VALUES (%s, %s, %s, %s)",  # noqa: S608
                        (self.model, len(lines) + 1, json.loads(line)["id"], line),
                    )

                yield lines, write
