"""What may be printed about a service: never a password inside a URI."""

from __future__ import annotations

import pytest

from tasks.services import redact


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
