"""Drift measured: a reference and a current frame in, a `DriftResult` of effect sizes out (Evidently).

One of four modules of monitoring, each with one role: this one measures; tasks/drift_policy.py
decides (pure: a result, the policy, the last alert and "now" in, a decision out);
tasks/drift_summary.py presents (the markdown summary, the HTML report in the store);
tasks/alerts.py remembers the alerts the cool-down reads. Evidently is imported lazily: it costs
seconds, and most importers (the policy, the flows' argument parsing) never need it.

Conventions, chosen once and used everywhere:

- A column drifts when its distance is >= its threshold, as Evidently's own Wasserstein and
  Jensen-Shannon tests decide, so our flags and the HTML report never disagree.
- A score that is not a finite number counts as drifted: a comparison that broke must not pass
  as "no drift".
- A feature that is entirely null (or absent) in the current window while the reference has values
  is drifted with score 1.0, the top of both distance scales: the feature stopped arriving, which
  is the largest change there is. Evidently cannot compare an empty column, so such columns are
  decided here and left out of its report. The reverse (null in the reference only) is scored the
  same way; null on both sides is no change (score 0.0).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from tasks.settings import METRIC_DIRECTIONS, MonitoringConfig, TrainingConfig

log = logging.getLogger(__name__)

# Effect sizes, never p-values: with enough rows every p-value is tiny, and below 1000 rows
# Evidently would pick KS / chi-square by default. Names as in evidently's stattest registry.
NUMERIC_METHOD = "wasserstein"  # Wasserstein distance normed by the reference std
CATEGORICAL_METHOD = "jensenshannon"  # Jensen-Shannon distance, in [0, 1]
ALL_NULL_METHOD = "all_null"  # decided here, not by Evidently (see the module docstring)

# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ColumnDrift:
    """One column's distance between reference and current, and whether it crossed its threshold."""

    column: str
    method: str
    score: float
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class PerformanceCheck:
    """The primary metric on labelled current rows against its holdout value at training.

    `drop` is signed so that positive always means worse, whichever way the metric points.
    """

    metric: str
    reference_value: float
    current_value: float
    drop: float
    labelled_rows: int


