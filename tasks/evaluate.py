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
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.artifacts import UntrustedModelError, load_logged, load_version
from tasks.fairness import fairness_report
from tasks.gate import Evaluation, GateReport, MetricReport, SliceMetrics, decide_evaluation
from tasks.ingest import parse_batch
from tasks.model import compute_metrics, features_and_target, metric_value, model_classes, predict_scores
from tasks.registry import TAG_FITTED_UNTIL, VersionRef, get_version
from tasks.settings import TimeWindow, TrainingConfig
from tasks.split import Splits, time_split
from tasks.stores import DataStore, Stores, sha256_bytes
from tasks.train import Candidate
from tasks.uncertainty import GainInterval, paired_gain_interval
from tasks.validate import check_frame, select_window


@dataclass(frozen=True)
class Fitted:
    """What a model was fitted on: rows of [start, end) on the timestamp (end: its holdout's start)."""

    start: pd.Timestamp
    end: pd.Timestamp
    window_end: date

    @classmethod
    def of_splits(cls, window: TimeWindow, holdout_start: pd.Timestamp) -> Fitted:
        return cls(pd.Timestamp(window.start, tz="UTC"), holdout_start, window.end)

    @classmethod
    def of_version(cls, version: VersionRef) -> Fitted:
        """From the window and split recorded on the version's run; the whole window when the split is not."""
        params = MlflowClient().get_run(version.run_id).data.params if version.run_id else {}
        label = params.get("window") or version.tags.get("driftloop.window", "")
        if ".." not in label:
            raise HoldoutUnavailable(f"version {version.version} records no training window")
        start, end = (date.fromisoformat(part) for part in label.split(".."))
        holdout_start = params.get("holdout_start")
        fitted_end = pd.Timestamp(holdout_start) if holdout_start else pd.Timestamp(end, tz="UTC")
        if until := version.tags.get(TAG_FITTED_UNTIL):  # refitted on its holdout after the gate
            fitted_end = pd.Timestamp(until)
        return cls(pd.Timestamp(start, tz="UTC"), fitted_end, end)


def neither_fitted(frame: pd.DataFrame, timestamp: str, *spans: Fitted) -> pd.DataFrame:
    """The rows of `frame` that no model of `spans` was fitted on (pure)."""
    stamp = frame[timestamp]
    outside = pd.Series(True, index=frame.index)
    for span in spans:
        outside &= (stamp < span.start) | (stamp >= span.end)
    return frame[outside].reset_index(drop=True)


def comparison_rows(
    config: TrainingConfig,
    challenger_fitted: Fitted,
    challenger_holdout: Callable[[], pd.DataFrame],
    champion_fitted: Fitted,
    champion_holdout: Callable[[], pd.DataFrame],
    champion_version: str,
) -> tuple[str, pd.DataFrame, str | None]:
    """(which holdout, its rows neither model was fitted on, why not comparable or None).

    The holdout is that of whichever window ends later: the other model was fitted on earlier data,
    so only that one can hold rows new to both. Too few of them is not comparable: fewer than
    `comparison_rows_needed`. Only the chosen holdout is built.
    """
    if champion_fitted.window_end > challenger_fitted.window_end:
        compared_on, holdout = f"version {champion_version}'s holdout", champion_holdout()
    else:
        compared_on, holdout = "the challenger's holdout", challenger_holdout()
    rows = neither_fitted(holdout, config.timestamp, challenger_fitted, champion_fitted)
    needed = comparison_rows_needed(config.gate.min_comparison_rows, len(holdout))
    if len(rows) >= needed:
        return compared_on, rows, None
    return (
        compared_on,
        rows,
        f"not comparable: {len(rows)} of the {len(holdout)} rows of {compared_on} were fitted by neither "
        f"model (at least {needed} needed)",
    )


def comparison_rows_needed(min_comparison_rows: int, holdout_rows: int) -> int:
    """`gate.min_comparison_rows`, or half the holdout when that is smaller (at least one row).

    A holdout of 61 daily rows is a whole comparison, not a handful: what makes a comparison
    unusable is that most of its rows were seen by one of the models, and the bootstrap interval
    already says how little a small comparison proves.
    """
    return max(1, min(min_comparison_rows, math.ceil(holdout_rows / 2)))


def slice_metrics(config: TrainingConfig, frame: pd.DataFrame, scores: Any, classes: list[Any] | None) -> SliceMetrics:
    """Metrics per value of each slice column (rows recorded, so the gate can skip tiny slices)."""
    _, target = features_and_target(config, frame)
    result: SliceMetrics = {}
    for column in config.slices:
        for value, index in frame.groupby(column, dropna=False, observed=True).indices.items():
            metrics = compute_metrics(config.task, target.iloc[index], scores[index], classes)
            result[f"{column}={'<missing>' if pd.isna(value) else value}"] = {"rows": float(len(index)), **metrics}
    return result


