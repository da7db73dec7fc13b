"""Orchestration overhead: the training flow against the same ML work as a plain script.

For each config: a Prefect server is started once; then, alternating, the training flow as its
own process (`python -m flows.training`, a fresh DRIFTLOOP_HOME each time, so it trains) and the
plain script (bench/plain_training.py). The ratio is taken pair by pair. One more flow run without
a server shows the cold start (Prefect's ephemeral server started inside the process). Where the
flow's extra time goes is read from the server: the flow run's own time and each task's.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.timing import Timed, median, spread, timed
from flows.local_stack import prefect_server, stack_env


@dataclass(frozen=True)
class Overhead:
    config: str
    flow: list[Timed]
    plain: list[Timed]
    cold: Timed
    flow_run_seconds: float  # the last flow run's own time, as the server measured it
    task_seconds: dict[str, float]  # the last flow run's tasks, by task name
    plain_stages: dict[str, float]

    @property
    def ratios(self) -> list[float]:
        return [a.wall / b.wall for a, b in zip(self.flow, self.plain, strict=True)]


def _task_name(name: str) -> str:
    return name.rsplit("-", 1)[0] if "-" in name else name  # Prefect names task runs "<task>-<suffix>"


def _last_flow_run(api: str) -> tuple[float, dict[str, float]]:
    runs = httpx.post(f"{api}/flow_runs/filter", json={"sort": "START_TIME_DESC", "limit": 1}, timeout=30).json()
    run = runs[0]
    tasks = httpx.post(
        f"{api}/task_runs/filter", json={"flow_runs": {"id": {"any_": [run["id"]]}}, "limit": 200}, timeout=30
    ).json()
    seconds: dict[str, float] = defaultdict(float)
    for task in tasks:
        seconds[_task_name(task["name"])] += float(task["total_run_time"])
    return float(run["total_run_time"]), dict(seconds)


def measure(config: Path, repeats: int, workdir: Path) -> Overhead:
    log = workdir / "overhead.log"
    flow = [sys.executable, "-m", "flows.training", "--config", str(config)]
    plain = [sys.executable, "-m", "bench.plain_training", "--config", str(config)]
    flows_timed: list[Timed] = []
    plain_timed: list[Timed] = []
    with prefect_server(workdir / "server") as (_, env):
        for index in range(repeats):
            home = workdir / f"home-{index}"
            flows_timed.append(timed(flow, {**env, "DRIFTLOOP_HOME": str(home)}, log))
            plain_timed.append(timed(plain, {**env, "DRIFTLOOP_HOME": str(home)}, log))
        flow_seconds, task_seconds = _last_flow_run(env["PREFECT_API_URL"])
    cold_home = workdir / "cold"
    cold_env = {**stack_env(cold_home), "PREFECT_HOME": str(cold_home / "prefect")}
    (cold_home / "prefect").mkdir(parents=True)
    cold = timed(flow, cold_env, log)
    stages = json.loads(plain_timed[-1].stdout.strip().splitlines()[-1])
    return Overhead(
        config=config.name,
        flow=flows_timed,
        plain=plain_timed,
        cold=cold,
        flow_run_seconds=flow_seconds,
        task_seconds=task_seconds,
        plain_stages=stages["stages"],
    )


def markdown(results: list[Overhead], repeats: int) -> str:
    lines = [
        "## 1. Orchestration overhead: the training flow against the same ML work as a plain script",
        "",
        f"Each config's initial window, {repeats} alternating pairs against one running Prefect server: the flow",
        "(`python -m flows.training`, a fresh home each run) and `python -m bench.plain_training` (the same data,",
        "split, Optuna study, final fit, holdout metrics and explanations through the same functions; no Prefect,",
        "MLflow, validation or artifacts). Seconds as median (min-max); the ratio is taken pair by pair.",
        "",
        "| config | flow, server up | plain script | flow / plain | cold start (flow, no server) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for result in results:
        flow, plain = spread([t.wall for t in result.flow]), spread([t.wall for t in result.plain])
        lines.append(
            f"| {result.config} | {flow} s | {plain} s "
            f"| {median(result.ratios):.2f}x ({min(result.ratios):.2f}-{max(result.ratios):.2f}) "
            f"| {result.cold.wall:.1f} s |"
        )
    lines += [
        "",
        "Where the flow's time goes (its last run, as the Prefect server timed it; the plain script's stages):",
        "",
    ]
    for result in results:
        flow_wall = result.flow[-1].wall
        tasks = ", ".join(
            f"{name} {seconds:.1f}" for name, seconds in sorted(result.task_seconds.items(), key=lambda kv: -kv[1])
        )
        stages = ", ".join(f"{name} {seconds:.1f}" for name, seconds in result.plain_stages.items())
        lines += [
            f"- {result.config}: process {flow_wall:.1f} s, of which the flow run {result.flow_run_seconds:.1f} s "
            f"(imports, settings and connecting before it: {flow_wall - result.flow_run_seconds:.1f} s); "
            f"tasks: {tasks}. Plain script: {stages}.",
        ]
    return "\n".join(lines) + "\n"


def run(configs: list[Path], repeats: int) -> str:
    with tempfile.TemporaryDirectory(prefix="driftloop-bench-") as folder:
        results = []
        for config in configs:
            workdir = Path(folder) / config.stem
            workdir.mkdir()
            results.append(measure(config, repeats, workdir))
    return markdown(results, repeats)


if __name__ == "__main__":
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    print(run([Path(arg) for arg in sys.argv[1:]] or [Path("configs/bikeshare.yaml")], repeats=1))
