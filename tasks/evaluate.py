"""Evaluate: challenger and champion scored on the same holdout, overall and per slice.

Both models are loaded back from the stores after their files are checked against the hashes
recorded at training, so what is judged is exactly what would serve.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.artifacts import UntrustedModelError, load_logged, load_version
from tasks.fairness import fairness_report
from tasks.gate import GateReport, MetricReport, SliceMetrics, decide
from tasks.ingest import parse_batch
from tasks.model import compute_metrics, features_and_target, model_classes, predict_scores
from tasks.registry import VersionRef, get_version
from tasks.settings import TimeWindow, TrainingConfig
from tasks.split import time_split
from tasks.stores import DataStore, sha256_bytes
from tasks.train import Candidate
from tasks.validate import check_frame, select_window


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
    fairness = None
    if (sensitive := config.fairness.sensitive) is not None:
        fairness = fairness_report(config.task, config.fairness, holdout[sensitive], target, scores, classes)
    return MetricReport(
        overall=compute_metrics(config.task, target, scores, classes),
        slices=slice_metrics(config, holdout, scores, classes),
        fairness=fairness,
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
        if challenger.fairness is not None:
            mlflow.log_dict(challenger.fairness.to_dict(), "evaluation/challenger_fairness.json")
            mlflow.log_metrics({f"fairness_{k}": v for k, v in challenger.fairness.metrics.items() if math.isfinite(v)})
        if champion_report is not None:
            mlflow.log_metrics(
                {f"champion_holdout_{k}": v for k, v in champion_report.overall.items() if math.isfinite(v)}
            )
            mlflow.log_dict(champion_report.slices, "evaluation/champion_slices.json")
            if champion_report.fairness is not None:
                mlflow.log_dict(champion_report.fairness.to_dict(), "evaluation/champion_fairness.json")
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
            fairness_bounds=config.fairness.bounds,
        )

    return rejudge


# --- judging a registered version by hand (`driftloop promote --version N`) ----------------------


class HoldoutUnavailable(RuntimeError):
    """The batches a version was trained on are no longer in the data store."""


def rebuild_holdout(config: TrainingConfig, store: DataStore, version: VersionRef) -> pd.DataFrame:
    """The holdout of a version's training window, from the very batches it was trained on.

    The batches are found in processed/ by the digests recorded on the version and checked
    against them, then validated and split exactly as training did.
    """
    window = version.tags.get("driftloop.window", "")
    digests = [d for d in version.tags.get("driftloop.batch_sha256", "").split(",") if d]
    if ".." not in window or not digests:
        raise HoldoutUnavailable(f"version {version.version} records no training window or batches")
    files = {path.rsplit("/", 1)[-1][:16]: path for path in store.find("processed", config.name)}
    frames = []
    for digest in digests:
        path = files.get(digest[:16])
        if path is None:
            raise HoldoutUnavailable(f"batch {digest[:16]} of version {version.version} is not in processed/")
        data = store.read_bytes(path)
        if sha256_bytes(data) != digest:
            raise HoldoutUnavailable(f"{path} does not match the digest recorded on version {version.version}")
        frame, failures = check_frame(config, parse_batch(path.rsplit("/", 1)[-1], data), path)
        if failures:
            raise HoldoutUnavailable(f"{path} no longer passes validation: {failures[0].describe()}")
        frames.append(frame)
    start, end = window.split("..")
    bounds = TimeWindow(start=date.fromisoformat(start), end=date.fromisoformat(end))
    return time_split(
        select_window(config, pd.concat(frames, ignore_index=True), bounds), config.timestamp, config.split
    ).holdout


def judge_version(
    config: TrainingConfig, store: DataStore, version: VersionRef, champion: VersionRef | None
) -> tuple[GateReport, int]:
    """The gate for `version` against `champion`, on a holdout neither was fitted on.

    That is the holdout of whichever of the two was trained on the later window: the other was
    trained on earlier data, and neither model is ever fitted on its own holdout.
    """
    judged_on = version
    if champion is not None and _window_end(champion) > _window_end(version):
        judged_on = champion
    holdout = rebuild_holdout(config, store, judged_on)
    report = decide(
        metric=config.gate.metric,
        higher_is_better=config.higher_is_better,
        rules=config.gate,
        challenger=score_report(config, load_version(version.name, version.version), holdout),
        champion=None if champion is None else score_champion(config, champion, holdout),
        champion_version=None if champion is None else champion.version,
        fairness_bounds=config.fairness.bounds,
    )
    return report, len(holdout)


def _window_end(version: VersionRef) -> str:
    return version.tags.get("driftloop.window", "..").split("..")[-1]
