"""A serving world: a home with a real champion trained by driftloop's own pipeline code, and the service.

The champion is a small but real model of the flights config (two days of flights, 20 boosting
rounds), logged, hashed and registered as training does; the service runs as its own process on a
free port (`python -m flows.serve`), so every test speaks HTTP to it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from flows.local_stack import free_port
from tasks.artifacts import hash_tags
from tasks.derive import inputs_of
from tasks.ingest import load_bundled
from tasks.model import features_and_target, fit_pipeline
from tasks.registry import CHAMPION, TAG_DECIDED_AT, configure_mlflow
from tasks.settings import TimeWindow, TrainingConfig, load_config
from tasks.stores import Stores
from tasks.train import log_pipeline
from tasks.validate import check_frame

REPO = Path(__file__).resolve().parents[2]
TWO_DAYS = TimeWindow(start=datetime(2013, 1, 2, tzinfo=UTC), end=datetime(2013, 1, 4, tzinfo=UTC))


@dataclass
class World:
    home: Path
    config_path: Path
    config: TrainingConfig
    stores: Stores
    client: MlflowClient
    rows: pd.DataFrame  # validated rows of the two days, target included

    def register(self, params: dict[str, Any], features: list[str] | None = None, champion: bool = True) -> str:
        """Fit, log (skops, hashes recorded) and register a version; move the champion alias to it."""
        config = self.config
        x, y = features_and_target(config, self.rows)
        fit_config = config
        if features is not None:  # a version that takes other inputs than the config's features
            numeric = [f for f in config.features.numeric if f in features]
            categorical = [f for f in config.features.categorical if f in features]
            fit_config = config.model_copy(
                update={"features": config.features.model_copy(update={"numeric": numeric, "categorical": categorical})}
            )
            x = x[features]
        pipeline = fit_pipeline(fit_config, params, x, y)
        configure_mlflow(self.stores, experiment=config.model_name)
        with mlflow.start_run():
            info = log_pipeline(fit_config, pipeline, x, "model")
            tags = hash_tags(info.model_uri)
            mlflow.set_tags(tags)
        version = self.client.create_model_version(
            config.model_name, info.model_uri, run_id=info.run_id,
            tags={**tags, TAG_DECIDED_AT: datetime.now(UTC).isoformat(), "driftloop.batch_sha256": "ab" * 32},
        )  # fmt: skip
        if champion:
            self.client.set_registered_model_alias(config.model_name, CHAMPION, version.version)
        return str(version.version)


def serving_config(tmp: Path, **serving: Any) -> Path:
    raw = yaml.safe_load((REPO / "configs" / "flights.yaml").read_text())
    raw["serving"] = {"poll_seconds": 0.3, "log_flush_seconds": 0.2, "max_batch_rows": 500, **serving}
    path = tmp / "flights-serving.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("serving")
    home = tmp / "home"
    config_path = serving_config(tmp)
    config = load_config(config_path)
    stores = Stores.from_env({"DRIFTLOOP_HOME": str(home)})
    stores.ensure_local_dirs()
    raw = load_bundled(config, TWO_DAYS)
    validated, failures = check_frame(config, raw, "two-days")
    assert failures == []
    rows = validated.reset_index(drop=True)
    client = MlflowClient(tracking_uri=stores.mlflow_tracking_uri, registry_uri=stores.mlflow_tracking_uri)
    configure_mlflow(stores, experiment=config.model_name)
    client.create_registered_model(config.model_name)
    return World(home, config_path, config, stores, client, rows)


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=60)


def start_server(world: World, log: Path, workers: int = 1, own_group: bool = False) -> Server:
    return start_service(world.config_path, world.home, log, workers, own_group)


def start_service(config_path: Path, home: Path, log: Path, workers: int = 1, own_group: bool = False) -> Server:
    """`python -m flows.serve` on a free loopback port against `home`; returns once it answers."""
    port = free_port()
    env = {**os.environ, "DRIFTLOOP_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    command = [sys.executable, "-m", "flows.serve", "--config", str(config_path), "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, "--workers", str(workers)],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=own_group,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the service exited with {process.returncode}: {log.read_text()[-3000:]}")
        try:
            httpx.get(f"{url}/health", timeout=2)
            return Server(url, process, log)
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise AssertionError(f"the service did not answer in 120 s: {log.read_text()[-3000:]}")


def request_records(world: World, n: int, start: int = 0) -> list[dict[str, Any]]:
    return records_for_requests(world.config, world.rows.iloc[start : start + n])


def records_for_requests(config: TrainingConfig, rows: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON records of the scoring contract (timestamp, row key, raw features), as a client sends them."""
    derived = {d.name for d in config.derive if d.name not in inputs_of(d)}  # computed from other columns
    columns = list(dict.fromkeys([config.timestamp, *config.validation.unique_key, *config.features.all]))
    columns = [c for c in columns if c not in derived or c == config.timestamp]  # derived again by the service
    frame = rows[columns].copy()
    frame[config.timestamp] = frame[config.timestamp].map(lambda t: t.isoformat())
    records = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    keys = set(config.validation.unique_key)  # integral key values stay integers, as a client sends them
    return [{k: (int(v) if k in keys and isinstance(v, float) else v) for k, v in r.items()} for r in records]


def health(server: Server) -> dict[str, Any]:
    return httpx.get(f"{server.url}/health", timeout=5).json()


def wait_until_served(server: Server, version: str, seconds: float = 60) -> None:
    """Until /health names `version` as the model answering."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if health(server).get("model", {}).get("version") == version:
            return
        time.sleep(0.1)
    raise AssertionError(f"version {version} not served after {seconds} s: {health(server)}")
