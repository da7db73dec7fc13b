"""Failpoints: named places where the reliability tests kill the process, the way a crash would.

    DRIFTLOOP_FAILPOINTS=after-register python -m flows.training ...

makes the run SIGKILL itself at `failpoint("after-register")`: no exception handler, `finally`
block or atexit hook runs, exactly as with `kill -9` or an OOM kill. Unset (always, outside the
tests), a failpoint is one environment lookup.
"""

from __future__ import annotations

import os
import signal

FAILPOINTS_ENV = "DRIFTLOOP_FAILPOINTS"

# Where a training run can be killed; tests/reliability kills it at each.
DURING_TUNING = "during-tuning"  # the first trial is running (its first stage reported)
AFTER_LOG_MODEL = "after-log-model"  # the model is logged, the MLflow run still open, nothing registered
AFTER_REGISTER = "after-register"  # the version is registered, the aliases not moved yet
FAILPOINTS = (DURING_TUNING, AFTER_LOG_MODEL, AFTER_REGISTER)


def failpoint(name: str) -> None:
    if name in os.environ.get(FAILPOINTS_ENV, "").split(","):
        os.kill(os.getpid(), signal.SIGKILL)
