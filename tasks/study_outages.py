"""A study's trial budget, and how a tuning process rides out its database dropping out.

An RDB study (PostgreSQL in the server shape) lives on a server that may restart or fail over
while a run tunes. Optuna gives up on the first dropped connection, mid-trial, and its own
bookkeeping then fails on top of it. `OutageGuard` keeps the run going: it waits for the
database (up to `DATABASE_OUTAGE_SECONDS`, with backoff), fails the trial the outage
interrupted and queues its parameters again (as the heartbeat retry does for a dead worker), so
the outage costs time, not budget.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from tasks.services import database_unreachable

logger = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# A trial whose process died (or whose database dropped out under it) is failed and queued again,
# at most this many times: a trial that kills its worker every time must not loop forever.
TRIAL_RETRIES = 2
DATABASE_OUTAGE_SECONDS = 120  # a restart takes seconds and a failover under a minute; longer is an outage
OUTAGE_BACKOFF_SECONDS = (1, 2, 4, 8, 15)


# On a trial a process asked for when other processes had already taken the whole budget (two
# asked at once): it is failed before it runs and uses no budget (tasks/tune_share.py).
SURPLUS = "surplus"


def _replaced(trials: Sequence[FrozenTrial]) -> set[int]:
    """Failed trials that use no budget: retried under another number, or surplus."""
    retried = {number for t in trials for number in t.system_attrs.get("retry_history", [])}
    return retried | {t.number for t in trials if t.state == TrialState.FAIL and t.user_attrs.get(SURPLUS)}


def spent(trials: Sequence[FrozenTrial]) -> int:
    """Trials that used the budget: finished ones, and failures that will not be retried."""
    replaced = _replaced(trials)
    return sum(1 for t in trials if t.state in FINISHED or (t.state == TrialState.FAIL and t.number not in replaced))


def over_budget(trials: Sequence[FrozenTrial], number: int, budget: int) -> bool:
    """Whether trial `number` falls outside the budget: `budget` trials before it already hold a place.

    Trial numbers are handed out atomically by the storage, so of two processes that asked at once
    exactly the later one finds itself over; every trial before it that is not replaced counts
    (finished, running, waiting or failed for good).
    """
    replaced = _replaced(trials)
    return sum(1 for t in trials if t.number < number and t.number not in replaced) >= budget


def retry_callback() -> RetryHeartbeatStaleTrialCallback:
    """Optuna's retry of a failed trial (its parameters queued again), at most TRIAL_RETRIES times."""
    with warnings.catch_warnings():  # "experimental" since Optuna 2.8, said on every construction
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback(max_retry=TRIAL_RETRIES)


class OutageGuard:
    """Wraps one process's objective; after a dropped database, `recover` puts its lost trial back.

    Usage: run trials with `guard.objective`; on an error call `guard.weather(error)` (re-raises
    anything else); before the next trial call `guard.recover()`.
    """

    def __init__(self, study: optuna.Study, objective: Callable[[optuna.Trial], float]) -> None:
        self.study = study
        self._objective = objective
        self._started: set[int] = set()  # trials this process asked for and has not seen finished
        self._lost: set[int] = set()  # trials that failed because the database dropped out under them
        self._outage_began: float | None = None
        self._waits = 0

    def objective(self, trial: optuna.Trial) -> float:
        self._started.add(trial.number)
        try:
            return self._objective(trial)
        except Exception as error:
            if database_unreachable(error):
                self._lost.add(trial.number)
            raise

    def weather(self, error: BaseException) -> None:
        """Wait a while if `error` is a dropped database, within the outage allowance; else raise it."""
        said = database_unreachable(error)
        if said is None:
            raise error
        now = time.monotonic()
        if self._outage_began is None:
            self._outage_began, self._waits = now, 0
            logger.warning("study %s: its database dropped out (%s); waiting for it", self.study.study_name, said)
        if now - self._outage_began > DATABASE_OUTAGE_SECONDS:
            raise RuntimeError(
                f"study {self.study.study_name}: its database has been unreachable for over "
                f"{DATABASE_OUTAGE_SECONDS} s; giving up"
            ) from error
        time.sleep(OUTAGE_BACKOFF_SECONDS[min(self._waits, len(OUTAGE_BACKOFF_SECONDS) - 1)])
        self._waits += 1

    def recover(self) -> None:
        """After an outage: fail what it interrupted, queue it again. Raises while the database is still away."""
        if self._outage_began is None:
            return
        trials = {t.number: t for t in self.study.get_trials(deepcopy=False)}
        retry = retry_callback()
        for number in sorted(self._started):
            trial = trials.get(number)
            if trial is None or trial.state in FINISHED or trial.state == TrialState.WAITING:
                continue
            if trial.state == TrialState.RUNNING:  # one process runs one trial at a time: this one is dead
                trial = self.study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
            elif number not in self._lost:
                continue  # it failed on its own (a bad corner of the space): that used its budget
            retry(self.study, trial)
            logger.warning("study %s: trial %d was lost to the outage; queued again", self.study.study_name, number)
        self._started.clear()
        self._lost.clear()
        logger.warning(
            "study %s: its database is back after %.0f s",
            self.study.study_name,
            time.monotonic() - self._outage_began,
        )
        self._outage_began = None
