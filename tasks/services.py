"""The services a run depends on, and what happens when one of them is down or busy.

Transient errors are retried with backoff, a bounded number of times, by the layer that sees
them; anything else fails at once:
- MLflow over HTTP: MLflow's own retry (urllib3) on connection errors and 429/500/502/503/504.
  Its defaults wait minutes; ours (`MLFLOW_HTTP_RETRY_DEFAULTS`) give up after ~15 s. Set the
  variables to change them.
- MLflow on SQLite: writers wait for each other (`busy timeout`, `SQLITE_BUSY_TIMEOUT_SECONDS`)
  and the database runs in WAL mode, so readers never block the writer.
- Prefect's API: Prefect's client retries connection errors and 429/502/503 with backoff
  (`PREFECT_CLIENT_MAX_RETRIES`, default 5).
- Our read-only stages (`connect`, `find-champion`) are Prefect task retries on transient
  errors only (`retry_if_transient`).

When the retries are spent the run fails with one clear sentence naming the service and where
it was looked for (`unavailable`), and the invariants hold: nothing was promoted half-way.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

SQLITE_BUSY_TIMEOUT_SECONDS = 60
MLFLOW_HTTP_RETRY_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "4",  # 1 + 2 + 4 + 8 s of backoff
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
}
TASK_RETRY_DELAYS = [2, 5, 10]  # seconds, for the read-only stages


def with_busy_timeout(uri: str) -> str:
    """A SQLite URI whose connections wait for a busy writer instead of failing at once."""
    if not uri.startswith("sqlite:///") or "?" in uri:
        return uri
    return f"{uri}?timeout={SQLITE_BUSY_TIMEOUT_SECONDS}"


def sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0])


def use_wal(uri: str) -> None:
    """Switch a SQLite store to write-ahead logging (persistent: once per file is enough)."""
    path = sqlite_path(uri)
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_SECONDS) as connection:
        connection.execute("PRAGMA journal_mode=WAL")


def bound_http_retries() -> None:
    """Bounded MLflow HTTP retries unless the operator chose others."""
    for name, value in MLFLOW_HTTP_RETRY_DEFAULTS.items():
        os.environ.setdefault(name, value)


def _chain(error: BaseException, implicit: bool = True) -> Iterator[BaseException]:
    """`error` and what caused it.

    `raise ... from` always; with `implicit`, also the error being handled when it was raised
    (`__context__`), which may be unrelated to it.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or (current.__context__ if implicit else None)


def unavailable(error: BaseException, mlflow_uri: str | None = None, implicit: bool = True) -> str | None:
    """One sentence naming the unreachable or locked service behind `error`; None if it is not one.

    `implicit=False` reads only explicit causes: for deciding a retry (see `is_transient`).
    """
    import httpx

    for cause in _chain(error, implicit):
        text = str(cause)
        if isinstance(cause, sqlite3.OperationalError) or "database is locked" in text:
            if "locked" in text:
                wait = SQLITE_BUSY_TIMEOUT_SECONDS
                return f"the MLflow store is locked by other writers beyond the {wait}s busy timeout"
            return f"the MLflow store cannot be opened: {text.splitlines()[0]}"
        if "Max retries exceeded" in text or ("Connection refused" in text and "mlflow" in text.lower()):
            where = mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI", "its tracking URI")
            retries = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "?")
            return f"the MLflow tracking server at {_redacted(where)} is unreachable (gave up after {retries} retries)"
        if isinstance(cause, httpx.TransportError):
            api = os.environ.get("PREFECT_API_URL", "PREFECT_API_URL")
            return f"the Prefect API at {api} is unreachable ({type(cause).__name__}: {text})"
    return None


# What psycopg, asyncpg and SQLAlchemy say when a PostgreSQL connection drops or is refused
# (a restart, a failover, a network cut); lower case.
_DATABASE_GONE = (
    "database system is shutting down",
    "database system is starting up",
    "terminating connection due to administrator command",
    "server closed the connection unexpectedly",
    "connection refused",
    "could not connect to server",
    "connection is closed",
    "connection was closed",
    "consuming input failed",
    "no connection to the server",
)


def database_unreachable(error: BaseException) -> str | None:
    """What the database driver said, when `error` comes from a dropped or refused connection; else None.

    Reads the implicit chain too: Optuna's bookkeeping, failing again while it handles the dropped
    connection, raises its own error (even an UnboundLocalError) on top of the one that matters.
    """
    for cause in _chain(error):
        text = str(cause)
        if any(marker in text.lower() for marker in _DATABASE_GONE):
            return text.strip().splitlines()[0]
    return None


_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@\s]*@")


def redact(text: str) -> str:
    """`text` with the password of every URI in it replaced by ***: safe to print or log."""
    return _CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)


def _redacted(uri: str) -> str:
    """A URI without its password, if it has one (user:password@host)."""
    if "@" not in uri or "://" not in uri:
        return uri
    scheme, rest = uri.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


_DUPLICATE_KEY = ("UNIQUE constraint failed", "duplicate key value violates unique constraint")


def lost_insert_race(error: BaseException) -> bool:
    """True when a write failed only because a concurrent writer inserted the same unique row first.

    MLflow's `log_inputs` looks a dataset up and inserts it when missing, in one transaction: two
    runs logging the same data at once can both miss it, and the second insert breaks the UNIQUE
    key (SQLite and PostgreSQL spell it differently; over HTTP only the message survives).
    """
    return any(marker in str(cause) for cause in _chain(error) for marker in _DUPLICATE_KEY)


def retry_lost_race(write: Callable[[], T], attempts: int = 3) -> T:
    """`write()`, repeated when it lost an insert race: the retry finds the winner's row and uses it.

    Only for writes that look up before inserting (idempotent on retry); any other error is raised.
    """
    for attempt in range(1, attempts + 1):
        try:
            return write()
        except Exception as error:
            if attempt == attempts or not lost_insert_race(error):
                raise
    raise AssertionError("unreachable")


def is_transient(error: BaseException) -> bool:
    """Worth a retry: the error is, or was explicitly raised from, an unavailable service.

    Not when a service error was merely being handled when it was raised (`__context__`): a bug or
    a bad input raised inside an `except` for a dropped connection is still a bug, and retrying it
    repeats it. Wrappers that keep the cause (`raise ... from`, SQLAlchemy, MLflow's messages) still count.
    """
    return unavailable(error, implicit=False) is not None


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn`: retry a failed task only when a service was unavailable."""
    try:
        state.result()
    except Exception as error:
        return is_transient(error)
    return False
