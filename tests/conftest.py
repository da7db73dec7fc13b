"""Every test session owns its world: a temporary home for driftloop, Prefect, MLflow and Optuna.

The environment is set before anything imports Prefect (it reads PREFECT_HOME once), so no test
touches ~/.prefect, ./mlruns or ./.driftloop.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_SESSION_HOME = Path(tempfile.mkdtemp(prefix="driftloop-test-"))
(_SESSION_HOME / "prefect").mkdir()
os.environ.update(
    {
        "DRIFTLOOP_HOME": str(_SESSION_HOME / "home"),
        "PREFECT_HOME": str(_SESSION_HOME / "prefect"),
        "PREFECT_API_URL": "",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "DO_NOT_TRACK": "1",
        "GX_ANALYTICS_ENABLED": "false",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "HYPOTHESIS_STORAGE_DIRECTORY": str(_SESSION_HOME / "hypothesis"),  # not ./.hypothesis
    }
)
os.environ.pop("PREFECT_API_URL")

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def session_home() -> Path:
    return _SESSION_HOME
