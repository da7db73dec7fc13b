"""Whole-process timings: wall and CPU seconds of a child process, and medians of paired runs."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Timed:
    wall: float
    cpu: float  # user + system seconds of the child and its children
    stdout: str


def timed(command: list[str], env: dict[str, str], log: Path) -> Timed:
    """Run `command` to completion from the repository root; its stderr goes to `log`. Fails loudly."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with log.open("ab") as err:
        done = subprocess.run(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=err, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {done.returncode}; see {log}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Timed(wall, cpu, done.stdout.decode())


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def spread(values: list[float]) -> str:
    """median (min-max), for a table cell."""
    return f"{median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


@dataclass(frozen=True)
class Measured:
    wall: float
    peak_rss_mb: float  # the child's own peak resident set (VmHWM; bench/peak.py says why not rusage)


def timed_peak(module_command: list[str], env: dict[str, str], log: Path) -> Measured:
    """`timed` for `[python, -m, module, args...]`, with the child's own peak memory (bench/peak.py)."""
    python, flag, *rest = module_command
    peak_file = log.with_name(f"peak-{time.monotonic_ns()}.txt")
    started = time.perf_counter()
    with log.open("ab") as err:
        done = subprocess.run(
            [python, "-m", "bench.peak", str(peak_file), flag, *rest],
            cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err, check=False,
        )  # fmt: skip
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(module_command)} exited with {done.returncode}; see {log}")
    return Measured(wall, float(peak_file.read_text()))


def machine() -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True)
    cores = len(os.sched_getaffinity(0))
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{platform.machine()}, {cores} cores, {memory:.0f} GiB, Python {platform.python_version()}, "
        f"commit {commit.stdout.strip() or '?'}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )
