"""Whole-process timings: wall and CPU seconds of a child process, and medians of paired runs."""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import time
from dataclasses import dataclass
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
    peak_rss_mb: float  # the child's own peak resident set (not its children's)


def timed_peak(command: list[str], env: dict[str, str], log: Path) -> Measured:
    """`timed`, with the child's peak memory from its own rusage (os.wait4: this child only)."""
    started = time.perf_counter()
    with log.open("ab") as err:
        child = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {child.returncode}; see {log}")
    return Measured(wall, usage.ru_maxrss / 1024)
