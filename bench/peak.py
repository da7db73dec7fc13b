"""Run a module as `python -m` would and write its peak resident memory (MB) to a file at exit.

`python -m bench.peak OUT -m MODULE ARGS...`. The peak is the process's own VmHWM: getrusage's
`ru_maxrss` is not, on Linux a child starts with its parent's maximum (kept across fork and exec),
so a benchmark parent that once held a large frame would lend every child its peak.
"""

from __future__ import annotations

import atexit
import runpy
import sys
from pathlib import Path


def peak_rss_mb() -> float:
    """This process's high-water resident set, from /proc/self/status (its own memory only)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status: peak memory needs Linux")


def main() -> None:
    out, flag, module, *args = sys.argv[1:]
    if flag != "-m":
        raise SystemExit("usage: python -m bench.peak OUT -m MODULE [ARGS...]")
    atexit.register(lambda: Path(out).write_text(f"{peak_rss_mb():.1f}"))
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