def score_report(
    config: TrainingConfig, model: Any, holdout: pd.DataFrame, scores: np.ndarray | None = None
) -> MetricReport:
    """A model's metrics on `holdout`, overall, per slice and for fairness (`scores`: already predicted)."""
    features, target = features_and_target(config, holdout)
    scores = predict_scores(model, features, config.task) if scores is None else scores
    classes = model_classes(model)
    fairness = None
    if (sensitive := config.fairness.sensitive) is not None:
        fairness = fairness_report(config.task, config.fairness, holdout[sensitive], target, scores, classes)
    return MetricReport(
        overall=compute_metrics(config.task, target, scores, classes),
        slices=slice_metrics(config, holdout, scores, classes),
        fairness=fairness,
    )


def gain_intervals(
    config: TrainingConfig, rows: pd.DataFrame, challenger: Any, champion: Any
) -> dict[str, GainInterval]:
    """The paired bootstrap interval of the gain on `rows`: overall, and per slice the gate judges.

    Overall at `gate.confidence`. The slices are many tests of one question ("did any slice
    regress?"), so each is at the Bonferroni level 1 - (1 - confidence) / slices: with a dozen
    carriers at 95% each, some carrier would block a sound challenger by chance alone in about
    one comparison of three. Seeded by the tuning seed, so the same comparison gives the same
    interval. Empty when the config asks for no draws.
    """
    draws = config.gate.bootstrap_draws
    if draws == 0 or rows.empty:
        return {}
    features, target = features_and_target(config, rows)
    y = target.to_numpy()
    ours, theirs = predict_scores(challenger, features, config.task), predict_scores(champion, features, config.task)
    classes = (model_classes(challenger), model_classes(champion))
    metric = config.gate.metric

    def on(scores: np.ndarray, model_classes_: list[Any] | None) -> Callable[[np.ndarray], float]:
        return lambda index: metric_value(config.task, metric, y[index], scores[index], model_classes_)

    groups: dict[str, np.ndarray] = {"overall": np.arange(len(rows))}
    for column in config.slices:
        for value, index in rows.groupby(column, dropna=False, observed=True).indices.items():
            if len(index) >= config.gate.min_slice_rows:
                groups[f"{column}={'<missing>' if pd.isna(value) else value}"] = np.asarray(index)
    rng = np.random.default_rng(config.tuning.seed)
    slices = len(groups) - 1
    slice_confidence = 1.0 - (1.0 - config.gate.confidence) / max(1, slices)
    return {
        name: paired_gain_interval(
            on(ours, classes[0]),
            on(theirs, classes[1]),
            index,
            config.higher_is_better,
            draws,
            config.gate.confidence if name == "overall" else slice_confidence,
            rng,
        )
        for name, index in groups.items()
    }


# A champion that cannot be loaded or scored (a changed feature set, a tampered file, a store
# that lost it) is "not comparable": the gate rejects, so nothing is promoted on it.
SCORING_ERRORS = (KeyError, ValueError, TypeError, OSError, UntrustedModelError, MlflowException)


def judge(
    config: TrainingConfig,
    store: DataStore,
    challenger: Any,
    challenger_fitted: Fitted,
    challenger_holdout: Callable[[], pd.DataFrame],
    champion: VersionRef | None,
) -> Evaluation:
    """The one comparison every promotion path uses: both models on rows neither was fitted on.

    The rows are the holdout of whichever of the two windows ends later (the other model was
    fitted on earlier data), less any row either model was fitted on; fewer than
    `gate.min_comparison_rows` of them, or a champion that cannot be loaded or scored, is recorded
    as not comparable and never promotes.
    """
    if champion is None:
        holdout = challenger_holdout()
        return Evaluation(len(holdout), score_report(config, challenger, holdout), None, None, None)
    compared_on, holdout, error = "the challenger's holdout", None, None
    gains: dict[str, GainInterval] = {}
    try:
        champion_fitted = Fitted.of_version(champion)
        compared_on, rows, error = comparison_rows(
            config,
            challenger_fitted,
            challenger_holdout,
            champion_fitted,
            lambda: rebuild_holdout(config, store, champion),
            champion.version,
        )
        holdout = rows
        champion_model = None if error else load_version(champion.name, champion.version)
        champion_report = None if champion_model is None else score_report(config, champion_model, rows)
        gains = {} if champion_model is None else gain_intervals(config, rows, challenger, champion_model)
    except (HoldoutUnavailable, *SCORING_ERRORS) as exc:
        error, champion_report = f"{type(exc).__name__}: {exc}", None
        rows = holdout if holdout is not None else challenger_holdout()
    if error is not None and rows.empty:  # no row new to both (a champion refitted up to this window's end)
        rows = challenger_holdout()  # the challenger is still reported, on its own holdout; the gate rejects
    return Evaluation(
        holdout_rows=len(rows),
        challenger=score_report(config, challenger, rows),
        champion=champion_report,
        champion_version=champion.version,
        champion_error=error,
        compared_on=compared_on,
        gains=gains,
    )


