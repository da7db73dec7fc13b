"""What may be printed about a service (never a password inside a URI), and writes that lost an insert race."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from tasks.services import lost_insert_race, redact, retry_lost_race


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (
            "ConnectionError: http://ops:s3cret@mlflow:5000/api failed",
            "ConnectionError: http://ops:***@mlflow:5000/api failed",
        ),
        (
            "postgresql+asyncpg://prefect:p%40ss@db:5432/prefect and s3://key:secret@bucket/x",
            "postgresql+asyncpg://prefect:***@db:5432/prefect and s3://key:***@bucket/x",
        ),
        ("sqlite:////home/me/mlflow.db is locked", "sqlite:////home/me/mlflow.db is locked"),
        ("mailto://user@host has no password", "mailto://user@host has no password"),
    ],
)
def test_redact_hides_every_uri_password_and_nothing_else(text: str, shown: str) -> None:
    assert redact(text) == shown


def _log_dataset_like_mlflow(db: sqlite3.Connection, name: str, before_insert: Callable[[], None]) -> str:
    """MLflow's log_inputs in miniature: look the dataset up, insert it when missing."""
    row = db.execute("SELECT uuid FROM datasets WHERE name = ?", (name,)).fetchone()
    if row:
        return str(row[0])
    before_insert()
    try:
        db.execute("INSERT INTO datasets (uuid, name) VALUES (?, ?)", (f"mine-{name}", name))
    except sqlite3.IntegrityError as error:
        raise RuntimeError("(sqlite3.IntegrityError) the insert failed") from error
    return f"mine-{name}"


def test_a_write_that_lost_the_insert_race_is_retried_and_uses_the_winners_row(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    mine, theirs = sqlite3.connect(path, isolation_level=None), sqlite3.connect(path, isolation_level=None)
    mine.execute("CREATE TABLE datasets (uuid TEXT, name TEXT UNIQUE)")
    races = iter([lambda: theirs.execute("INSERT INTO datasets VALUES ('theirs', 'training')")])

    def concurrent_writer_once() -> None:
        next(races, lambda: None)()

    used = retry_lost_race(lambda: _log_dataset_like_mlflow(mine, "training", concurrent_writer_once))

    assert used == "theirs"
    assert mine.execute("SELECT count(*) FROM datasets").fetchone()[0] == 1


def test_only_a_duplicate_key_is_a_lost_race_and_other_errors_are_raised_at_once() -> None:
    calls: list[int] = []

    def failing() -> None:
        calls.append(1)
        raise RuntimeError("(sqlite3.IntegrityError) NOT NULL constraint failed: datasets.name")

    with pytest.raises(RuntimeError, match="NOT NULL"):
        retry_lost_race(failing)
    assert calls == [1]
    wrapped = RuntimeError("log_inputs failed")
    wrapped.__cause__ = sqlite3.IntegrityError("UNIQUE constraint failed: datasets.experiment_id, datasets.name")
    assert lost_insert_race(wrapped)
    assert lost_insert_race(RuntimeError('duplicate key value violates unique constraint "datasets_pk"'))
    assert not lost_insert_race(RuntimeError("database is locked"))


def test_a_race_lost_every_time_gives_up_after_its_attempts() -> None:
    calls: list[int] = []

    def always_losing() -> None:
        calls.append(1)
        raise RuntimeError("UNIQUE constraint failed: datasets.name")

    with pytest.raises(RuntimeError, match="UNIQUE"):
        retry_lost_race(always_losing, attempts=3)
    assert len(calls) == 3
