"""Score: the champion predicts a validated batch, and every prediction goes to the inference log.

The model comes only from the registry (`models:/<name>/<version>`), never from a local file, so
what was scored is always traceable to a registered version. Labels arrive later and are
recorded by `record_labels`; the inference log joins them on the row key when it is read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.artifacts import load_version
from tasks.inference_log import CONFIDENCE, PREDICTION, PROBABILITIES, InferenceLog
from tasks.model import model_classes, predict_scores
from tasks.registry import VersionRef
from tasks.settings import TimeWindow, TrainingConfig
from tasks.stores import DataStore, Stores


@dataclass(frozen=True)
class ScoringResult:
    batch_id: str
    rows: int
    model_name: str
    model_version: str
    log_path: str
    scored_at: datetime


def scoring_batch_id(digest: str, window: TimeWindow | None) -> str:
    """The inference-log id of a scored batch: its content, and the window scored when one was.

    A file holding many periods is scored one window at a time; each window is a batch of its own,
    so scoring the next one does not replace the last one's rows (re-scoring the same one does).
    """
    return digest[:16] if window is None else f"{digest[:16]}_{window.start:%Y%m%d}-{window.end:%Y%m%d}"


def score_frame(model: Any, features: pd.DataFrame, config: TrainingConfig) -> tuple[pd.Series, pd.Series | None]:
    """Predictions for every row of `features`, indexed like it; confidence only for multiclass.

    Binary: P(positive) as float. Regression: the predicted value. Multiclass: the predicted
    class (str) and its probability, the largest class probability. Columns other than the
    config's features are ignored. Pure: the model is only asked to predict.
    """
    prediction, confidence, _ = scored_frame(model, features, config)
    return prediction, confidence


def scored_frame(
    model: Any, features: pd.DataFrame, config: TrainingConfig
) -> tuple[pd.Series, pd.Series | None, pd.Series | None]:
    """`score_frame` and, for multiclass, every class's probability as one JSON object per row.

    The inference log keeps them so that log loss can be measured once labels arrive; one JSON
    column (not a column per class) keeps the log's schema the same whichever classes a version knows.
    """
    missing = [c for c in config.features.all if c not in features.columns]
    if missing:
        raise ValueError(f"{config.name}: cannot score, features missing: {missing}")
    x = features[config.features.all]
    if config.task != "multiclass":
        values = predict_scores(model, x, config.task) if len(x) else np.empty(0)
        return pd.Series(values, index=features.index, name=PREDICTION, dtype="float64"), None, None
    classes = model_classes(model)
    if classes is None:
        raise ValueError("a multiclass model must expose classes_")
    if not len(x):
        return (
            pd.Series([], index=features.index, name=PREDICTION, dtype="object"),
            pd.Series([], index=features.index, name=CONFIDENCE, dtype="float64"),
            pd.Series([], index=features.index, name=PROBABILITIES, dtype="object"),
        )
    proba = predict_scores(model, x, "multiclass")
    names = [str(c) for c in np.asarray(classes, dtype=object)]
    best = np.argmax(proba, axis=1)
    labels = pd.Series(np.asarray(names, dtype=object)[best], index=features.index, name=PREDICTION)
    confidence = pd.Series(proba.max(axis=1), index=features.index, name=CONFIDENCE, dtype="float64")
    probabilities = pd.Series(
        [json.dumps(dict(zip(names, map(float, row), strict=True))) for row in proba],
        index=features.index,
        name=PROBABILITIES,
        dtype="object",
    )
    return labels, confidence, probabilities


@task(cache_policy=NO_CACHE)
def score(
    config: TrainingConfig, frame: pd.DataFrame, batch_id: str, champion: VersionRef | None, stores: Stores
) -> ScoringResult:
    """Score a validated batch with the registered champion and append it to the inference log.

    The caller configures MLflow (tracking and registry URIs) and decides what to do when there
    is no champion; this task refuses `champion=None`. Re-scoring a batch id replaces its rows.
    """
    if champion is None:
        raise ValueError(
            f"{config.name}: no champion to score batch {batch_id!r} with; "
            f"train and promote a version of {config.model_name!r} first"
        )
    if champion.name != config.model_name:
        raise ValueError(f"champion {champion.uri} is not a version of this config's model {config.model_name!r}")
    logger = get_run_logger()
    model = load_version(champion.name, champion.version)
    predictions, confidence, probabilities = scored_frame(model, frame, config)
    scored_at = datetime.now(UTC)
    path = InferenceLog(DataStore(stores.data_uri), config).append(
        frame,
        predictions,
        batch_id=batch_id,
        model_name=champion.name,
        model_version=champion.version,
        scored_at=scored_at,
        confidence=confidence,
        probabilities=probabilities,
    )
    logger.info("scored %d rows of batch %s with %s; logged to %s", len(frame), batch_id, champion.uri, path)
    return ScoringResult(
        batch_id=batch_id,
        rows=len(frame),
        model_name=champion.name,
        model_version=champion.version,
        log_path=path,
        scored_at=scored_at,
    )


@task(cache_policy=NO_CACHE)
def record_labels(config: TrainingConfig, labels: pd.DataFrame, batch_id: str, stores: Stores) -> str:
    """Record delayed labels (row key + target) for a batch; returns the path written."""
    path = InferenceLog(DataStore(stores.data_uri), config).record_labels(labels, batch_id)
    get_run_logger().info("recorded %d label(s) for batch %s at %s", len(labels), batch_id, path)
    return path
