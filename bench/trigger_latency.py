"""Trigger latency: a drift event to the training run it starts, Running, on the local stack.

The real path: a `prefect server`, the deployments served by `python -m flows.deployments` (the
training deployment's `DeploymentEventTrigger`), and `driftloop.drift.detected` posted to the
server's events API as monitoring emits it. Each triggered run is timed from the event's
`occurred` to three moments the server records: the run created (the automation fired), Pending
(the serving process picked it up) and Running (its process imported the flow and began). The run
is then cancelled (it would train for a minute) and the next event waits for it to end, so no run
queues behind the concurrency limit. Idle CPU is the server's and the serving process's, over a
quiet spell, at each runner poll frequency measured.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.timing import median
from flows.local_stack import LocalStack, local_stack
from tasks.notify import DRIFT_EVENT, model_resource
from tasks.settings import load_config

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Latency:
    created: float  # seconds from the event to the flow run's creation
    pending: float  # ... to Pending (the serving process took it)
    running: float  # ... to Running (the flow's process imported it and began)


@dataclass(frozen=True)
class Setting:
    poll_seconds: int
    latencies: list[Latency]
    idle_cpu_share: float  # CPU seconds per wall second of server + serving process, nothing to do


def _timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _session_cpu_seconds(session: int) -> float:
    """User + system CPU of every live process in `session`, with the children it has waited for."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended while we looked
        if int(fields[3]) == session:  # fields after the name: state, ppid, pgrp, session, ...
            total += sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    return total / CLOCK_TICKS


def _server_session(api: str) -> int:
    """The `prefect server` process serving `api` (it leads its own session)."""
    port = api.rsplit(":", 1)[1].split("/", 1)[0]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"server" in command and b"start" in command and port.encode() in command:
                return int(entry.name)
    raise RuntimeError(f"no prefect server process for {api}")


def idle_cpu_share(stack: LocalStack, seconds: float) -> float:
    sessions = [_server_session(stack.api_url), stack.serving.pid]
    before = sum(_session_cpu_seconds(s) for s in sessions)
    time.sleep(seconds)
    return (sum(_session_cpu_seconds(s) for s in sessions) - before) / seconds


def _post_event(api: str, model_name: str, window: dict[str, str]) -> tuple[str, datetime]:
    event_id, occurred = str(uuid.uuid4()), datetime.now(UTC)
    event = {
        "id": event_id,
        "occurred": occurred.isoformat(),
        "event": DRIFT_EVENT,
        "resource": model_resource(model_name),
        "payload": {"retrain_window": window, "reason": "benchmark"},
    }
    httpx.post(f"{api}/events", json=[event], timeout=30).raise_for_status()
    return event_id, occurred


def _triggered_run(api: str, event_id: str, deadline: float) -> dict[str, Any]:
    reason = f"drift event {event_id}"
    while time.monotonic() < deadline:
        runs = httpx.post(f"{api}/flow_runs/filter", json={"sort": "EXPECTED_START_TIME_DESC", "limit": 20}, timeout=30)
        for run in runs.json():
            if run["parameters"].get("reason") == reason and run["state_type"] in {"RUNNING", *TERMINAL}:
                return dict(run)
        time.sleep(0.1)
    raise TimeoutError(f"no run of the training deployment reached Running for {reason}")


def _state_times(api: str, run_id: str) -> dict[str, datetime]:
    states = httpx.get(f"{api}/flow_run_states/", params={"flow_run_id": run_id}, timeout=30).json()
    first: dict[str, datetime] = {}
    for state in sorted(states, key=lambda s: s["timestamp"]):
        first.setdefault(state["type"], _timestamp(state["timestamp"]))
    return first


def _cancel_and_wait(api: str, run_id: str, deadline: float) -> None:
    httpx.post(
        f"{api}/flow_runs/{run_id}/set_state", json={"state": {"type": "CANCELLING"}, "force": True}, timeout=30
    ).raise_for_status()
    while time.monotonic() < deadline:
        if httpx.get(f"{api}/flow_runs/{run_id}", timeout=30).json()["state_type"] in TERMINAL:
            return
        time.sleep(0.5)
    raise TimeoutError(f"flow run {run_id} did not end after its cancellation")


def measure(config_path: Path, poll_seconds: int, events: int, idle_seconds: float, workdir: Path) -> Setting:
    config = load_config(config_path)
    window = config.window.model_dump(mode="json")
    latencies = []
    with local_stack(workdir / f"poll-{poll_seconds}", [config_path], poll_seconds, schedules=False) as stack:
        idle = idle_cpu_share(stack, idle_seconds)
        for _ in range(events):
            event_id, occurred = _post_event(stack.api_url, config.model_name, window)
            deadline = time.monotonic() + 300
            run = _triggered_run(stack.api_url, event_id, deadline)
            times = _state_times(stack.api_url, run["id"])
            latencies.append(
                Latency(
                    created=(_timestamp(run["created"]) - occurred).total_seconds(),
                    pending=(times["PENDING"] - occurred).total_seconds(),
                    running=(times["RUNNING"] - occurred).total_seconds(),
                )
            )
            _cancel_and_wait(stack.api_url, run["id"], deadline)
    return Setting(poll_seconds, latencies, idle)


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile: at 20 values, p95 is the 19th smallest."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(share * len(ordered))) - 1]


def markdown(config: str, settings: list[Setting], idle_seconds: float) -> str:
    lines = [
        "## 5. Trigger latency: a drift event to the triggered training run, Running",
        "",
        f"`{config}`'s deployments served on a local `prefect server`; `driftloop.drift.detected` posted to its",
        "events API as monitoring emits it; each triggered run timed from the event's `occurred` to the",
        "server's record of its creation (the automation), Pending (the serving process took it) and Running",
        "(its process imported the flow and began), then cancelled. Seconds over the events: median, p95",
        "(nearest rank), max. Idle CPU: the server and the serving process, nothing to do, over",
        f"{idle_seconds:.0f} s (1.00 is one core busy).",
        "",
        "| runner poll (`PREFECT_RUNNER_POLL_FREQUENCY`) | events | created | Pending "
        "| Running: median | p95 | max | idle CPU |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for setting in settings:
        created = [x.created for x in setting.latencies]
        pending = [x.pending for x in setting.latencies]
        running = [x.running for x in setting.latencies]
        lines.append(
            f"| {setting.poll_seconds} s | {len(running)} | {median(created):.2f} | {median(pending):.2f} "
            f"| {median(running):.2f} | {percentile(running, 0.95):.2f} | {max(running):.2f} "
            f"| {setting.idle_cpu_share:.3f} |"
        )
    return "\n".join(lines) + "\n"


def run(config: Path, polls: dict[int, int], idle_seconds: float = 30.0) -> str:
    """`polls`: runner poll seconds -> how many events to time at it."""
    with tempfile.TemporaryDirectory(prefix="driftloop-bench-trigger-") as folder:
        settings = [measure(config, poll, events, idle_seconds, Path(folder)) for poll, events in polls.items()]
    return markdown(config.name, settings, idle_seconds)


if __name__ == "__main__":
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    print(run(Path("configs/bikeshare.yaml"), polls={2: 3}, idle_seconds=10))
