"""The tuning stage of the training flow: Optuna's search, in this process or shared by several."""

from __future__ import annotations

import math
from typing import Any, cast
from uuid import UUID

import optuna
from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE

from tasks.settings import TrainingConfig
from tasks.split import Splits
from tasks.stores import Stores
from tasks.tune import TuningResult, run_study
from tasks.tune_share import tune_shared


@task(cache_policy=NO_CACHE)
def tune(
    config: TrainingConfig,
    splits: Splits,
    stores: Stores,
    study_name: str,
    champion_params: dict[str, Any] | None,
) -> TuningResult:
    """Run the search with a progress bar in the Prefect UI and one log line per trial.

    In this process alone (tuning.workers: 1), or shared with runs of the tuning-worker deployment.
    """
    logger = get_run_logger()
    budget = config.tuning.n_trials
    progress = cast(UUID, create_progress_artifact(0.0, description=f"Optuna study {study_name}"))  # sync call

    def report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        done = len(study.trials)
        try:
            update_progress_artifact(progress, min(100.0, 100.0 * done / budget))
        except Exception as error:  # a progress bar is not worth a run: the Prefect API may be restarting
            logger.warning("progress of study %s not shown: %s", study_name, error)
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

    if config.tuning.workers > 1:
        result, workers = tune_shared(
            config, stores, splits.train, splits.validation, study_name, champion_params, report
        )
        logger.info("shared study %s: trials by worker %s; worker runs %s", study_name, result.by_worker, workers)
    else:
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
