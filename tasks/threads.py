"""How many OpenMP threads a model's fit or prediction may use (`model.threads`).

scikit-learn's gradient boosting parallelises with OpenMP, whose threads wait for each other at
every barrier. Beside another busy process (the Prefect server, MLflow, a second training run) a
thread that loses its core stalls the others: on two cores a small fit with two threads was ~30x
slower than with one (README, "Measured"). Small fits gain nothing from a second thread even on an
idle machine, so `auto` gives them one and lets large fits use every core. Waiting threads sleep
rather than spin (`OMP_WAIT_POLICY=PASSIVE`, set in `tasks/__init__.py` before scikit-learn loads
its OpenMP runtime), which bounds the loss when a large fit does share its cores.

The limit is applied per call, in the thread that fits: OpenMP's thread count is per thread, and
Prefect runs tasks in worker threads.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Literal

from threadpoolctl import ThreadpoolController

# Below this many rows a fit runs on one thread whatever the machine (see the module docstring).
ROWS_PER_EXTRA_THREAD = 50_000

Threads = int | Literal["auto"]


def available_cores() -> int:
    """The cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def threads_for(rows: int, configured: Threads = "auto", cores: int | None = None) -> int:
    """The thread count for a fit or prediction on `rows` rows.

    A configured number is capped by the cores; `auto` is one thread, plus one per
    ROWS_PER_EXTRA_THREAD rows, up to the cores.
    """
    cores = available_cores() if cores is None else max(1, cores)
    if configured != "auto":
        return max(1, min(configured, cores))
    return max(1, min(cores, 1 + rows // ROWS_PER_EXTRA_THREAD))


@cache
def _controller() -> ThreadpoolController:
    # Built on first use, when scikit-learn (imported by tasks/model.py) has loaded its OpenMP runtime.
    return ThreadpoolController()


@contextmanager
def model_threads(rows: int, configured: Threads = "auto") -> Iterator[int]:
    """Limit OpenMP to `threads_for(rows, configured)` threads in this thread for the block's duration."""
    threads = threads_for(rows, configured)
    with _controller().limit(limits=threads, user_api="openmp"):
        yield threads