@dataclass(frozen=True)
class DriftResult:
    """Everything measured in one check; `columns` holds features only, the prediction apart.

    Performance needs labels and the training-time metric, which `drift_report` does not have:
    attach it with `dataclasses.replace(result, performance=performance_check(...))`.
    """

    rows_current: int
    rows_reference: int
    columns: list[ColumnDrift]
    drifted_share: float
    prediction: ColumnDrift | None = None
    performance: PerformanceCheck | None = None

    def drifted_columns(self) -> list[ColumnDrift]:
        """Drifted features, largest score first (a non-finite score counts as drifted)."""
        return sorted((c for c in self.columns if is_drifted(c)), key=score_key, reverse=True)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only: non-finite floats become None, since strict JSON has no NaN."""
        return json_safe(asdict(self))

    def metrics(self) -> dict[str, float]:
        """Flat numbers for `mlflow.log_metrics`; NaN stays NaN (MLflow stores it) so gaps stay visible."""
        out: dict[str, float] = {
            "rows_current": float(self.rows_current),
            "rows_reference": float(self.rows_reference),
            "drift_share": float(self.drifted_share),
            "drifted_columns": float(len(self.drifted_columns())),
        }
        for column in self.columns:
            out[f"drift_{metric_key(column.column)}"] = float(column.score)
        if self.prediction is not None:
            out["prediction_drift"] = float(self.prediction.score)
        if self.performance is not None:
            out["performance_drop"] = float(self.performance.drop)
            out["performance_current"] = float(self.performance.current_value)
            out["performance_reference"] = float(self.performance.reference_value)
            out["labelled_rows"] = float(self.performance.labelled_rows)
        return out


# --------------------------------------------------------------------------- small pure helpers


def is_drifted(column: ColumnDrift) -> bool:
    """The flag, but a non-finite score always counts: a broken comparison is not evidence of no drift."""
    return column.drifted or not math.isfinite(column.score) or column.score >= column.threshold


def drifted_share(columns: list[ColumnDrift]) -> float:
    """Share of drifted columns; NaN when there is nothing to measure (never a reassuring 0)."""
    if not columns:
        return math.nan
    return sum(is_drifted(c) for c in columns) / len(columns)


def metric_key(column: str) -> str:
    """MLflow metric names allow letters, digits, `_ - . / space`: anything else becomes `_`."""
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", column)


def score_key(column: ColumnDrift) -> float:
    return column.score if math.isfinite(column.score) else math.inf


def json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


# --------------------------------------------------------------------------- measuring: features


def _all_null_drift(column: str, ref_null: bool, threshold: float) -> ColumnDrift:
    """Evidently cannot compare an empty column: decide here. One side empty = maximal change."""
    score = 0.0 if ref_null else 1.0
    return ColumnDrift(column, ALL_NULL_METHOD, score, threshold, drifted=score >= threshold)


def _is_all_null(frame: pd.DataFrame, column: str, numeric: bool) -> bool:
    """Absent, or nothing Evidently would keep, which it cannot compare.

    Evidently drops NaN and inf, and `_prepare` turns text in a numeric column into NaN, so the
    check coerces the same way.
    """
    if column not in frame.columns:
        return True
    if numeric:
        return not np.isfinite(pd.to_numeric(frame[column], errors="coerce").astype(float)).any()
    return bool(frame[column].isna().all())


def _prepare(frame: pd.DataFrame, numeric: list[str], categorical: list[str]) -> pd.DataFrame:
    """Numbers as float (Evidently rejects numbers stored as text); categories as text.

    Casting categories to str makes an int-coded category in Parquet compare equal to the same
    code arriving as a string from the inference log; missing values stay missing.
    """
    out = pd.DataFrame(index=frame.index)
    for column in numeric:
        out[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    for column in categorical:
        values = frame[column]
        out[column] = values.astype(object).where(values.isna(), values.astype(str))
    return out


def _value_drift_scores(snapshot_dict: dict[str, Any]) -> dict[str, tuple[str, float, float]]:
    """column -> (method, score, threshold) from the ValueDrift metrics of `Snapshot.dict()`."""
    scores: dict[str, tuple[str, float, float]] = {}
    for metric in snapshot_dict.get("metrics", []):
        config = metric.get("config", {})
        if not str(config.get("type", "")).endswith(":ValueDrift"):
            continue
        value = metric.get("value")
        score = float(value) if isinstance(value, int | float) else math.nan
        scores[config["column"]] = (str(config.get("method")), score, float(config.get("threshold", math.nan)))
    return scores


def drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    config: TrainingConfig,
    prediction_column: str = "prediction",
) -> tuple[DriftResult, Any]:
    """Distances per feature (and for the prediction, if both frames have it) with Evidently.

    Returns the result and the Evidently Snapshot for the HTML report; the snapshot is None when
    Evidently was not run (empty current window, or nothing comparable). An empty current window
    gives `rows_current == 0` and no columns, which the policy reads as insufficient data.
    Features use `monitoring.column_threshold`; the prediction uses `monitoring.prediction_threshold`,
    so its flag agrees with the policy. Binary and regression predictions are numbers,
    multiclass predictions are labels.
    """
    if reference.empty:
        raise ValueError("the reference frame is empty: there is no baseline to compare against")
    policy = config.monitoring
    if current.empty:
        return DriftResult(0, len(reference), [], math.nan), None

    features = config.features.all
    decided: dict[str, ColumnDrift] = {}
    for column in features:
        numeric_feature = column in config.features.numeric
        ref_null = _is_all_null(reference, column, numeric_feature)
        cur_null = _is_all_null(current, column, numeric_feature)
        if ref_null or cur_null:
            decided[column] = _all_null_drift(column, ref_null and cur_null, policy.column_threshold)
    numeric = [c for c in config.features.numeric if c not in decided]
    categorical = [c for c in config.features.categorical if c not in decided]

    prediction_numeric = config.task != "multiclass"
    with_prediction = prediction_column in reference.columns and prediction_column in current.columns
    prediction: ColumnDrift | None = None
    if with_prediction:
        ref_null = _is_all_null(reference, prediction_column, prediction_numeric)
        cur_null = _is_all_null(current, prediction_column, prediction_numeric)
        if ref_null or cur_null:
            prediction = _all_null_drift(prediction_column, ref_null and cur_null, policy.prediction_threshold)
            with_prediction = False

    snapshot = None
    scores: dict[str, tuple[str, float, float]] = {}
    if numeric or categorical or with_prediction:
        num_cols = numeric + ([prediction_column] if with_prediction and prediction_numeric else [])
        cat_cols = categorical + ([prediction_column] if with_prediction and not prediction_numeric else [])
        snapshot = _run_evidently(
            _prepare(reference, num_cols, cat_cols),
            _prepare(current, num_cols, cat_cols),
            num_cols,
            cat_cols,
            features=numeric + categorical,
            prediction=(prediction_column, prediction_numeric) if with_prediction else None,
            policy=policy,
        )
        scores = _value_drift_scores(snapshot.dict())

    columns = [decided.get(column) or _from_scores(column, scores, policy.column_threshold) for column in features]
    if with_prediction:
        prediction = _from_scores(prediction_column, scores, policy.prediction_threshold)
    result = DriftResult(
        rows_current=len(current),
        rows_reference=len(reference),
        columns=columns,
        drifted_share=drifted_share(columns),
        prediction=prediction,
    )
    return result, snapshot


def _from_scores(column: str, scores: dict[str, tuple[str, float, float]], threshold: float) -> ColumnDrift:
    """A column Evidently should have scored; a missing score is NaN, hence drifted, never silently fine."""
    method, score, _ = scores.get(column, ("missing", math.nan, threshold))
    drifted = not math.isfinite(score) or score >= threshold
    return ColumnDrift(column, method, score, threshold, drifted)


def _run_evidently(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    *,
    features: list[str],
    prediction: tuple[str, bool] | None,
    policy: MonitoringConfig,
) -> Any:
    """One Report: the preset over features, plus a separate ValueDrift for the prediction.

    Kept apart so Evidently's drifted-columns count covers features only, as ours does, and the
    prediction gets its own threshold. Note the order: current goes FIRST in `run`.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    items: list[Any] = []
    if features:
        items.append(
            DataDriftPreset(
                columns=features,
                drift_share=policy.drifted_share,
                num_method=NUMERIC_METHOD,
                cat_method=CATEGORICAL_METHOD,
                threshold=policy.column_threshold,
            )
        )
    if prediction is not None:
        name, numeric_prediction = prediction
        method = NUMERIC_METHOD if numeric_prediction else CATEGORICAL_METHOD
        items.append(ValueDrift(column=name, method=method, threshold=policy.prediction_threshold))
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    return Report(items, include_tests=True).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )


