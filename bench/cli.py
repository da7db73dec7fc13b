"""The CLI's answer time: `driftloop status`, `history` and `card` on a home with a champion.

One training run (the config's initial window) leaves a champion, its history entry and its card;
then each command runs as its own process, in turn with the others and with two floors (the
interpreter starting, and starting with `import prefect`), so the machine's drift touches all of
them alike. Whole-process wall seconds, imports included: what a user waits for.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from bench.timing import Timed, median, spread, timed
from flows.local_stack import prefect_server

DRIFTLOOP = str(Path(sys.executable).parent / "driftloop")
GOAL_SECONDS = 2.0
# what each command's answer holds when the champion is there: a fast error must not pass for speed
ANSWERS = {
    "`driftloop status`": "champion: version 1",
    "`driftloop history`": ": 1 decisions",
    "`driftloop card --version 1`": "# Model card",
}


def commands(config: Path) -> dict[str, list[str]]:
    chosen = ["--config", str(config)]
    return {
        "`driftloop status`": [DRIFTLOOP, *chosen, "status"],
        "`driftloop history`": [DRIFTLOOP, *chosen, "history"],
        "`driftloop card --version 1`": [DRIFTLOOP, *chosen, "card", "--version", "1"],
        "floor: `python -c pass`": [sys.executable, "-c", "pass"],
        "floor: `python -c 'import prefect'`": [sys.executable, "-c", "import prefect"],
    }


def measure(config: Path, repeats: int, workdir: Path) -> dict[str, list[Timed]]:
    log = workdir / "cli.log"
    with prefect_server(workdir / "server") as (_, env):
        env = {**env, "DRIFTLOOP_HOME": str(workdir / "home")}
        timed([sys.executable, "-m", "flows.training", "--config", str(config)], env, log)
        runs: dict[str, list[Timed]] = {name: [] for name in commands(config)}
        for _ in range(repeats):
            for name, command in commands(config).items():
                runs[name].append(timed(command, env, log))
                if ANSWERS.get(name, "") not in runs[name][-1].stdout:
                    raise RuntimeError(f"{name} did not describe the champion: {runs[name][-1].stdout[:300]!r}")
    return runs


def markdown(config: str, runs: dict[str, list[Timed]], repeats: int) -> str:
    lines = [
        "## CLI: `driftloop status`, `history` and `card`, as a user waits for them",
        "",
        f"A home with one champion (`{config}`, one training run); each command {repeats} times as its own",
        "process, in turn with the others and the two floors. Wall seconds, median (min-max), imports",
        f"included; the goal is {GOAL_SECONDS:.0f} s.",
        "",
        "| command | wall s | over the interpreter's start |",
        "| --- | --- | --- |",
    ]
    floor = median([t.wall for t in runs["floor: `python -c pass`"]])
    for name, timings in runs.items():
        walls = [t.wall for t in timings]
        lines.append(f"| {name} | {spread(walls)} | {median(walls) - floor:+.2f} s |")
    return "\n".join(lines) + "\n"


def run(config: Path, repeats: int) -> str:
    with tempfile.TemporaryDirectory(prefix="driftloop-bench-cli-") as folder:
        runs = measure(config, repeats, Path(folder))
    return markdown(config.name, runs, repeats)


if __name__ == "__main__":
    print(run(Path("configs/bikeshare.yaml"), repeats=2))
