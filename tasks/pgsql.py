"""PostgreSQL as the coordinator of several hosts: advisory locks, and the connection they need.

The server shape names one database every host can reach (`DRIFTLOOP_COORDINATION_URL`). Two
things live there that a file lock cannot give across machines: the single-writer lock of
promotion (a session advisory lock, which the server releases when the holder's connection dies,
kill -9 of the holder included) and the promotion history (tasks/audit_pg.py).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

LOCK_POLL_SECONDS = 0.2


class LockTimeout(TimeoutError):
    """Another holder kept the lock for longer than the caller would wait."""


def is_postgres_url(url: str | None) -> bool:
    return bool(url) and str(url).split(":", 1)[0].split("+", 1)[0] in ("postgresql", "postgres")


def libpq_url(url: str) -> str:
    """A SQLAlchemy URL (`postgresql+psycopg://...`) as libpq reads it (`postgresql://...`)."""
    scheme, rest = url.split("://", 1)
    return f"{scheme.split('+', 1)[0]}://{rest}"


def advisory_key(*parts: str) -> int:
    """A stable signed 64-bit key for `pg_advisory_lock`, from a name (same on every host)."""
    digest = hashlib.sha256("\x1f".join(("driftloop", *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def connect(url: str, **kwargs: Any) -> Any:
    import psycopg

    return psycopg.connect(libpq_url(url), connect_timeout=10, **kwargs)


@contextmanager
def advisory_lock(url: str, *name: str, timeout: float) -> Iterator[None]:
    """Hold the session advisory lock `name` for the block, waiting at most `timeout` seconds.

    The lock belongs to this connection: should the database restart inside the block, the lock
    is gone, and leaving the block says so (RuntimeError) rather than pretend it was held.
    """
    import psycopg

    key = advisory_key(*name)
    with connect(url, autocommit=True) as db:
        deadline = time.monotonic() + timeout
        while not db.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
            if time.monotonic() > deadline:
                raise LockTimeout(f"lock {'/'.join(name)!r}: still held by another host after {timeout:.0f} s")
            time.sleep(LOCK_POLL_SECONDS)
        try:
            yield
        finally:
            try:
                released = db.execute("SELECT pg_advisory_unlock(%s)", (key,)).fetchone()[0]
            except psycopg.OperationalError as error:  # the connection, and with it the lock, is gone
                raise RuntimeError(f"lock {'/'.join(name)!r} was lost while held: {error}") from error
            if not released:
                raise RuntimeError(f"lock {'/'.join(name)!r} was lost while held (the database restarted?)")
