"""Real servers for the tests that need one, on loopback: started, waited for, stopped by process group."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TypeAlias

from flows.local_stack import answers, stop, wait_until

MLFLOW = str(Path(sys.executable).parent / "mlflow")
Popen: TypeAlias = subprocess.Popen[bytes]


def start_server(command: list[str], health_url: str, log: Path, env: dict[str, str] | None = None) -> Popen:
    """Start a server in its own process group, logging to `log`; return once `health_url` answers."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        server = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: answers(health_url), 180, f"{Path(command[0]).name} {command[1]} (log: {log})")
    except TimeoutError:
        stop(server)
        raise
    return server


def start_mlflow_server(backend_store_uri: str, artifacts: Path, port: int, log: Path) -> Popen:
    """`mlflow server` with its runs and registry in `backend_store_uri`, artifacts proxied from a folder.

    Clients see `mlflow-artifacts:` URIs and never the folder, as with an object store behind it.
    """
    command = [
        MLFLOW, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", backend_store_uri, "--artifacts-destination", artifacts.as_uri(),
    ]  # fmt: skip
    return start_server(command, f"http://127.0.0.1:{port}/health", log)
