"""Exposure: what `make up` listens on, the Prefect and MLflow logins, and secrets that never leak.

One stack for the module, started as `make up` starts it (`infra/local/up.sh`) with both logins
on and stopped by `infra/local/down.sh`. The secrets are canaries (tests/reliability/secrets_canary.py):
the Prefect auth string, the MLflow password and the alert webhook URLs are random strings that
must turn up nowhere: not in Prefect's logs, runs, artifacts or events, not in MLflow's runs,
versions or artifacts, not in any file under DRIFTLOOP_HOME, not in this process's output.
docs/security.md describes what these tests check.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import chain
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.tracking._model_registry import utils as registry_utils  # private: see mlflow_uris_restored
from mlflow.tracking._tracking_service import utils as tracking_utils
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

from flows.local_stack import DEPLOYMENTS_PER_CONFIG, PREFECT, REPO_ROOT, free_port
from flows.monitoring import monitoring
from flows.scoring import scoring
from flows.training import training
from tasks.notify import ALERT_URLS_ENV, DRIFT_EVENT
from tasks.settings import load_config
from tests.flows.conftest import with_changes
from tests.reliability.secrets_canary import (
    Canaries,
    Searched,
    canary,
    file_records,
    leaks,
    mlflow_records,
    prefect_records,
)
from tests.shifts import february_moved_to_june_with_summer_weather

pytestmark = pytest.mark.e2e

# MLflow's basic-auth app imports Flask-WTF (the `mlflow[auth]` extra); without it the stack runs
# MLflow without a login and only the MLflow login test is skipped.
MLFLOW_AUTH_AVAILABLE = importlib.util.find_spec("flask_wtf") is not None
MLFLOW_USER = "admin"
PREFECT_USER = "driftloop"
CANARY_MODEL = "canary-late-arrival"  # not the served config's model: its drift trigger stays quiet


@dataclass(frozen=True)
class Stack:
    home: Path
    env: dict[str, str]  # what up.sh ran with
    prefect_api: str
    mlflow_url: str
    canaries: Canaries
    up_output: str

    @property
    def prefect_auth(self) -> str:
        return self.canaries.basic_auth_pairs["Prefect auth string"]

    @property
    def mlflow_password(self) -> str:
        return self.canaries.secrets["MLflow password"]

    def client_env(self, **extra: str) -> dict[str, str]:
        """A clean client environment: the API's address, no credentials unless given."""
        env = {k: v for k, v in os.environ.items() if "AUTH" not in k and not k.startswith("PREFECT_API")}
        return {**env, "PREFECT_API_URL": self.prefect_api, **extra}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("exposure")
    home = root / "home"
    closed = free_port()  # nothing listens there: every alert fails to deliver
    planted = {
        "Prefect auth string": canary("prefect"),
        "MLflow password": canary("mlflow"),
        "webhook URL": canary("webhook"),
        "mistyped webhook URL": canary("typo"),
    }
    canaries = Canaries(
        secrets=planted,
        basic_auth_pairs={
            "Prefect auth string": f"{PREFECT_USER}:{planted['Prefect auth string']}",
            "MLflow password": f"{MLFLOW_USER}:{planted['MLflow password']}",
        },
    )
    alert_urls = (
        f"json://127.0.0.1:{closed}/{canaries.secrets['webhook URL']},"
        f"jsn://127.0.0.1:{closed}/{canaries.secrets['mistyped webhook URL']}"  # Apprise cannot parse it
    )
    prefect_port, mlflow_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(
        {
            "DRIFTLOOP_HOME": str(home),
            "PREFECT_HOME": str(home / "prefect"),
            "PREFECT_PORT": str(prefect_port),
            "MLFLOW_PORT": str(mlflow_port),
            "MLFLOW_WORKERS": "1",
            "PREFECT_LOGGING_LEVEL": "INFO",
            "PREFECT_SERVER_API_AUTH_STRING": canaries.basic_auth_pairs["Prefect auth string"],
            ALERT_URLS_ENV: alert_urls,  # as a person running `make up` with alerts on would have it
        }
    )
    if MLFLOW_AUTH_AVAILABLE:
        env.update(
            {"DRIFTLOOP_MLFLOW_AUTH": "basic", "MLFLOW_AUTH_ADMIN_PASSWORD": canaries.secrets["MLflow password"]}
        )
    try:  # down.sh stops whatever up.sh managed to start, whatever happened
        up = subprocess.run(
            ["bash", "infra/local/up.sh", "configs/flights.yaml"],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        yield Stack(
            home=home,
            env=env,
            prefect_api=f"http://127.0.0.1:{prefect_port}/api",
            mlflow_url=f"http://127.0.0.1:{mlflow_port}",
            canaries=canaries,
            up_output=up.stdout + up.stderr,
        )
    finally:
        subprocess.run(["bash", "infra/local/down.sh"], cwd=REPO_ROOT, env=env, timeout=120, check=False)


# ---------------------------------------------------------------------------------------------
# What binds where


def _descendants(roots: list[int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended meanwhile
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def _socket_inodes(pids: set[int]) -> set[str]:
    inodes = set()
    for pid in pids:
        try:
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue
        inodes.update(link[len("socket:[") : -1] for link in links if link.startswith("socket:["))
    return inodes


def _tcp_listeners() -> dict[str, tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
    """inode -> (address, port) of every listening TCP socket, from /proc/net/tcp{,6}."""
    listeners = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # TCP_LISTEN
                continue
            hex_address, hex_port = fields[1].split(":")
            raw = bytes.fromhex(hex_address)  # host byte order, 32 bits at a time
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            listeners[fields[9]] = (ipaddress.ip_address(raw), int(hex_port, 16))
    return listeners


def _stack_processes(stack: Stack) -> set[int]:
    roots = [int(pid.read_text()) for pid in (stack.home / "run").glob("*.pid")]
    assert len(roots) == 3, roots  # prefect-server, mlflow-ui, serve
    return _descendants(roots)


def test_make_up_listens_on_loopback_only(stack: Stack) -> None:
    pids = _stack_processes(stack)
    inodes = _socket_inodes(pids)
    listening = {inode: where for inode, where in _tcp_listeners().items() if inode in inodes}

    ports = {port for _, port in listening.values()}
    assert {int(stack.env["PREFECT_PORT"]), int(stack.env["MLFLOW_PORT"])} <= ports, listening
    exposed = sorted(f"{address}:{port}" for address, port in listening.values() if not address.is_loopback)
    assert exposed == [], f"processes {sorted(pids)} listen beyond loopback: {exposed}"


def test_no_secret_or_store_uri_on_a_command_line(stack: Stack) -> None:
    """Any local user can read command lines (`ps`); secrets and store URIs (a database URI may hold
    a password) go by environment, readable only by the same user."""
    command_lines = []
    for pid in _stack_processes(stack):
        try:
            command_lines.append((f"command line of {pid}", Path(f"/proc/{pid}/cmdline").read_bytes()))
        except OSError:
            continue
    assert len(command_lines) >= 3
    assert leaks(stack.canaries, command_lines) == []
    store_uri = f"sqlite:///{stack.home}/mlflow/mlflow.db".encode()
    assert [where for where, line in command_lines if store_uri in line] == []


# ---------------------------------------------------------------------------------------------
# The Prefect API's auth string


def test_prefect_api_refuses_requests_without_the_auth_string(stack: Stack) -> None:
    api, secret = stack.prefect_api, stack.canaries.secrets["Prefect auth string"]
    assert httpx.post(f"{api}/flows/filter", json={}, timeout=10).status_code == 401
    assert httpx.post(f"{api}/flows/filter", json={}, auth=(PREFECT_USER, "wrong"), timeout=10).status_code == 401
    assert httpx.post(f"{api}/flows/filter", json={}, auth=(PREFECT_USER, secret), timeout=10).status_code == 200
    # Open on purpose (probes), and they say nothing but "up".
    for probe in ("health", "ready"):
        response = httpx.get(f"{api}/{probe}", timeout=10)
        assert response.status_code == 200
        assert len(response.content) < 40
    # The UI's files are served to anyone; it is told to ask for the string before calling the API.
    ui_settings = httpx.get(f"{api.removesuffix('/api')}/ui-settings", timeout=10).json()
    assert ui_settings["auth"] == "BASIC"
    # The serving process started by up.sh authenticated: its deployments are there.
    deployments = httpx.post(f"{api}/deployments/filter", json={}, auth=(PREFECT_USER, secret), timeout=10)
    assert len(deployments.json()) == DEPLOYMENTS_PER_CONFIG


TINY_FLOW = """
from prefect import flow, task

@task
def one() -> int:
    return 1

@flow(name="exposure-tiny")
def tiny() -> int:
    return one() + 1

print("tiny returned", tiny())
"""


def test_prefect_clients_need_the_auth_string(stack: Stack, tmp_path: Path) -> None:
    script = tmp_path / "tiny.py"
    script.write_text(TINY_FLOW)
    with_auth = stack.client_env(PREFECT_API_AUTH_STRING=stack.prefect_auth)
    without = stack.client_env()

    def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=120, check=False)

    listing = run(PREFECT, "flow", "ls", env=with_auth)
    assert listing.returncode == 0, listing.stderr[-2000:]
    assert "training" in listing.stdout
    flow_run = run(sys.executable, str(script), env=with_auth)
    assert flow_run.returncode == 0, flow_run.stderr[-2000:]
    assert "tiny returned 2" in flow_run.stdout

    for refused in (run(PREFECT, "flow", "ls", env=without), run(sys.executable, str(script), env=without)):
        assert refused.returncode != 0
        assert "401 Unauthorized" in refused.stderr, refused.stderr[-2000:]


# ---------------------------------------------------------------------------------------------
# MLflow's basic auth


@pytest.mark.skipif(
    not MLFLOW_AUTH_AVAILABLE, reason="MLflow basic auth needs Flask-WTF (mlflow[auth]); it is not installed"
)
def test_mlflow_refuses_anonymous_requests_and_accepts_the_tracking_credentials(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    search = f"{stack.mlflow_url}/api/2.0/mlflow/experiments/search"
    assert httpx.post(search, json={"max_results": 1}, timeout=10).status_code == 401
    assert (
        httpx.post(search, json={"max_results": 1}, auth=(MLFLOW_USER, "wrong-password!"), timeout=10).status_code
        == 401
    )
    assert httpx.get(f"{stack.mlflow_url}/health", timeout=10).status_code == 200  # open on purpose (probes)

    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    with pytest.raises(MlflowException, match="401"):
        MlflowClient(stack.mlflow_url).search_experiments()

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", MLFLOW_USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", stack.mlflow_password)
    client = MlflowClient(stack.mlflow_url)
    artifacts = stack.home / "mlflow" / "artifacts" / "exposure-login"  # searched with the other files later
    experiment = client.create_experiment("exposure-login", artifact_location=artifacts.as_uri())
    run = client.create_run(experiment)
    client.log_param(run.info.run_id, "checked", "yes")
    assert client.get_run(run.info.run_id).data.params == {"checked": "yes"}


# ---------------------------------------------------------------------------------------------
# Secrets never leak


@contextmanager
def mlflow_uris_restored() -> Iterator[None]:
    """The flows point MLflow at the stack (module globals and MLFLOW_*_URI variables): undo that."""
    saved_globals = (tracking_utils._tracking_uri, registry_utils._registry_uri)
    saved_env = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    try:
        yield
    finally:
        tracking_utils._tracking_uri, registry_utils._registry_uri = saved_globals
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def prefect_pointed_at(stack: Stack) -> Iterator[None]:
    """Prefect settings for the stack, with the process-wide event and log workers started under them.

    Those workers are singletons keyed by client type, not by API URL: one started by an earlier test
    in this process (under pytest-xdist, another module's server) would carry this test's events and
    logs to that server, and the searches below would find nothing there to fail on.
    """
    EventsWorker.drain_all(timeout=30)
    APILogWorker.drain_all(timeout=30)
    try:
        with temporary_settings({PREFECT_API_URL: stack.prefect_api, PREFECT_API_AUTH_STRING: stack.prefect_auth}):
            yield
    finally:
        EventsWorker.drain_all(timeout=30)
        APILogWorker.drain_all(timeout=30)


def _wait_for_drift_event(stack: Stack, since: datetime) -> None:
    body = {"filter": {"event": {"name": [DRIFT_EVENT]}, "occurred": {"since": since.isoformat()}}, "limit": 10}
    user, _, password = stack.prefect_auth.partition(":")
    for _ in range(30):
        response = httpx.post(f"{stack.prefect_api}/events/filter", json=body, auth=(user, password), timeout=10)
        response.raise_for_status()
        if any(e["resource"]["prefect.resource.name"] == CANARY_MODEL for e in response.json()["events"]):
            return
        time.sleep(1)
    raise AssertionError("the drift event never reached the Prefect server")


def test_secrets_never_appear_in_logs_runs_reports_or_files(
    stack: Stack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Train, score a shifted month, and let monitoring raise the alert, with every secret set."""
    config = with_changes(  # one small model: what is searched for is the secrets, not quality
        load_config(REPO_ROOT / "configs" / "flights.yaml"),
        model_name=CANARY_MODEL,
        tuning={
            "n_trials": 1,
            "timeout_seconds": 60,
            "search_space": {"max_iter": {"type": "int", "low": 50, "high": 50}},
        },
        gate={"min_metric": None},
    )
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    february_moved_to_june_with_summer_weather(config).to_csv(incoming / "2013-06-shifted.csv", index=False)
    shifted = with_changes(config, source={"kind": "files", "path": str(incoming)})

    for name in ("DRIFTLOOP_HOME", ALERT_URLS_ENV):
        monkeypatch.setenv(name, stack.env[name])
    monkeypatch.setenv("DRIFTLOOP_MLFLOW_TRACKING_URI", stack.mlflow_url)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", MLFLOW_USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", stack.mlflow_password)
    monkeypatch.setenv("PREFECT_API_URL", stack.prefect_api)
    monkeypatch.setenv("PREFECT_API_AUTH_STRING", stack.prefect_auth)
    caplog.set_level(logging.INFO, logger="prefect")  # what a run normally sends to the API (tests run at WARNING)
    for transport in ("apprise", "urllib3", "requests"):  # the loggers that see URLs: at their most talkative
        caplog.set_level(logging.DEBUG, logger=transport)
    started = datetime.now(UTC) - timedelta(seconds=5)

    with mlflow_uris_restored(), prefect_pointed_at(stack):
        assert training(config=config, reason="exposure canary").outcome == "promoted"
        scoring(config=shifted)
        outcome = monitoring(config=config, as_of=datetime(2013, 6, 30, tzinfo=UTC))
        assert outcome.status == "drift", outcome.decision.reasons
        assert outcome.event_id is not None  # the alert path ran: event, record, notify
        APILogWorker.drain_all()
        _wait_for_drift_event(stack, started)

    searched = Searched()
    mlflow_client = MlflowClient(tracking_uri=stack.mlflow_url, registry_uri=stack.mlflow_url)
    mlflow_found = list(searched.count("MLflow", mlflow_records(mlflow_client)))
    experiment_ids = [e.experiment_id for e in mlflow_client.search_experiments()]
    artifact_uris = [run.info.artifact_uri for run in mlflow_client.search_runs(experiment_ids)]
    prefect_found = list(
        searched.count("Prefect", prefect_records(stack.prefect_api, stack.prefect_auth, started.isoformat()))
    )
    output = capfd.readouterr()
    outputs = [("stdout", output.out), ("stderr", output.err), ("up.sh output", stack.up_output)]
    # Every record, at INFO for Prefect and DEBUG for the transports; what the console printed is these.
    formatter = logging.Formatter()
    log_lines = [
        (f"log record {r.name}", r.getMessage() + (formatter.formatException(r.exc_info) if r.exc_info else ""))
        for r in caplog.records
    ]
    records = chain(
        mlflow_found,
        prefect_found,
        searched.count("files", file_records(stack.home)),  # read one at a time
        searched.count("output", outputs),
        searched.count("log records", log_lines),
    )

    found = leaks(stack.canaries, records)
    assert found == [], "\n".join(found)
    # ...and the search really covered them: runs, logs and files of the whole loop.
    home_uri = stack.home.as_uri()
    assert artifact_uris
    assert all(uri.startswith(home_uri) for uri in artifact_uris)  # their bytes were read with the files
    assert {where.split()[1] for where, _ in mlflow_found} == {"experiment", "run", "logged", "registered", "model"}
    assert {where.split()[1] for where, _ in prefect_found} >= {"logs", "flow_runs", "task_runs", "artifacts", "event"}
    assert searched.counts["files"] > 20
    assert len(caplog.records) > 20
    # The failed deliveries were logged (here and in the run's logs on the server), without the URLs.
    alert_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("alert ")]
    assert "alert destination 1 of 2 (json): NOT delivered" in alert_lines, alert_lines
    assert "alert destination 2 of 2 (jsn): NOT delivered: not a URL Apprise can use" in alert_lines, alert_lines
    assert any("alert destination 1 of 2" in text for where, text in prefect_found if "logs" in where)
