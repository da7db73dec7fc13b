"""Shared data for the validation tests: one real week of 2013 NYC flights and the shipped config.

Both are loaded once per session (reading the bundled flights costs about half a second); tests
that change the frame take a fresh copy from `good`.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from tasks.ingest import frame_to_parquet_bytes, load_bundled
from tasks.settings import TimeWindow, TrainingConfig, load_config
from tasks.stores import Stores

WEEK = TimeWindow(start=date(2013, 1, 1), end=date(2013, 1, 8))


@pytest.fixture(scope="session")
def flights_config(repo_root: Path) -> TrainingConfig:
    return load_config(repo_root / "configs" / "flights.yaml")


@pytest.fixture(scope="session")
def flights_week(flights_config: TrainingConfig) -> pd.DataFrame:
    """The first week of January 2013, joined with the weather, derived columns computed: ~5,900 flights."""
    return load_bundled(flights_config, WEEK)


@pytest.fixture(scope="session")
def label_provided(flights_config: TrainingConfig) -> TrainingConfig:
    """The flights contract for a source that delivers `late` itself, so a damaged label reaches the checks."""
    return flights_config.model_copy(update={"derive": [d for d in flights_config.derive if d.name != "late"]})


@pytest.fixture(scope="session")
def flights_week_parquet(flights_week: pd.DataFrame) -> bytes:
    return frame_to_parquet_bytes(flights_week)


@pytest.fixture
def good(flights_week: pd.DataFrame) -> pd.DataFrame:
    """A copy of the real week that a test may damage."""
    return flights_week.copy()


@pytest.fixture
def stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Stores:
    """Stores under a home of this test's own, so landed and quarantined files never mix."""
    monkeypatch.setenv("DRIFTLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DRIFTLOOP_DATA_URI", raising=False)
    return Stores.from_env()
