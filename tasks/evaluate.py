"""Evaluate: challenger and champion scored on the same holdout, overall and per slice.

Both models are loaded back from the registry, so what is judged is exactly what would serve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import mlflow
import mlflow.sklearn
import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.gate import MetricReport, SliceMetrics
from tasks.model import compute_metrics, features_and_target, model_classes, predict_scores
from tasks.registry import VersionRef
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


@task(cache_policy=NO_CACHE)
def evaluate(
    config: TrainingConfig, holdout: pd.DataFrame, candidate: Candidate, champion: VersionRef | None
) -> Evaluation:
    logger = get_run_logger()
    challenger = score_report(config, mlflow.sklearn.load_model(candidate.uri), holdout)
    champion_report, champion_error = None, None
    if champion is not None:
        try:
            champion_report = score_report(config, mlflow.sklearn.load_model(champion.uri), holdout)
        except (KeyError, ValueError, TypeError) as error:  # e.g. the feature set changed since
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
