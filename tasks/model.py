"""The model: one sklearn Pipeline, preprocessing inside, so training and serving cannot skew.

Pure: builds estimators and computes metrics; knows nothing of MLflow, Prefect or files.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    f1_score,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
    roc_auc_score,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder

from tasks.settings import TaskType, TrainingConfig
from tasks.threads import model_threads


def preprocessor(config: TrainingConfig) -> ColumnTransformer:
    """Numbers pass through (the trees handle NaN); categories become codes, unknown ones NaN."""
    encoder = OrdinalEncoder(
        handle_unknown="use_encoded_value",
        unknown_value=np.nan,
        encoded_missing_value=np.nan,
        dtype=np.float64,
    )
    return ColumnTransformer(
        [
            ("numeric", "passthrough", config.features.numeric),
            ("categorical", encoder, config.features.categorical),
        ],
        remainder="drop",
        verbose_feature_names_out=False,
    )


def estimator(config: TrainingConfig, params: dict[str, Any]) -> Any:
    n_numeric = len(config.features.numeric)
    categorical = [False] * n_numeric + [True] * len(config.features.categorical)
    kwargs = {
        **config.model.params,
        **params,
        "categorical_features": categorical if any(categorical) else None,
        "random_state": config.tuning.seed,
        "early_stopping": False,  # the time split, not a random inner split, decides
    }
    if config.task == "regression":
        return HistGradientBoostingRegressor(**kwargs)
    return HistGradientBoostingClassifier(**kwargs)


def build_pipeline(config: TrainingConfig, params: dict[str, Any]) -> Pipeline:
    return Pipeline([("prepare", preprocessor(config)), ("model", estimator(config, params))])


def fit_pipeline(config: TrainingConfig, params: dict[str, Any], features: pd.DataFrame, target: pd.Series) -> Pipeline:
    """The pipeline with `params`, fitted on `features` on the OpenMP threads `model.threads` allows."""
    with model_threads(len(features), config.model.threads):
        return build_pipeline(config, params).fit(features, target)


def features_and_target(config: TrainingConfig, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    target = frame[config.target]
    if config.task == "binary":
        target = target.astype("int64")
    return frame[config.features.all], target


def predict_scores(model: Any, features: pd.DataFrame, task: TaskType) -> np.ndarray:
    """What the metrics need: P(positive) for binary, class probabilities, or predictions."""
    with model_threads(len(features)):
        if task == "binary":
            return np.asarray(model.predict_proba(features))[:, 1]
        if task == "multiclass":
            return np.asarray(model.predict_proba(features))
        return np.asarray(model.predict(features), dtype=float)


def compute_metrics(
    task: TaskType, y_true: pd.Series | np.ndarray, scores: np.ndarray, classes: list[Any] | None = None
) -> dict[str, float]:
    """Every metric of the task type; a metric that cannot be computed is NaN, never a guess."""
    y = np.asarray(y_true)
    if len(y) == 0:
        return dict.fromkeys(_names(task), math.nan)
    if task == "regression":
        return {
            "rmse": float(math.sqrt(mean_squared_error(y, scores))),
            "mae": float(mean_absolute_error(y, scores)),
            "r2": float(r2_score(y, scores)) if len(y) > 1 else math.nan,
        }
    if task == "binary":
        labels = (scores >= 0.5).astype(int)
        both = len(np.unique(y)) == 2
        return {
            "roc_auc": float(roc_auc_score(y, scores)) if both else math.nan,
            "average_precision": float(average_precision_score(y, scores)) if both else math.nan,
            "log_loss": float(log_loss(y, np.clip(scores, 1e-15, 1 - 1e-15), labels=[0, 1])),
            "brier": float(brier_score_loss(y, scores, pos_label=1)),
            "f1": float(f1_score(y, labels, zero_division=0)),
            "accuracy": float(accuracy_score(y, labels)),
        }
    assert classes is not None, "multiclass metrics need the model's classes"
    predicted = np.asarray(classes)[np.argmax(scores, axis=1)]
    order = np.argsort(classes)  # log_loss reads the columns in sorted-label order, whatever `labels` says
    known = set(np.unique(y)) <= set(classes)  # a class the model never saw has no column: no log loss
    return {
        **multiclass_label_metrics(y, predicted),
        "log_loss": float(log_loss(y, scores[:, order], labels=np.asarray(classes)[order])) if known else math.nan,
    }


def multiclass_label_metrics(y_true: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """The multiclass metrics that need only predicted labels (monitoring logs labels, the gate too)."""
    return {
        "f1_macro": float(f1_score(y_true, predicted, average="macro", zero_division=0)),
        "accuracy": float(accuracy_score(y_true, predicted)),
    }


def metric_value(
    task: TaskType, metric: str, y_true: np.ndarray, scores: np.ndarray, classes: list[Any] | None = None
) -> float:
    """One metric, as `compute_metrics` gives it, without the others (the bootstrap asks thousands of times)."""
    y = np.asarray(y_true)
    if len(y) == 0:
        return math.nan
    if task == "binary" and metric in {"roc_auc", "average_precision"}:
        if len(np.unique(y)) < 2:
            return math.nan
        if metric == "roc_auc" and np.isin(y, (0, 1)).all():
            return rank_auc(y, scores)
        ranking = roc_auc_score if metric == "roc_auc" else average_precision_score
        return float(ranking(y, scores))
    if task == "regression" and metric == "rmse":
        return float(math.sqrt(mean_squared_error(y, scores)))
    if task == "regression" and metric == "mae":
        return float(mean_absolute_error(y, scores))
    return compute_metrics(task, y, scores, classes)[metric]


def rank_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC of 0/1 labels as the Mann-Whitney statistic: sklearn's value (ties count a half), one sort.

    sklearn validates its inputs and builds the whole curve on every call, which is most of the
    time of a bootstrap that asks for the AUC hundreds of times.
    """
    from scipy.stats import rankdata

    positive = np.asarray(y_true) == 1
    n_positive = int(positive.sum())
    n_negative = len(positive) - n_positive
    ranks = rankdata(scores)  # ties share their average rank
    return float((ranks[positive].sum() - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative))


def _names(task: TaskType) -> list[str]:
    return {
        "binary": ["roc_auc", "average_precision", "log_loss", "brier", "f1", "accuracy"],
        "multiclass": ["f1_macro", "accuracy", "log_loss"],
        "regression": ["rmse", "mae", "r2"],
    }[task]


def model_classes(model: Any) -> list[Any] | None:
    classes = getattr(model, "classes_", None)
    return None if classes is None else list(classes)
