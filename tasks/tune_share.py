"""Distributed tuning: one Optuna study in a shared database, its trial budget spent by several processes.

With `tuning.workers: N` (N > 1) and an RDB storage (PostgreSQL in the server shape), the training
run hands its train and validation frames to the data store, starts N-1 runs of the
`tuning-worker` deployment (they land on whichever workers of the work pool are free, on any
machine), and tunes alongside them. Every process runs the same loop (`take_share`):

- it counts the budget (`spent`) as trials finished (complete or pruned) plus trials that failed for good;
  a trial whose worker died is failed by the heartbeat check after `grace_seconds` and queued
  again (Optuna's RetryHeartbeatStaleTrialCallback), so a killed worker costs time, not budget;
- it starts a trial only while finished + running trials leave budget, or a retry is waiting; once
  asked, a trial that finds `n_trials` trials before it (two processes asked at once) is failed
  unrun as surplus and uses no budget, so the budget is exact;
- while the rest of the budget runs elsewhere it stays, checking heartbeats, to take over the
  trial of a worker that dies;
- it rides out a restart of the study's database (`OutageGuard`).

Samplers are seeded per worker (seed + worker number): a shared study is not repeatable, since
which worker asks first depends on timing; a single process (workers: 1) still is.
"""

from __future__ import annotations

import io
import logging
import time
import warnings
from collections.abc import Sequence
from typing import Any, cast
from uuid import UUID

import optuna
import pandas as pd

from tasks.settings import TrainingConfig
from tasks.stores import DataStore, Stores
from tasks.study_outages import SURPLUS, OutageGuard, over_budget, spent
from tasks.tune import (
    Objective,
    TrialCallback,
    TuningResult,
    is_shared_storage,
    make_objective,
    open_study,
    prepare_study,
    study_result,
)

logger = logging.getLogger(__name__)

WORKER_FLOW = "tuning-worker"
WAIT_AFTER_DEADLINE_SECONDS = 120  # a worker's last trial may still be running when the budget's time is up


class SharedTuningError(RuntimeError):
    """The configuration asks for shared tuning that this deployment cannot give."""


class SurplusTrial(Exception):
    """This process asked for a trial just after others took the last of the budget: it does not run."""


def take_share(
    study: optuna.Study,
    objective: Objective,
    budget: int,
    deadline: float,
    worker: str,
    poll_seconds: float,
    on_trial: TrialCallback | None = None,
) -> int:
    """Run trials of `study` until its budget is spent or `deadline` (time.time()) passes; how many ran here."""
    waiting, running = optuna.trial.TrialState.WAITING, optuna.trial.TrialState.RUNNING
    ran = 0

    def labelled(trial: optuna.Trial) -> float:
        nonlocal ran
        trial.set_user_attr("worker", worker)  # which process ran it: the test and the UI can tell
        if over_budget(study.get_trials(deepcopy=False), trial.number, budget):
            trial.set_user_attr(SURPLUS, True)
            raise SurplusTrial(f"trial {trial.number}: other workers took the last of the budget of {budget} first")
        ran += 1
        return objective(trial)

    guard = OutageGuard(study, labelled)
    while (left := deadline - time.time()) > 0:
        try:
            guard.recover()
            with warnings.catch_warnings():  # "experimental" since Optuna 2.9; said once a second otherwise
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)  # a dead worker's trial: failed, and queued again
            trials = study.get_trials(deepcopy=False)
            if spent(trials) >= budget:
                break
            states = [t.state for t in trials]
            if waiting in states or spent(trials) + states.count(running) < budget:  # checked again once asked
                study.optimize(
                    guard.objective,
                    n_trials=1,
                    timeout=left,
                    callbacks=[on_trial] if on_trial else None,
                    catch=(ValueError, SurplusTrial),  # a bad corner of the space fails its trial, not the search
                )
            else:  # the rest of the budget is running elsewhere: stay to take over a trial whose worker dies
                time.sleep(min(poll_seconds, left))
        except Exception as error:
            guard.weather(error)  # a database restart: wait, then put back the trial it interrupted
    return ran


def hand_off(stores: Stores, config: TrainingConfig, study_name: str, train: pd.DataFrame, valid: pd.DataFrame) -> str:
    """Write the frames the workers tune on where every worker reads (the data store); their folder."""
    store = DataStore(stores.data_uri)
    for name, frame in (("train", train), ("validation", valid)):
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        path = store.put("tuning", config.name, f"{study_name}/{name}.parquet", buffer.getvalue())
    return path.rsplit("/", 1)[0]


