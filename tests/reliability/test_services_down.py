"""Services down mid-run: the MLflow tracking server or the Prefect API killed while a run tunes.

Each test starts the service it kills (never the session's Prefect server, which other tests
share), runs `python -m flows.training` against it, SIGKILLs the service while Optuna searches,
and checks that the run gives up after its bounded retries: exit code 3 and one sentence that
names the service, not a hang and not a traceback. The service then comes back on the same port
with the same database; the next run repairs what the failed one left, trains, and the five
invariants hold.

Retries are kept short here (two each, see SHORT_RETRIES); the defaults are in tasks/services.py.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import httpx
import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.tracking._model_registry import utils as registry_utils  # private: see mlflow_pointed_at
from mlflow.tracking._tracking_service import utils as tracking_utils
from prefect.states import Failed

from flows.cli import EXIT_UNAVAILABLE
from flows.local_stack import PREFECT, answers, free_port, prefect_server, stop, wait_until
from tasks.recovery import LEASE_FOLDER
from tasks.services import is_transient, retry_if_transient
from tasks.stores import Stores
from tasks.validate import BatchRejected, Failure
from tests.reliability.conftest import DATASET, MODEL, REPO_ROOT, World
from tests.reliability.invariants import assert_invariants
from tests.servers import start_mlflow_server, start_server

pytestmark = pytest.mark.e2e

BASELINE = ("--start", "2013-01-01", "--end", "2013-02-01", "--reason", "baseline")
SHORT_RETRIES = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "PREFECT_CLIENT_MAX_RETRIES": "2",
}
# From the outage to the exit. Most of it is the run finishing its tuning (budget 120 s, overrun by
# up to one trial) and its final fit before it meets the dead service: 60-290 s seen on a loaded
# two-core machine, of which the retries take 10-30 s. A hang on retries would go far past this.
GIVES_UP_WITHIN = 600
SLOW_TEST = 1800  # three training runs and two server starts on a loaded machine


# ---------------------------------------------------------------------------------------------
# Processes


@dataclass(frozen=True)
class Training:
    """A `python -m flows.training` process, its stdout and stderr in two files."""

    process: subprocess.Popen[str]
    stdout: Path
    stderr: Path

    def output(self) -> str:
        return f"--- stdout\n{self.stdout.read_text()[-3000:]}\n--- stderr\n{self.stderr.read_text()[-6000:]}"

    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.read_text().splitlines() if line.strip()]

    def exit_code_within(self, seconds: float) -> int:
        try:
            return self.process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the run was still going {seconds:.0f}s after the outage: retries unbounded?\n{self.output()}")


@contextmanager
def training_process(world: World, env: dict[str, str], *args: str, name: str) -> Iterator[Training]:
    """Start a training run (like World.start_training, with our environment); kill it if the test fails."""
    out, err = world.home / f"{name}.out", world.home / f"{name}.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "flows.training", "--config", str(world.config_path), *args],
            cwd=REPO_ROOT, env=env, stdout=stdout, stderr=stderr, text=True,
        )  # fmt: skip
    try:
        yield Training(process, out, err)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def run_module(module: str, world: World, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m <module> --config ...` to the end (World.train/reconcile, with our environment)."""
    return subprocess.run(
        [sys.executable, "-m", module, "--config", str(world.config_path), *args],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip


def wait_until_tuning(stores: Stores, training: Training) -> None:
    """Until Optuna has written to its journal: the run is past every MLflow read and searching."""
    journal = Path(stores.optuna_storage.removeprefix("journal:"))

    def tuning() -> bool:
        if training.process.poll() is not None:
            raise AssertionError(f"the run ended before it tuned:\n{training.output()}")
        return journal.exists() and journal.stat().st_size > 0

    wait_until(tuning, 600, f"the run to start tuning ({journal})", every=0.5)


def kill_group(pid: int) -> None:
    """SIGKILL a server and every process it started (they share its session and group)."""
    os.killpg(os.getpgid(pid), signal.SIGKILL)


def start_mlflow(root: Path, port: int) -> subprocess.Popen[bytes]:
    """`mlflow server` on loopback with its database and artifacts under `root` (same root: same store)."""
    return start_mlflow_server(f"sqlite:///{root / 'mlflow.db'}", root / "artifacts", port, root / "server.log")


def start_prefect_server(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    """A Prefect server as flows.local_stack.prefect_server starts it, on a chosen port and PREFECT_HOME."""
    env = {k: v for k, v in env.items() if k != "PREFECT_API_URL"}
    env.update({"PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_SERVER_API_PORT": str(port)})
    command = [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    return start_server(command, f"http://127.0.0.1:{port}/api/health", log, env)


def prefect_server_pids(port: int) -> list[int]:
    """The processes of `prefect server start ... --port <port>` (prefect_server does not expose its Popen)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:  # gone meanwhile
            continue
        is_server = "server" in argv and "start" in argv and any(Path(a).name == "prefect" for a in argv)
        if is_server and ("--port", str(port)) in pairwise(argv):
            found.append(int(entry.name))
    return found


# ---------------------------------------------------------------------------------------------
# Stores


@contextmanager
def mlflow_pointed_at(uri: str) -> Iterator[None]:
    """Point MLflow's process-wide URIs at `uri` (model and run downloads go through them), then undo it.

    So no later test in this process inherits the URI of a server that is gone.
    """
    saved = (tracking_utils._tracking_uri, registry_utils._registry_uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        tracking_utils._tracking_uri, registry_utils._registry_uri = saved


def leases(stores: Stores) -> list[dict]:
    """The lease records left in the lock folder (a run that could not clean up leaves its record)."""
    return [json.loads(path.read_text()) for path in (stores.lock_dir / LEASE_FOLDER).glob("*.json")]


def versions(stores: Stores) -> list:
    client = MlflowClient(tracking_uri=stores.mlflow_tracking_uri, registry_uri=stores.mlflow_tracking_uri)
    if not client.search_registered_models(filter_string=f"name = '{MODEL}'"):
        return []
    return list(client.search_model_versions(f"name = '{MODEL}'"))


def flow_run_state(api: str, flow_run_id: str) -> str:
    return str(httpx.get(f"{api}/flow_runs/{flow_run_id}", timeout=30).json()["state_type"])


def assert_one_clean_line(training: Training, expected: str) -> None:
    """The command's last word is the one sentence, and no traceback ends its output."""
    lines = training.stderr_lines()
    assert lines, training.output()
    assert lines[-1] == expected, training.output()
    assert not any("Traceback" in line for line in lines[-5:]), training.output()


# ---------------------------------------------------------------------------------------------
# The tracking server goes away


@pytest.mark.timeout(SLOW_TEST)
def test_mlflow_down_mid_run_stops_cleanly_and_the_next_run_trains(world: World, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**world.env, **SHORT_RETRIES, "DRIFTLOOP_MLFLOW_TRACKING_URI": url}
    stores = Stores.from_env(env)
    servers = [start_mlflow(tmp_path / "mlflow-server", port)]
    try:
        with training_process(world, env, *BASELINE, name="mlflow-down") as run:
            wait_until_tuning(stores, run)
            kill_group(servers[0].pid)
            servers[0].wait()
            down_at = time.monotonic()
            code = run.exit_code_within(GIVES_UP_WITHIN)
            gave_up_after = time.monotonic() - down_at

        assert code == EXIT_UNAVAILABLE, run.output()
        assert_one_clean_line(
            run,
            f"training stopped: the MLflow tracking server at {url} is unreachable (gave up after 2 retries); "
            "nothing was promoted. Rerun when it is back.",
        )
        print(f"MLflow down: the run gave up {gave_up_after:.0f}s after the outage")
        # It could not close its MLflow side while MLflow was down: the record stays for the repair.
        [lease] = leases(stores)

        servers.append(start_mlflow(tmp_path / "mlflow-server", port))
        assert versions(stores) == []  # nothing registered, so nothing promoted half-way

        repaired = run_module("flows.reconcile", world, env)

        assert repaired.returncode == 0, repaired.stdout + repaired.stderr[-3000:]
        assert "1 dead run(s)" in repaired.stdout, repaired.stdout
        assert leases(stores) == []
        assert flow_run_state(world.api, lease["flow_run_id"]) in {"FAILED", "CRASHED"}

        rerun = run_module("flows.training", world, env, *BASELINE)

        assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-4000:]
        assert "promoted" in rerun.stdout, rerun.stdout
        with mlflow_pointed_at(url):
            assert_invariants(stores, MODEL, DATASET, prefect_api=world.api)
    finally:
        for server in servers:
            stop(server)


# ---------------------------------------------------------------------------------------------
# The Prefect API goes away


@pytest.mark.timeout(SLOW_TEST)
def test_prefect_down_mid_run_stops_cleanly_and_the_next_run_marks_it_crashed(world: World, tmp_path: Path) -> None:
    server_home = tmp_path / "prefect-server"
    with prefect_server(server_home) as (api, server_env):
        port = int(api.rsplit(":", 1)[1].split("/", 1)[0])
        env = {**world.env, **SHORT_RETRIES, "PREFECT_API_URL": api, "PREFECT_HOME": server_env["PREFECT_HOME"]}
        stores = Stores.from_env(env)
        restarted: subprocess.Popen[bytes] | None = None
        try:
            with training_process(world, env, *BASELINE, name="prefect-down") as run:
                wait_until_tuning(stores, run)
                pids = prefect_server_pids(port)
                assert pids, f"no `prefect server start --port {port}` process found"
                for pid in pids:
                    kill_group(pid)
                wait_until(lambda: not answers(f"{api}/health"), 60, "the Prefect server to go away")
                down_at = time.monotonic()
                code = run.exit_code_within(GIVES_UP_WITHIN)
                gave_up_after = time.monotonic() - down_at

            assert code == EXIT_UNAVAILABLE, run.output()
            last = run.stderr_lines()[-1]
            assert last.startswith(f"training stopped: the Prefect API at {api} is unreachable"), run.output()
            assert last.endswith("nothing was promoted. Rerun when it is back."), run.output()
            assert_one_clean_line(run, last)
            print(f"Prefect down: the run gave up {gave_up_after:.0f}s after the outage; it said: {last}")
            [lease] = leases(stores)  # Prefect could not hear of its end: the next start tells it
            assert versions(stores) == []

            restarted = start_prefect_server(server_env, port, server_home / "run" / "prefect-server-restarted.log")
            assert flow_run_state(api, lease["flow_run_id"]) == "RUNNING"  # the server never heard the end

            rerun = run_module("flows.training", world, env, *BASELINE)

            assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-4000:]
            assert "promoted" in rerun.stdout, rerun.stdout
            assert flow_run_state(api, lease["flow_run_id"]) == "CRASHED"
            assert leases(stores) == []
            with mlflow_pointed_at(stores.mlflow_tracking_uri):
                assert_invariants(stores, MODEL, DATASET, prefect_api=api)
        finally:
            if restarted is not None:
                stop(restarted)


# ---------------------------------------------------------------------------------------------
# Only transient errors are retried


@pytest.mark.parametrize(
    "error",
    [
        sqlite3.OperationalError("database is locked"),
        httpx.ConnectError("[Errno 111] Connection refused"),
        MlflowException(
            "API request to http://127.0.0.1:5000/api/2.0/mlflow/runs/create failed with exception "
            "HTTPConnectionPool(host='127.0.0.1', port=5000): Max retries exceeded with url: "
            "/api/2.0/mlflow/runs/create "
            "(Caused by NewConnectionError: Connection refused)"
        ),
    ],
    ids=["sqlite-locked", "connect-error", "mlflow-max-retries"],
)
def test_an_unavailable_service_is_transient(error: Exception) -> None:
    assert is_transient(error)
    assert retry_if_transient(None, None, Failed(data=error))


@pytest.mark.parametrize(
    "error",
    [
        ValueError("max_iter must be positive"),
        KeyError("carrier"),
        BatchRejected([Failure(file="flights-2013-01.parquet", column="late", rule="not null", failing_rows=3)], []),
    ],
    ids=["value-error", "key-error", "batch-rejected"],
)
def test_a_bad_input_or_a_bug_is_not_retried(error: Exception) -> None:
    assert not is_transient(error)
    assert not retry_if_transient(None, None, Failed(data=error))


def _raised_while_handling(cause: Exception, error: Exception, explicit: bool) -> Exception:
    try:
        try:
            raise cause
        except Exception as handled:
            if explicit:
                raise error from handled
            raise error  # noqa: B904 (the implicit context is what this test is about)
    except Exception as raised:
        return raised
    raise AssertionError("unreachable")


def test_a_bug_raised_while_handling_an_outage_is_not_retried_but_one_raised_from_it_is() -> None:
    outage = httpx.ConnectError("[Errno 111] Connection refused")
    bug = _raised_while_handling(outage, KeyError("carrier"), explicit=False)
    assert bug.__context__ is outage
    assert not is_transient(bug)
    assert not retry_if_transient(None, None, Failed(data=bug))
    wrapped = _raised_while_handling(outage, RuntimeError("the Prefect API call failed"), explicit=True)
    assert is_transient(wrapped)