# --------------------------------------------------------------------------- measuring: performance


def performance_check(
    current: pd.DataFrame,
    config: TrainingConfig,
    reference_value: float,
    prediction_column: str = "prediction",
) -> PerformanceCheck | None:
    """The gate metric on rows that have both a label and a prediction, against the holdout value.

    None when labels (or predictions) are missing or fewer than `monitoring.min_labelled_rows`:
    a metric on a handful of rows is noise. Predictions: P(positive) for binary, the predicted
    label for multiclass (so log_loss, which needs probabilities, is NaN), a number for regression.
    """
    if config.target not in current.columns or prediction_column not in current.columns:
        return None
    labelled = current[current[config.target].notna() & current[prediction_column].notna()]
    if len(labelled) < config.monitoring.min_labelled_rows:
        return None
    metric = config.gate.metric
    value = gate_metric(config, labelled[config.target], labelled[prediction_column])
    higher = METRIC_DIRECTIONS[config.task][metric]
    drop = reference_value - value if higher else value - reference_value
    return PerformanceCheck(metric, float(reference_value), value, float(drop), len(labelled))


def gate_metric(config: TrainingConfig, y_true: pd.Series, predicted: pd.Series) -> float:
    """The gate metric of logged predictions (multiclass: labels, so label-based metrics only)."""
    from tasks.model import compute_metrics, multiclass_label_metrics  # sklearn: only when labels arrive

    metric = config.gate.metric
    if config.task == "multiclass":
        labels = multiclass_label_metrics(y_true.astype(str).to_numpy(), predicted.astype(str).to_numpy())
        return labels.get(metric, math.nan)
    if config.task == "binary":
        y_binary = y_true.astype("int64").to_numpy()
        return float(compute_metrics("binary", y_binary, predicted.astype(float).to_numpy())[metric])
    y_float = y_true.astype(float).to_numpy()
    return float(compute_metrics("regression", y_float, predicted.astype(float).to_numpy())[metric])
