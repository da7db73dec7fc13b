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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast
from uuid import UUID

import numpy as np
import optuna
from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE

from tasks.faults import DURING_TUNING, failpoint
from tasks.model import estimator, features_and_target, metric_value, model_classes, predict_scores, preprocessor
from tasks.settings import ParamRange, TrainingConfig
from tasks.split import Splits
from tasks.stores import Stores
from tasks.threads import model_threads

DEFAULT_MAX_ITER = 100


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

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "trials"}


# A trial whose process died stops beating; after the grace period the next worker to ask marks it
# failed and queues it again (at most TRIAL_RETRIES times), so a killed worker costs no budget.
HEARTBEAT_SECONDS = 30
HEARTBEAT_GRACE_SECONDS = 90
TRIAL_RETRIES = 2


def make_storage(uri: str) -> optuna.storages.BaseStorage:
    """`journal:<path>` is a journal file (fast, no server); anything else is an RDB URL (SQLAlchemy's).

    An RDB study (PostgreSQL in the server shape) can be shared by workers on several machines,
    so it gets heartbeats and the retry of trials whose worker died; a journal file is one machine's.
    """
    if uri.startswith("journal:"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        return JournalStorage(JournalFileBackend(uri.removeprefix("journal:")))
    from optuna.storages import RDBStorage, RetryFailedTrialCallback

    return RDBStorage(
        uri,
        engine_kwargs={"pool_pre_ping": True},  # a database restart drops pooled connections: test before use
        heartbeat_interval=HEARTBEAT_SECONDS,
        grace_period=HEARTBEAT_GRACE_SECONDS,
        failed_trial_callback=RetryFailedTrialCallback(max_retry=TRIAL_RETRIES),
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


def make_objective(config: TrainingConfig, splits: Splits) -> Callable[[optuna.Trial], float]:
    """Fit the preprocessing once; each trial grows its trees stage by stage and may be pruned."""
    x_train, y_train = features_and_target(config, splits.train)
    x_valid, y_valid = features_and_target(config, splits.validation)
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


def run_study(
    config: TrainingConfig,
    splits: Splits,
    storage_uri: str,
    study_name: str,
    champion_params: dict[str, Any] | None,
    on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
) -> TuningResult:
    tuning = config.tuning
    optuna.logging.set_verbosity(logging.WARNING)
    study = optuna.create_study(
        study_name=study_name,
        storage=make_storage(storage_uri),
        sampler=optuna.samplers.TPESampler(seed=tuning.seed),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=tuning.pruner.n_startup_trials, n_warmup_steps=tuning.pruner.n_warmup_steps
        ),
        direction="maximize" if config.higher_is_better else "minimize",
        load_if_exists=True,
    )
    study.set_user_attr("model_name", config.model_name)
    study.set_user_attr("metric", config.gate.metric)
    warm = warm_start_params(tuning.search_space, champion_params) if tuning.warm_start_from_champion else {}
    if warm:
        study.enqueue_trial(warm, user_attrs={"source": "champion"}, skip_if_exists=True)
    started, cpu_started, finished_before = time.monotonic(), time.process_time(), len(study.trials)
    study.optimize(
        make_objective(config, splits),
        n_trials=tuning.n_trials,
        timeout=tuning.timeout_seconds,
        callbacks=[on_trial] if on_trial else None,
        catch=(ValueError,),  # one bad corner of the space fails its trial, not the search
    )
    states = [t.state for t in study.trials]
    ran = len(study.trials) - finished_before
    stopped_by = "trials" if ran >= tuning.n_trials else "timeout"
    if stopped_by == "timeout":
        logging.getLogger(__name__).warning(
            "study %s: the %d s cap stopped it after %d of %d trials; the search is not repeatable on this machine",
            study_name, tuning.timeout_seconds, ran, tuning.n_trials,
        )  # fmt: skip
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
        warm_started=bool(warm),
        seconds=round(time.monotonic() - started, 2),
        cpu_seconds=round(time.process_time() - cpu_started, 2),
        stopped_by=stopped_by,
        trials=[
            {"number": t.number, "state": t.state.name, "value": t.value, **t.params, **t.user_attrs}
            for t in study.trials
        ],
    )


@task(cache_policy=NO_CACHE)
def tune(
    config: TrainingConfig,
    splits: Splits,
    stores: Stores,
    study_name: str,
    champion_params: dict[str, Any] | None,
) -> TuningResult:
    """Run the search with a progress bar in the Prefect UI and one log line per trial."""
    logger = get_run_logger()
    budget = config.tuning.n_trials
    progress = cast(UUID, create_progress_artifact(0.0, description=f"Optuna study {study_name}"))  # sync call

    def report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        done = len(study.trials)
        update_progress_artifact(progress, min(100.0, 100.0 * done / budget))
        best = study.best_value if any(t.state.name == "COMPLETE" for t in study.trials) else math.nan
        logger.info(
            "trial %d/%d %s %s=%s best=%.4f",
            done,
            budget,
            trial.state.name,
            config.gate.metric,
            "-" if trial.value is None else f"{trial.value:.4f}",
            best,
        )

    result = run_study(config, splits, stores.optuna_storage, study_name, champion_params, report)
    update_progress_artifact(progress, 100.0)
    logger.info(
        "study %s: %d trials (%d complete, %d pruned) in %.1fs, best %s=%.4f",
        study_name,
        result.n_trials,
        result.n_complete,
        result.n_pruned,
        result.seconds,
        config.gate.metric,
        result.best_value,
    )
    return result
