"""A real local Prefect stack for one process's lifetime: a server and the served deployments.

`prefect server start` plus the process serving driftloop's deployments, both on loopback,
both stopped (serving first) on exit.

Used by the replay (`make run`) and the end-to-end tests, so the drift event really travels
server -> trigger -> served deployment, exactly as under `make up`.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from tasks.settings import load_config

REPO_ROOT = Path(__file__).resolve().parent.parent
PREFECT = str(Path(sys.executable).parent / "prefect")
DEPLOYMENTS_PER_CONFIG = 5  # training, scoring, monitoring, rollback, tuning-worker (flows/deployments.py)


@dataclass(frozen=True)
class LocalStack:
    api_url: str
    env: dict[str, str]
    logs: Path
    serving: subprocess.Popen[bytes]  # the `python -m flows.deployments` process


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout: float, what: str, every: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every)
    raise TimeoutError(f"gave up waiting for {what} after {timeout:.0f}s")


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, then SIGKILL what is left after 30 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def stack_env(home: Path, poll_seconds: int = 2, schedules: bool = True) -> dict[str, str]:
    """The environment of a stack whose state lives under `home` (no PREFECT_API_URL yet).

    `schedules=False` serves the deployments without their schedules: a replay plays simulated
    time, and a wall-clock run of scoring or monitoring would write today into its history.
    """
    env = {
        **os.environ,
        "DRIFTLOOP_HOME": str(home),
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_RUNNER_POLL_FREQUENCY": str(poll_seconds),  # triggered runs start within seconds
    }
    env.pop("PREFECT_API_URL", None)
    if not schedules:
        env["DRIFTLOOP_SCHEDULES"] = "off"
    if env.get("PREFECT_SERVER_API_AUTH_STRING"):  # our clients must send what the server expects
        env.setdefault("PREFECT_API_AUTH_STRING", env["PREFECT_SERVER_API_AUTH_STRING"])
    return env


@contextmanager
def prefect_server(home: Path, env: dict[str, str] | None = None) -> Iterator[tuple[str, dict[str, str]]]:
    """A `prefect server` on a free loopback port with its database under `home`; (api url, env)."""
    logs = home / "run"
    logs.mkdir(parents=True, exist_ok=True)
    (home / "prefect").mkdir(parents=True, exist_ok=True)
    env = dict(env or stack_env(home))
    port = str(free_port())
    api = f"http://127.0.0.1:{port}/api"
    # The UI finds the API from these settings, not from `--port`: without them it calls :4200.
    env.update({"PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_SERVER_API_PORT": port})
    with (logs / "prefect-server.log").open("ab") as server_log:
        server = subprocess.Popen(
            [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", port],
            env=env, stdout=server_log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_until(lambda: answers(f"{api}/health"), 120, f"the Prefect server (log: {logs}/prefect-server.log)")
        yield api, {**env, "PREFECT_API_URL": api}
    finally:
        stop(server)


@contextmanager
def local_stack(home: Path, configs: list[Path], poll_seconds: int = 2, schedules: bool = True) -> Iterator[LocalStack]:
    """Start a server with its own PREFECT_HOME under `home`, serve the configs' deployments."""
    logs = home / "run"
    with (
        prefect_server(home, stack_env(home, poll_seconds, schedules)) as (api, env),
        (logs / "serve.log").open("wb") as serve_log,
    ):
        config_args = [arg for path in configs for arg in ("--config", str(path))]
        names = {load_config(path).name for path in configs}  # each config's deployments carry its name
        started = datetime.now(UTC)
        serving = subprocess.Popen(
            [sys.executable, "-m", "flows.deployments", *config_args],
            cwd=REPO_ROOT, env=env, stdout=serve_log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            expected = DEPLOYMENTS_PER_CONFIG * len(configs)
            wait_until(
                lambda: _served(api, serving, names, started, expected, env),
                180,
                f"the deployments to be served (log: {logs}/serve.log)",
            )
            yield LocalStack(api_url=api, env=env, logs=logs, serving=serving)
        finally:
            stop(serving)  # serving processes stop before the server


def api_headers(env: dict[str, str]) -> dict[str, str]:
    """What Prefect's client sends when the server has an auth string (docs/security.md)."""
    auth = env.get("PREFECT_API_AUTH_STRING")
    return {"Authorization": f"Basic {base64.b64encode(auth.encode()).decode()}"} if auth else {}


def _served(
    api: str, serving: subprocess.Popen[bytes], names: set[str], since: datetime, expected: int, env: dict[str, str]
) -> bool:
    """The serving process has registered the configs' deployments: present and updated since it started.

    A home used before keeps the deployments of its earlier runs (of this config or another): counting
    those would let a replay look its own training deployment up before it exists.
    """
    if serving.poll() is not None:
        raise RuntimeError(f"the serving process exited with code {serving.returncode}")
    query = {"deployments": {"name": {"any_": sorted(names)}}, "limit": 200}
    try:
        response = httpx.post(f"{api}/deployments/filter", json=query, headers=api_headers(env), timeout=5)
    except httpx.HTTPError:
        return False
    if response.status_code != 200:
        return False
    fresh = [d for d in response.json() if datetime.fromisoformat(d["updated"]) >= since - timedelta(seconds=1)]
    return len(fresh) >= expected
