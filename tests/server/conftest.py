"""A throwaway PostgreSQL cluster per test module of the server shape (tests/postgres.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.postgres import Cluster, postgres_cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with postgres_cluster() as running:
        yield running