@task(cache_policy=NO_CACHE)
def evaluate(
    config: TrainingConfig,
    splits: Splits,
    window: TimeWindow,
    candidate: Candidate,
    champion: VersionRef | None,
    stores: Stores,
) -> Evaluation:
    """The candidate against the champion (tasks.evaluate.judge); its own holdout metrics go to its run."""
    logger = get_run_logger()
    run_tags = MlflowClient().get_run(candidate.run_id).data.tags
    model = load_logged(candidate.model_uri, run_tags, candidate.label)
    fitted = Fitted.of_splits(window, splits.holdout_start)
    evaluation = judge(config, DataStore(stores.data_uri), model, fitted, lambda: splits.holdout, champion)
    if evaluation.champion_error:
        logger.warning("champion version %s: %s", evaluation.champion_version, evaluation.champion_error)
    own = evaluation.challenger if evaluation.holdout_rows == len(splits.holdout) else None
    own = own or score_report(config, model, splits.holdout)
    champion_report = evaluation.champion
    metric = config.gate.metric
    with mlflow.start_run(run_id=candidate.run_id):
        # its own holdout: the baseline monitoring measures production against
        mlflow.log_metrics({f"holdout_{k}": v for k, v in own.overall.items() if math.isfinite(v)})
        mlflow.log_dict(own.slices, "evaluation/challenger_slices.json")
        mlflow.log_param("compared_on", evaluation.compared_on)
        if own.fairness is not None:
            mlflow.log_dict(own.fairness.to_dict(), "evaluation/challenger_fairness.json")
            mlflow.log_metrics({f"fairness_{k}": v for k, v in own.fairness.metrics.items() if math.isfinite(v)})
        if champion_report is not None:
            mlflow.log_metrics(
                {f"champion_holdout_{k}": v for k, v in champion_report.overall.items() if math.isfinite(v)}
            )
            mlflow.log_dict(champion_report.slices, "evaluation/champion_slices.json")
            if champion_report.fairness is not None:
                mlflow.log_dict(champion_report.fairness.to_dict(), "evaluation/champion_fairness.json")
    logger.info(
        "%s (%d rows) %s: challenger %.4f, champion %s",
        evaluation.compared_on,
        evaluation.holdout_rows,
        metric,
        evaluation.challenger.overall[metric],
        "none" if champion_report is None else f"{champion_report.overall[metric]:.4f} (v{champion.version})",  # type: ignore[union-attr]
    )
    return evaluation


def rejudge_against(
    config: TrainingConfig, splits: Splits, window: TimeWindow, candidate: Candidate, stores: Stores
) -> Callable[[str], GateReport]:
    """The gate again, for the same challenger, against another champion version (tasks.evaluate.judge).

    Promotion calls it under its lock when the champion changed while this candidate was evaluated
    (a concurrent run promoted): the better of the two on rows neither was fitted on wins, and a
    champion that cannot be compared is never beaten by default.
    """

    def rejudge(version: str) -> GateReport:
        try:
            champion = get_version(config.model_name, version)
            run_tags = MlflowClient().get_run(candidate.run_id).data.tags
            model = load_logged(candidate.model_uri, run_tags, candidate.label)
        except SCORING_ERRORS as exc:
            return decide_evaluation(config, _unscored(version, f"{type(exc).__name__}: {exc}"))
        fitted = Fitted.of_splits(window, splits.holdout_start)
        return decide_evaluation(
            config, judge(config, DataStore(stores.data_uri), model, fitted, lambda: splits.holdout, champion)
        )

    return rejudge


def _unscored(version: str, error: str) -> Evaluation:
    nothing = MetricReport(overall={}, slices={}, fairness=None)
    return Evaluation(0, nothing, None, version, error)


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
    """The gate for a registered `version` against `champion` (tasks.evaluate.judge), as `driftloop promote` asks.

    Raises HoldoutUnavailable when the version's own holdout is needed and its batches are gone.
    """
    model = load_version(version.name, version.version)
    evaluation = judge(
        config, store, model, Fitted.of_version(version), lambda: rebuild_holdout(config, store, version), champion
    )
    return decide_evaluation(config, evaluation), evaluation.holdout_rows