def take_handoff(stores: Stores, folder: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    store = DataStore(stores.data_uri)
    train, valid = (
        pd.read_parquet(io.BytesIO(store.read_bytes(f"{folder}/{n}.parquet"))) for n in ("train", "validation")
    )
    return train, valid


def worker_share(
    config: TrainingConfig, stores: Stores, study_name: str, folder: str, deadline: float, worker: int, label: str
) -> int:
    """One tuning worker's whole job: read the frames, join the study, spend budget until none is left."""
    if not is_shared_storage(stores.optuna_storage):
        raise SharedTuningError(f"tuning worker {label}: the Optuna storage is a journal file, not a shared database")
    train, valid = take_handoff(stores, folder)
    study = open_study(config, stores.optuna_storage, study_name, worker=worker)
    return take_share(
        study,
        make_objective(config, train, valid),
        config.tuning.n_trials,
        deadline,
        label,
        config.tuning.heartbeat_seconds,
    )


def start_workers(config: TrainingConfig, study_name: str, folder: str, deadline: float, count: int) -> list[UUID]:
    """Start `count` runs of the tuning-worker deployment of this dataset; their flow run ids."""
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    started = []
    for worker in range(1, count + 1):
        run = cast(
            FlowRun,
            run_deployment(
                name=f"{WORKER_FLOW}/{config.name}",
                parameters={
                    "config": config.model_dump(mode="json"),
                    "study_name": study_name,
                    "handoff": folder,
                    "deadline": deadline,
                    "worker": worker,
                },
                timeout=0,  # do not wait here: this process tunes alongside them
                as_subflow=True,  # shown under the training run in the UI
            ),
        )  # sync here; mypy sees the async twin too
        started.append(run.id)
    return started


def settle_workers(flow_run_ids: Sequence[UUID], wait_until: float) -> dict[str, str]:
    """Wait for the worker runs to end (until `wait_until`); cancel any never picked up. Their states."""
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled

    with get_client(sync_client=True) as client:
        while True:
            runs = [client.read_flow_run(run_id) for run_id in flow_run_ids]
            if all(run.state is not None and run.state.is_final() for run in runs) or time.time() > wait_until:
                break
            time.sleep(1.0)
        states: dict[str, str] = {}
        for run in runs:
            name = str(run.state.name) if run.state is not None else "unknown"
            if run.state is not None and (run.state.is_scheduled() or run.state.is_pending()):
                # never picked up (no free worker in the pool): it must not start later on a study that is done
                client.set_flow_run_state(run.id, Cancelled(message="the shared study finished without it"), force=True)
                name = "Cancelled (never started)"
            states[str(run.id)] = name
    return states


def tune_shared(
    config: TrainingConfig,
    stores: Stores,
    train: pd.DataFrame,
    valid: pd.DataFrame,
    study_name: str,
    champion_params: dict[str, Any] | None,
    on_trial: TrialCallback | None = None,
) -> tuple[TuningResult, dict[str, str]]:
    """The training run's side of a shared study: hand off, start the workers, tune, wait; the result."""
    tuning = config.tuning
    if not is_shared_storage(stores.optuna_storage):
        raise SharedTuningError(
            f"tuning.workers is {tuning.workers}, but the Optuna storage is a journal file, which only this "
            "machine reads: set DRIFTLOOP_OPTUNA_STORAGE to a database URL (postgresql+psycopg://...)"
        )
    started, cpu_started = time.monotonic(), time.process_time()
    study, warm = prepare_study(config, stores.optuna_storage, study_name, champion_params)
    deadline = time.time() + tuning.timeout_seconds
    folder = hand_off(stores, config, study_name, train, valid)
    workers = start_workers(config, study_name, folder, deadline, tuning.workers - 1)
    objective = make_objective(config, train, valid)
    take_share(study, objective, tuning.n_trials, deadline, "training run", tuning.heartbeat_seconds, on_trial)
    states = settle_workers(workers, max(deadline, time.time()) + WAIT_AFTER_DEADLINE_SECONDS)
    store = DataStore(stores.data_uri)
    store.fs.rm(folder, recursive=True)  # the frames were the workers' copy; the run keeps its own lineage
    stopped_by = "trials" if spent(study.get_trials(deepcopy=False)) >= tuning.n_trials else "timeout"
    result = study_result(study, warm, time.monotonic() - started, time.process_time() - cpu_started, stopped_by)
    return result, states
