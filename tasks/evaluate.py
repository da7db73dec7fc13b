"""Evaluate: challenger and champion scored on the same holdout, overall and per slice.

Both models are loaded back from the stores after their files are checked against the hashes
recorded at training, so what is judged is exactly what would serve.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.artifacts import UntrustedModelError, load_logged, load_version
from tasks.gate import GateReport, MetricReport, SliceMetrics, decide
from tasks.model import compute_metrics, features_and_target, model_classes, predict_scores
from tasks.registry import VersionRef, get_version
from tasks.settings import TrainingConfig
from tasks.train import Candidate


@dataclass(frozen=True)
class Evaluation:
    holdout_rows: int
    challenger: MetricReport
    champion: MetricReport | None
    champion_version: str | None
    champion_error: str | None


def slice_metrics(config: TrainingConfig, frame: pd.DataFrame, scores: Any, classes: list[Any] | None) -> SliceMetrics:
    """Metrics per value of each slice column (rows recorded, so the gate can skip tiny slices)."""
    _, target = features_and_target(config, frame)
    result: SliceMetrics = {}
    for column in config.slices:
        for value, index in frame.groupby(column, dropna=False, observed=True).indices.items():
            metrics = compute_metrics(config.task, target.iloc[index], scores[index], classes)
            result[f"{column}={'<missing>' if pd.isna(value) else value}"] = {"rows": float(len(index)), **metrics}
    return result


def score_report(config: TrainingConfig, model: Any, holdout: pd.DataFrame) -> MetricReport:
    features, target = features_and_target(config, holdout)
    scores = predict_scores(model, features, config.task)
    classes = model_classes(model)
    return MetricReport(
        overall=compute_metrics(config.task, target, scores, classes),
        slices=slice_metrics(config, holdout, scores, classes),
    )


def score_champion(config: TrainingConfig, champion: VersionRef, holdout: pd.DataFrame) -> MetricReport:
    """The champion's metrics on a holdout, loaded from the registry after its hashes are checked."""
    return score_report(config, load_version(champion.name, champion.version), holdout)


@task(cache_policy=NO_CACHE)
def evaluate(
    config: TrainingConfig, holdout: pd.DataFrame, candidate: Candidate, champion: VersionRef | None
) -> Evaluation:
    logger = get_run_logger()
    run_tags = MlflowClient().get_run(candidate.run_id).data.tags
    challenger = score_report(config, load_logged(candidate.model_uri, run_tags, candidate.label), holdout)
    champion_report, champion_error = None, None
    if champion is not None:
        try:
            champion_report = score_champion(config, champion, holdout)
        except (KeyError, ValueError, TypeError, UntrustedModelError) as error:  # e.g. the feature set changed
            champion_error = f"{type(error).__name__}: {error}"
            logger.warning("champion version %s could not be scored: %s", champion.version, champion_error)
    metric = config.gate.metric
    with mlflow.start_run(run_id=candidate.run_id):
        mlflow.log_metrics({f"holdout_{k}": v for k, v in challenger.overall.items() if math.isfinite(v)})
        mlflow.log_dict(challenger.slices, "evaluation/challenger_slices.json")
        if champion_report is not None:
            mlflow.log_metrics(
                {f"champion_holdout_{k}": v for k, v in champion_report.overall.items() if math.isfinite(v)}
            )
            mlflow.log_dict(champion_report.slices, "evaluation/champion_slices.json")
    logger.info(
        "holdout (%d rows) %s: challenger %.4f, champion %s",
        len(holdout),
        metric,
        challenger.overall[metric],
        "none" if champion_report is None else f"{champion_report.overall[metric]:.4f} (v{champion.version})",  # type: ignore[union-attr]
    )
    return Evaluation(
        holdout_rows=len(holdout),
        challenger=challenger,
        champion=champion_report,
        champion_version=None if champion is None else champion.version,
        champion_error=champion_error,
    )


def rejudge_against(
    config: TrainingConfig, holdout: pd.DataFrame, evaluation: Evaluation
) -> Callable[[str], GateReport]:
    """The gate again, for the same challenger and holdout, against another champion version.

    Promotion calls it when the champion changed while this candidate was evaluated (a
    concurrent run promoted): the better of the two on this holdout wins.
    """

    def rejudge(version: str) -> GateReport:
        champion = get_version(config.model_name, version)
        return decide(
            metric=config.gate.metric,
            higher_is_better=config.higher_is_better,
            rules=config.gate,
            challenger=evaluation.challenger,
            champion=score_champion(config, champion, holdout),
            champion_version=version,
        )

    return rejudge
