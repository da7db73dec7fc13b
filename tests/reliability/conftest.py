"""Fault-injection tests: real processes killed for real, against a real `prefect server`.

The server is started once per session (on loopback, with its own database); each test gets
its own driftloop home, so registries, data and leases never mix between tests. Training runs
that are to be killed run as `python -m flows.training` subprocesses, like a deployment run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.local_stack import prefect_server
from tasks.faults import FAILPOINTS_ENV
from tasks.stores import Stores
from tests.budget import with_small_budget

MODEL = "flights-late-arrival"
DATASET = "flights"
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class World:
    """One test's stores, the session's Prefect API, and a config file for subprocess runs."""

    home: Path
    api: str
    env: dict[str, str]
    config_path: Path

    @property
    def stores(self) -> Stores:
        return Stores.from_env(self.env)

    def train(self, *args: str, failpoint: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """`python -m flows.training` in its own process; `failpoint` makes it kill itself there."""
        env = dict(self.env)
        if failpoint:
            env[FAILPOINTS_ENV] = failpoint
        return subprocess.run(
            [sys.executable, "-m", "flows.training", "--config", str(self.config_path), *args],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def reconcile(self) -> subprocess.CompletedProcess[str]:
        """`python -m flows.reconcile`: what an operator runs after an outage."""
        return subprocess.run(
            [sys.executable, "-m", "flows.reconcile", "--config", str(self.config_path)],
            cwd=REPO_ROOT, env=self.env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    def start_training(self, *args: str, log_name: str = "train") -> subprocess.Popen[str]:
        log = (self.home / f"{log_name}.log").open("w")
        return subprocess.Popen(
            [sys.executable, "-m", "flows.training", "--config", str(self.config_path), *args],
            cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def prefect_workers_flushed_after_the_module() -> Iterator[None]:
    """Prefect's event and log workers live per process, not per API: flush them between modules.

    Under pytest-xdist one process runs several modules, each with its own servers; a worker left
    running would carry the next module's events and logs to this module's server.
    """
    yield
    EventsWorker.drain_all(timeout=30)
    APILogWorker.drain_all(timeout=30)


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """One real Prefect server for the session; in-process flows talk to it too."""
    home = tmp_path_factory.mktemp("reliability-server")
    with prefect_server(home) as (api, env), temporary_settings(updates={PREFECT_API_URL: api}):
        yield api, env


@pytest.fixture
def world(
    tmp_path: Path, prefect_api: tuple[str, dict[str, str]], monkeypatch: pytest.MonkeyPatch, repo_root: Path
) -> World:
    api, server_env = prefect_api
    home = tmp_path / "home"
    home.mkdir()
    config = with_small_budget(yaml.safe_load((repo_root / "configs" / "flights.yaml").read_text()))
    config_path = tmp_path / "flights.yaml"
    config_path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("DRIFTLOOP_HOME", str(home))
    env = {
        **os.environ,
        "DRIFTLOOP_HOME": str(home),
        "PREFECT_API_URL": api,
        "PREFECT_HOME": server_env["PREFECT_HOME"],
        "PREFECT_LOGGING_LEVEL": "INFO",
    }
    env.pop(FAILPOINTS_ENV, None)
    return World(home=home, api=api, env=env, config_path=config_path)
