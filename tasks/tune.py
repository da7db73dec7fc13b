"""Tune: an Optuna search over the config's space, scored on the validation split.

TPE with a fixed seed, a median pruner fed by staged boosting (the model grows
`iterations_per_step` rounds at a time with warm_start, and each stage reports its validation
score), a budget in trials and in seconds, persistent storage from a URI, and a warm start that
enqueues the champion's parameters when they lie inside the current space.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
import pandas as pd

from tasks.faults import DURING_TUNING, failpoint
from tasks.model import estimator, features_and_target, metric_value, model_classes, predict_scores, preprocessor
from tasks.settings import ParamRange, TrainingConfig
from tasks.split import Splits
from tasks.study_outages import OutageGuard, retry_callback, spent
from tasks.threads import model_threads

DEFAULT_MAX_ITER = 100

Objective = Callable[[optuna.Trial], float]
TrialCallback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]


@dataclass(frozen=True)
class TuningResult:
    study_name: str
    best_params: dict[str, Any]
    best_value: float
    n_trials: int
    n_complete: int
    n_pruned: int
    n_failed: int
    warm_started: bool
    seconds: float
    trials: list[dict[str, Any]] = field(default_factory=list)
    cpu_seconds: float = 0.0  # this process's CPU (all threads) while the study ran: what tuning cost
    # "trials": the trial budget decided, so a seeded run repeats; "timeout": the time cap cut the
    # search short on a slow machine, and the same seed may give another model elsewhere
    stopped_by: str = "trials"
    by_worker: dict[str, int] = field(default_factory=dict)  # trials each worker ran (a shared study)

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "trials"}


def is_shared_storage(uri: str) -> bool:
    """An RDB URL: a study workers on several machines can share (a journal file is one machine's)."""
    return not uri.startswith("journal:")


def make_storage(uri: str, heartbeat_seconds: int = 30, grace_seconds: int = 90) -> optuna.storages.BaseStorage:
    """`journal:<path>` is a journal file (fast, no server); anything else is an RDB URL (SQLAlchemy's).

    An RDB study (PostgreSQL in the server shape) can be shared by workers on several machines,
    so it gets heartbeats: a trial whose process died stops beating, and after `grace_seconds` the
    next worker to ask fails it and queues it again (at most TRIAL_RETRIES times): a killed worker
    costs no budget.
    """
    if uri.startswith("journal:"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        return JournalStorage(JournalFileBackend(uri.removeprefix("journal:")))
    from optuna.storages import RDBStorage

    with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.9, and said so every time
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RDBStorage(
            uri,
            engine_kwargs={"pool_pre_ping": True},  # a database restart drops pooled connections: test before use
            heartbeat_interval=heartbeat_seconds,
            grace_period=grace_seconds,
            heartbeat_stale_trial_callback=retry_callback(),
        )


def suggest(trial: optuna.Trial, space: dict[str, ParamRange]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, dim in space.items():
        if dim.type == "categorical":
            params[name] = trial.suggest_categorical(name, dim.choices or [])
        elif dim.type == "int":
            params[name] = trial.suggest_int(name, int(dim.low or 0), int(dim.high or 0), log=dim.log)
        else:
            params[name] = trial.suggest_float(name, float(dim.low or 0), float(dim.high or 0), log=dim.log)
    return params


def warm_start_params(space: dict[str, ParamRange], champion_params: dict[str, Any] | None) -> dict[str, Any]:
    """The champion's values for the dimensions they still fit; dimensions outside the space drop."""
    if not champion_params:
        return {}
    return {name: champion_params[name] for name, dim in space.items() if dim.contains(champion_params.get(name))}


def make_objective(config: TrainingConfig, train: pd.DataFrame, validation: pd.DataFrame) -> Objective:
    """Fit the preprocessing once; each trial grows its trees stage by stage and may be pruned."""
    x_train, y_train = features_and_target(config, train)
    x_valid, y_valid = features_and_target(config, validation)
    prepare = preprocessor(config).fit(x_train)
    train_matrix, valid_matrix = prepare.transform(x_train), prepare.transform(x_valid)
    metric, step = config.gate.metric, config.tuning.iterations_per_step

    def objective(trial: optuna.Trial) -> float:
        with model_threads(len(x_train), config.model.threads):
            return grow(trial)

    def grow(trial: optuna.Trial) -> float:
        params = suggest(trial, config.tuning.search_space)
        total = int(params.get("max_iter", config.model.params.get("max_iter", DEFAULT_MAX_ITER)))
        model = estimator(config, {**params, "max_iter": min(step, total), "warm_start": True})
        grown, stage, score = 0, 0, math.nan
        while grown < total:
            grown = min(grown + step, total)
            model.set_params(max_iter=grown)
            model.fit(train_matrix, y_train)
            scores = predict_scores(model, valid_matrix, config.task)
            score = metric_value(config.task, metric, np.asarray(y_valid), scores, model_classes(model))
            trial.report(score, stage)
            failpoint(DURING_TUNING)  # a trial is RUNNING in the study, its first stage reported
            if trial.should_prune():
                raise optuna.TrialPruned(f"stage {stage}: {metric}={score:.4f}")
            stage += 1
        return score

    return objective


def open_study(config: TrainingConfig, storage_uri: str, study_name: str, worker: int = 0) -> optuna.Study:
    """Create the study or join it; worker `n` samples with seed + n, or every worker would propose alike."""
    tuning = config.tuning
    optuna.logging.set_verbosity(logging.WARNING)
    with warnings.catch_warnings():  # constant_liar is "experimental" since Optuna 2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # shared, the sampler counts the trials running elsewhere as bad: workers spread out instead of
        # proposing alike (Optuna's advice for distributed TPE)
        sampler = optuna.samplers.TPESampler(seed=tuning.seed + worker, constant_liar=tuning.workers > 1)
    return optuna.create_study(
        study_name=study_name,
        storage=make_storage(storage_uri, tuning.heartbeat_seconds, tuning.grace_seconds),
        sampler=sampler,
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=tuning.pruner.n_startup_trials, n_warmup_steps=tuning.pruner.n_warmup_steps
        ),
        direction="maximize" if config.higher_is_better else "minimize",
        load_if_exists=True,
    )


def prepare_study(
    config: TrainingConfig, storage_uri: str, study_name: str, champion_params: dict[str, Any] | None
) -> tuple[optuna.Study, bool]:
    """The study, labelled, with the champion's parameters queued first; whether they were."""
    study = open_study(config, storage_uri, study_name)
    study.set_user_attr("model_name", config.model_name)
    study.set_user_attr("metric", config.gate.metric)
    tuning = config.tuning
    warm = warm_start_params(tuning.search_space, champion_params) if tuning.warm_start_from_champion else {}
    if warm:
        study.enqueue_trial(warm, user_attrs={"source": "champion"}, skip_if_exists=True)
    return study, bool(warm)


def run_study(
    config: TrainingConfig,
    splits: Splits,
    storage_uri: str,
    study_name: str,
    champion_params: dict[str, Any] | None,
    on_trial: TrialCallback | None = None,
) -> TuningResult:
    """The search in this process alone: seeded, so a trial budget that is reached repeats."""
    tuning = config.tuning
    study, warm = prepare_study(config, storage_uri, study_name, champion_params)
    started, cpu_started = time.monotonic(), time.process_time()
    ran = optimize(study, make_objective(config, splits.train, splits.validation), tuning.n_trials,
                   tuning.timeout_seconds, on_trial)  # fmt: skip
    stopped_by = "trials" if ran >= tuning.n_trials else "timeout"
    if stopped_by == "timeout":
        logging.getLogger(__name__).warning(
            "study %s: the %d s cap stopped it after %d of %d trials; the search is not repeatable on this machine",
            study_name, tuning.timeout_seconds, ran, tuning.n_trials,
        )  # fmt: skip
    return study_result(study, warm, time.monotonic() - started, time.process_time() - cpu_started, stopped_by)


def optimize(
    study: optuna.Study, objective: Objective, n_trials: int, timeout: float, on_trial: TrialCallback | None
) -> int:
    """`study.optimize` until `n_trials` used the budget or `timeout` passed, riding out database outages.

    How many trials used the budget (a trial lost to an outage runs again and counts once).
    """
    guard = OutageGuard(study, objective)
    began = time.monotonic()
    spent_before: int | None = None
    while True:
        try:
            guard.recover()
            done = spent(study.get_trials(deepcopy=False))
            spent_before = done if spent_before is None else spent_before
            left = timeout - (time.monotonic() - began)
            if done - spent_before >= n_trials or left <= 0:
                return done - spent_before
            study.optimize(
                guard.objective,
                n_trials=n_trials - (done - spent_before),
                timeout=left,
                callbacks=[on_trial] if on_trial else None,
                catch=(ValueError,),  # one bad corner of the space fails its trial, not the search
            )
            return spent(study.get_trials(deepcopy=False)) - spent_before
        except Exception as error:
            guard.weather(error)


def study_result(study: optuna.Study, warm: bool, seconds: float, cpu_seconds: float, stopped_by: str) -> TuningResult:
    """What a finished study found, however many processes ran it."""
    study_name = study.study_name
    states = [t.state for t in study.trials]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise RuntimeError(f"study {study_name}: no trial completed ({len(states)} tried); see the trial log")
    return TuningResult(
        study_name=study_name,
        best_params=dict(study.best_params),
        best_value=float(study.best_value),
        n_trials=len(states),
        n_complete=len(complete),
        n_pruned=states.count(optuna.trial.TrialState.PRUNED),
        n_failed=states.count(optuna.trial.TrialState.FAIL),
        warm_started=warm,
        seconds=round(seconds, 2),
        cpu_seconds=round(cpu_seconds, 2),
        stopped_by=stopped_by,
        by_worker=dict(Counter(str(t.user_attrs["worker"]) for t in study.trials if "worker" in t.user_attrs)),
        trials=[
            {"number": t.number, "state": t.state.name, "value": t.value, **t.params, **t.user_attrs}
            for t in study.trials
        ],
    )
