"""Flow tests run real flows against Prefect's test harness (a temporary server for the module)
and real MLflow SQLite stores; each test gets its own driftloop home, so registries never mix."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.testing.utilities import prefect_test_harness

from tasks.settings import TrainingConfig, load_config


@pytest.fixture(scope="session", autouse=True)
def prefect_harness() -> Iterator[None]:
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DRIFTLOOP_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def with_changes(config: TrainingConfig, **sections: dict[str, Any]) -> TrainingConfig:
    """A copy of `config` with some sections' fields replaced, validated like a loaded file."""
    raw = config.model_dump(mode="json")
    for section, fields in sections.items():
        if isinstance(raw.get(section), dict) and isinstance(fields, dict):
            raw[section] = {**raw[section], **fields}
        else:
            raw[section] = fields
    return TrainingConfig.model_validate(raw)


@pytest.fixture(scope="session")
def flights_config(repo_root: Path) -> TrainingConfig:
    """The shipped config with a small tuning budget: the same pipeline, a shorter search."""
    return with_changes(
        load_config(repo_root / "configs" / "flights.yaml"), tuning={"n_trials": 4, "timeout_seconds": 120}
    )


@pytest.fixture(scope="session")
def weak_config(flights_config: TrainingConfig) -> TrainingConfig:
    """A search space with room for one shallow tree only: a model that must lose on any holdout."""
    return with_changes(
        flights_config,
        tuning={
            "n_trials": 1,
            "search_space": {
                "max_iter": {"type": "int", "low": 1, "high": 1},
                "max_leaf_nodes": {"type": "int", "low": 2, "high": 2},
                "learning_rate": {"type": "float", "low": 0.01, "high": 0.01},
            },
        },
        gate={"min_metric": None},
    )
