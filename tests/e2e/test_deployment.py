"""End to end: a real `prefect server`, the deployments served by `python -m flows.deployments`,
and a training run started the way a person starts one: `prefect deployment run`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from mlflow import MlflowClient

from tasks.registry import CHAMPION
from tasks.stores import Stores

pytestmark = pytest.mark.e2e

PREFECT = str(Path(sys.executable).parent / "prefect")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(1)
    raise TimeoutError(f"gave up waiting for {what} after {timeout:.0f}s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, repo_root: Path) -> Iterator[dict[str, object]]:
    """A Prefect server and a serving process with their own homes; stopped serve-first."""
    root = tmp_path_factory.mktemp("e2e")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(root / "prefect"),
        "DRIFTLOOP_HOME": str(root / "home"),
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
    }
    env.pop("PREFECT_API_URL", None)
    (root / "prefect").mkdir()
    config = yaml.safe_load((repo_root / "configs" / "flights.yaml").read_text())
    config["tuning"].update({"n_trials": 3, "timeout_seconds": 120})
    config_path = root / "flights.yaml"
    config_path.write_text(yaml.safe_dump(config))

    server_log = (root / "server.log").open("wb")
    server = subprocess.Popen(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=server_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    serve_log = (root / "serve.log").open("wb")
    serving: subprocess.Popen[bytes] | None = None
    try:
        wait_until(lambda: _healthy(f"{api}/health"), 120, "the Prefect server")
        env["PREFECT_API_URL"] = api
        serving = subprocess.Popen(
            [sys.executable, "-m", "flows.deployments", "--config", str(config_path)],
            cwd=repo_root,
            env=env,
            stdout=serve_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(lambda: _deployment_exists(api, "training", "flights"), 120, "the training deployment")
        yield {"api": api, "env": env, "root": root, "serve": serving}
    finally:
        if serving is not None:
            stop(serving)  # workers and serving processes stop before the server
        stop(server)
        server_log.close()
        serve_log.close()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _deployment_exists(api: str, flow: str, name: str) -> bool:
    try:
        return httpx.get(f"{api}/deployments/name/{flow}/{name}", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def prefect_cli(world: dict[str, object], *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PREFECT, *args],
        env=world["env"],
        capture_output=True,
        text=True,
        timeout=timeout,  # type: ignore[arg-type]
    )


def test_deployments_are_listed(world: dict[str, object]) -> None:
    listing = prefect_cli(world, "deployment", "ls", timeout=60)
    assert listing.returncode == 0, listing.stderr
    assert "training/flights" in listing.stdout
    assert "rollback/flights" in listing.stdout


def test_deployment_run_trains_and_leaves_a_champion(world: dict[str, object]) -> None:
    run = prefect_cli(
        world,
        "deployment",
        "run",
        "training/flights",
        "--param",
        "reason=e2e",
        "--watch",
        "--watch-interval",
        "2",
        "--watch-timeout",
        "840",
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Completed" in run.stdout

    env = world["env"]
    assert isinstance(env, dict)
    stores = Stores.from_env(env)
    client = MlflowClient(tracking_uri=stores.mlflow_tracking_uri, registry_uri=stores.mlflow_tracking_uri)
    champion = client.get_model_version_by_alias("flights-late-arrival", CHAMPION)
    assert champion.tags["driftloop.reason"] == "e2e"
    assert champion.tags["driftloop.decision"] == "promoted"


def test_bad_parameters_are_refused_before_a_run_starts(world: dict[str, object]) -> None:
    run = prefect_cli(
        world,
        "deployment",
        "run",
        "training/flights",
        "--param",
        'config={"name": "flights", "surprise": 1}',
        timeout=120,
    )
    assert run.returncode != 0
    assert "validation" in (run.stdout + run.stderr).lower()
