"""Drift measured: a reference and a current frame in, a `DriftResult` of effect sizes out.

One of four modules of monitoring, each with one role: this one measures; tasks/drift_policy.py
decides (pure: a result, the policy, the last alert and "now" in, a decision out);
tasks/drift_summary.py presents (the markdown summary, the HTML report in the store);
tasks/alerts.py remembers the alerts the cool-down reads. Evidently is imported lazily: it costs
seconds, and most importers (the policy, the flows' argument parsing) never need it.

Method. The decision reads every row: each column's statistics come from one vectorised pass
over both sides (`tasks.drift_null.compare`: Evidently's own normed Wasserstein and Jensen-Shannon
formulas, held equal to its functions by the tests), so there is no sampling error in what decides.
Evidently builds the HTML report (same methods, same thresholds) on at most
`monitoring.report_rows` rows per side, a seeded uniform sample where a side is larger; the
result says so (`report_rows`) and the summary prints it. Where nothing is sampled the report's
scores equal the decision's; where it is, they differ by sampling error only (BENCHMARKS.md
section 3 measures it), and a column near its threshold may be flagged on one and not the other.

Conventions, chosen once and used everywhere:

- A column's distance drifts when it is >= its threshold, as Evidently's own Wasserstein and
  Jensen-Shannon tests decide. Thresholds are the model's calibrated null (tasks/drift_null.py)
  unless the config fixes them.
- On top of the distance, a feature is flagged when its null rate changed, or (categories) its
  share of values the reference never had grew, beyond the calibrated null: Evidently drops
  missing values, so a column half of whose values stopped arriving can keep its distance.
- A score that is not a finite number counts as drifted: a comparison that broke must not pass
  as "no drift".
- A feature that is entirely null (or absent) in the current window while the reference has values
  is drifted with score 1.0, the top of both distance scales: the feature stopped arriving, which
  is the largest change there is. Evidently cannot compare an empty column, so such columns are
  decided here and left out of its report. The reverse (null in the reference only) is scored the
  same way; null on both sides is no change (score 0.0).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from tasks.drift_null import Compared, NullThresholds, calibrate, compare
from tasks.settings import METRIC_DIRECTIONS, TrainingConfig

log = logging.getLogger(__name__)

# Effect sizes, never p-values: with enough rows every p-value is tiny, and below 1000 rows
# Evidently would pick KS / chi-square by default. Names as in evidently's stattest registry.
NUMERIC_METHOD = "wasserstein"  # Wasserstein distance normed by the reference std
CATEGORICAL_METHOD = "jensenshannon"  # Jensen-Shannon distance, in [0, 1]
ALL_NULL_METHOD = "all_null"  # decided here, not by Evidently (see the module docstring)
REPORT_SAMPLE_SEED = 0  # the HTML report's sample is reproducible

# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ColumnDrift:
    """One column's distance between reference and current, and whether it crossed its threshold.

    `quality` names the rate statistics that passed their null (e.g. "null rate +0.310 > 0.074").
    """

    column: str
    method: str
    score: float
    threshold: float
    drifted: bool
    quality: tuple[str, ...] = ()


@dataclass(frozen=True)
class PerformanceCheck:
    """The primary metric on labelled current rows against its holdout value at training.

    `drop` is signed so that positive always means worse, whichever way the metric points.
    `drop_low` is the one-sided lower confidence bound of the drop (a day-block bootstrap of the
    labelled rows, at the performance signal's share of `false_alarm_rate`): the drop is beyond
    noise only when even this bound passes the allowance. NaN where it could not be measured.
    """

    metric: str
    reference_value: float
    current_value: float
    drop: float
    labelled_rows: int
    drop_low: float = math.nan


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
    label: ColumnDrift | None = None
    min_drifted: int | None = None  # flagged features feature drift needs (calibrated or from the share)
    alone_ratio: float = math.inf  # or one feature at this multiple of its threshold (calibrated only)
    # (reference, current) rows the HTML report was run on where it sampled; None = every row
    report_rows: tuple[int, int] | None = None

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
        if self.label is not None:
            out["label_drift"] = float(self.label.score)
        if self.performance is not None:
            out["performance_drop"] = float(self.performance.drop)
            out["performance_current"] = float(self.performance.current_value)
            out["performance_reference"] = float(self.performance.reference_value)
            out["labelled_rows"] = float(self.performance.labelled_rows)
        return out


# --------------------------------------------------------------------------- small pure helpers


def is_drifted(column: ColumnDrift) -> bool:
    """The flag, but a non-finite score always counts: a broken comparison is not evidence of no drift."""
    return column.drifted or bool(column.quality) or not math.isfinite(column.score) or column.score >= column.threshold


def beyond_chance(column: ColumnDrift) -> str:
    """How far past its threshold a score is, in words: "0.412 (1.6x the threshold 0.260)"."""
    if not math.isfinite(column.score):
        return f"{column.score} (not measurable)"
    ratio = column.score / column.threshold if column.threshold > 0 else math.inf
    return f"{column.score:.3f} ({ratio:.1f}x the threshold {column.threshold:.3f})"


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


def _all_null_drift(column: str, both_null: bool, threshold: float) -> ColumnDrift:
    """Evidently cannot compare an empty column: decide here. One side empty = maximal change.

    Drifted whatever the threshold (a calibrated Wasserstein threshold may exceed 1.0).
    """
    score = 0.0 if both_null else 1.0
    return ColumnDrift(column, ALL_NULL_METHOD, score, threshold, drifted=not both_null)


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


def evidently_scores(snapshot_dict: dict[str, Any]) -> dict[str, tuple[str, float, float]]:
    """column -> (method, score, threshold) from the ValueDrift metrics of `Snapshot.dict()`.

    What the HTML report shows; the decision does not read it (tests and bench/ compare the two).
    """
    scores: dict[str, tuple[str, float, float]] = {}
    for metric in snapshot_dict.get("metrics", []):
        config = metric.get("config", {})
        if not str(config.get("type", "")).endswith(":ValueDrift"):
            continue
        value = metric.get("value")
        score = float(value) if isinstance(value, int | float) else math.nan
        scores[config["column"]] = (str(config.get("method")), score, float(config.get("threshold", math.nan)))
    return scores


@dataclass(frozen=True)
class Limits:
    """The thresholds one check applies: fixed in the config where set, else the model's calibrated null."""

    column: dict[str, float]
    null_rate: dict[str, float]
    unseen: dict[str, float]
    prediction: float
    label: float | None
    min_drifted: int
    alone_ratio: float

    @classmethod
    def of(cls, config: TrainingConfig, null: NullThresholds | None) -> Limits:
        policy = config.monitoring
        features = config.features.all
        if null is None and policy.needs_null:
            raise ValueError(
                "drift thresholds: the model has no calibrated null and monitoring does not fix "
                "column_threshold, drifted_share and prediction_threshold"
            )
        fixed_column = policy.column_threshold
        column = {c: fixed_column if fixed_column is not None else null.distance.get(c, 1.0) for c in features}  # type: ignore[union-attr]
        if policy.prediction_threshold is not None:
            prediction = policy.prediction_threshold
        else:
            prediction = null.prediction if null is not None and null.prediction is not None else 1.0
        if policy.drifted_share is not None:  # share >= drifted_share, as a count (float-safe)
            min_drifted = max(1, math.ceil(policy.drifted_share * len(features) - 1e-9))
        else:
            min_drifted = null.min_drifted  # type: ignore[union-attr]
        return cls(
            column=column,
            null_rate=dict(null.null_rate) if null is not None else {},
            unseen=dict(null.unseen) if null is not None else {},
            prediction=prediction,
            label=null.label if null is not None else None,
            min_drifted=min_drifted,
            # a fixed column threshold has no null to say how far past it is beyond chance
            alone_ratio=null.alone_ratio if null is not None and fixed_column is None else math.inf,
        )


def drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    config: TrainingConfig,
    prediction_column: str = "prediction",
    null: NullThresholds | None = None,
) -> tuple[DriftResult, Any]:
    """Distances per feature, the prediction and the label (where both frames have them), with Evidently.

    Returns the result and the Evidently Snapshot for the HTML report; the snapshot is None when
    Evidently was not run (empty current window, or nothing comparable). An empty current window
    gives `rows_current == 0` and no columns, which the policy reads as insufficient data.
    Thresholds are `Limits.of(config, null)`: without a stored null (a model trained before
    calibration) and no fixed thresholds, the null is calibrated here from the reference.
    Binary and regression predictions are numbers, multiclass predictions are labels; labels are
    compared on the rows that have one, once at least `min_labelled_rows` of them arrived.
    """
    if reference.empty:
        raise ValueError("the reference frame is empty: there is no baseline to compare against")
    policy = config.monitoring
    if current.empty:
        return DriftResult(0, len(reference), [], math.nan), None
    if null is None and policy.needs_null:
        null = calibrate(reference, config, prediction_column)
    limits = Limits.of(config, null)

    features = config.features.all
    decided: dict[str, ColumnDrift] = {}
    for column in features:
        numeric_feature = column in config.features.numeric
        ref_null = _is_all_null(reference, column, numeric_feature)
        cur_null = _is_all_null(current, column, numeric_feature)
        if ref_null or cur_null:
            decided[column] = _all_null_drift(column, ref_null and cur_null, limits.column[column])
    numeric = [c for c in config.features.numeric if c not in decided]
    categorical = [c for c in config.features.categorical if c not in decided]

    prediction_numeric = config.task != "multiclass"
    with_prediction = prediction_column in reference.columns and prediction_column in current.columns
    prediction: ColumnDrift | None = None
    if with_prediction:
        ref_null = _is_all_null(reference, prediction_column, prediction_numeric)
        cur_null = _is_all_null(current, prediction_column, prediction_numeric)
        if ref_null or cur_null:
            prediction = _all_null_drift(prediction_column, ref_null and cur_null, limits.prediction)
            with_prediction = False
    label_frames = _labelled(reference, current, config) if limits.label is not None else None

    # The decision: every statistic on every row, vectorised (Evidently's formulas, held equal to
    # its functions by tests/unit/test_drift_null.py).
    compared = {
        column: compare(reference[column], current[column], column in config.features.numeric)
        for column in features
        if column in reference.columns and column in current.columns
    }
    label_numeric = config.task == "regression"
    label_stats = compare(*label_frames, label_numeric) if label_frames is not None else None

    snapshot, shown = None, None
    if numeric or categorical or with_prediction or label_frames is not None:
        snapshot, shown = _evidently_report(
            reference, current, config, limits, numeric, categorical, prediction_column, with_prediction, label_frames
        )

    quality = _quality_flags(compared, limits)
    columns = [
        dataclasses.replace(
            decided.get(column)
            or _measured(column, column in config.features.numeric, compared.get(column), limits.column[column]),
            quality=quality.get(column, ()),
        )
        for column in features
    ]
    if with_prediction:
        stats = compare(reference[prediction_column], current[prediction_column], prediction_numeric)
        prediction = _measured(prediction_column, prediction_numeric, stats, limits.prediction)
    label = None
    if label_stats is not None and limits.label is not None:
        label = _measured(config.target, label_numeric, label_stats, limits.label)
    result = DriftResult(
        rows_current=len(current),
        rows_reference=len(reference),
        columns=columns,
        drifted_share=drifted_share(columns),
        prediction=prediction,
        label=label,
        min_drifted=limits.min_drifted,
        alone_ratio=limits.alone_ratio,
        report_rows=shown,
    )
    return result, snapshot


def _evidently_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    config: TrainingConfig,
    limits: Limits,
    numeric: list[str],
    categorical: list[str],
    prediction_column: str,
    with_prediction: bool,
    label_frames: tuple[pd.Series, pd.Series] | None,
) -> tuple[Any, tuple[int, int] | None]:
    """The HTML report's Snapshot, on at most `monitoring.report_rows` rows per side.

    Returns (snapshot, (reference rows, current rows) shown) where a side was sampled, else None.
    A uniform sample without replacement, seeded, so a report can be rebuilt; the decision never
    reads it (Evidently costs ~60 s and 1.5 GB at a million rows, BENCHMARKS.md section 3).
    """
    most = config.monitoring.report_rows
    sampled = len(reference) > most or len(current) > most
    ref_rows, cur_rows = _sample_rows(len(reference), most), _sample_rows(len(current), most)
    reference, current = reference.iloc[ref_rows], current.iloc[cur_rows]  # before any copy is made
    prediction_numeric = config.task != "multiclass"
    num_cols = numeric + ([prediction_column] if with_prediction and prediction_numeric else [])
    cat_cols = categorical + ([prediction_column] if with_prediction and not prediction_numeric else [])
    ref_frame = _prepare(reference, num_cols, cat_cols)
    cur_frame = _prepare(current, num_cols, cat_cols)
    label_column = None
    if label_frames is not None:
        label_column = config.target  # never a feature (the config refuses it)
        ref_frame[label_column] = label_frames[0].iloc[ref_rows].to_numpy()
        cur_frame[label_column] = label_frames[1].iloc[cur_rows].to_numpy()
        (cat_cols if config.task != "regression" else num_cols).append(label_column)
    snapshot = _run_evidently(
        ref_frame,
        cur_frame,
        num_cols,
        cat_cols,
        features=numeric + categorical,
        prediction=(prediction_column, prediction_numeric) if with_prediction else None,
        label=(label_column, config.task == "regression") if label_column else None,
        limits=limits,
    )
    return snapshot, (len(ref_frame), len(cur_frame)) if sampled else None


def _sample_rows(rows: int, most: int) -> np.ndarray:
    """Positions of a seeded uniform sample without replacement (all of them, in order, if few enough)."""
    if rows <= most:
        return np.arange(rows)
    return np.sort(np.random.default_rng(REPORT_SAMPLE_SEED).choice(rows, size=most, replace=False))


def _labelled(
    reference: pd.DataFrame, current: pd.DataFrame, config: TrainingConfig
) -> tuple[pd.Series, pd.Series] | None:
    """(reference labels, current labels) as compared, or None until enough labels arrived.

    Classes as canonical text (1, 1.0 and True are the same class whichever store they came from);
    rows without a label stay missing, which the distance ignores.
    """
    target = config.target
    if target not in reference.columns or target not in current.columns:
        return None
    if int(current[target].notna().sum()) < config.monitoring.min_labelled_rows:
        return None
    if config.task == "regression":
        return (
            pd.to_numeric(reference[target], errors="coerce").astype(float),
            pd.to_numeric(current[target], errors="coerce").astype(float),
        )
    return class_text(reference[target]), class_text(current[target])


def class_text(values: pd.Series) -> pd.Series:
    """Class labels as text; integral numbers (and booleans) as their integer, missing stays missing."""
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        floats = pd.to_numeric(values, errors="coerce").astype(float)
        text = floats.map(lambda v: str(int(v)) if math.isfinite(v) and float(v).is_integer() else str(v))
        return text.where(floats.notna())
    return values.astype(object).where(values.isna(), values.astype(str))


def _quality_flags(compared: dict[str, Compared], limits: Limits) -> dict[str, tuple[str, ...]]:
    """Per feature, the rate statistics past their calibrated null (none without a calibration)."""
    flags: dict[str, tuple[str, ...]] = {}
    for column in limits.column:
        if column not in compared:
            continue
        found = []
        change, at = compared[column].null_rate_change, limits.null_rate.get(column, math.inf)
        if math.isfinite(change) and change >= at:
            found.append(f"null rate changed by {change:.3f} >= {at:.3f}")
        unseen, at = compared[column].unseen_share, limits.unseen.get(column, math.inf)
        if math.isfinite(unseen) and unseen >= at:
            found.append(f"unseen categories in {unseen:.3f} of rows >= {at:.3f}")
        if found:
            flags[column] = tuple(found)
    return flags


def _measured(column: str, numeric: bool, stats: Compared | None, threshold: float) -> ColumnDrift:
    """A column that should have been measured; a missing or non-finite distance is drifted, never fine."""
    score = stats.distance if stats is not None else math.nan
    method = NUMERIC_METHOD if numeric else CATEGORICAL_METHOD
    return ColumnDrift(column, method, score, threshold, drifted=not math.isfinite(score) or score >= threshold)


def _run_evidently(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    *,
    features: list[str],
    prediction: tuple[str, bool] | None,
    label: tuple[str, bool] | None,
    limits: Limits,
) -> Any:
    """One Report: the preset over features, plus a separate ValueDrift for the prediction and the label.

    Kept apart so Evidently's drifted-columns count covers features only, as ours does, and the
    prediction and label get their own thresholds. Note the order: current goes FIRST in `run`.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    items: list[Any] = []
    if features:
        items.append(
            DataDriftPreset(
                columns=features,
                drift_share=limits.min_drifted / max(1, len(limits.column)),
                num_method=NUMERIC_METHOD,
                cat_method=CATEGORICAL_METHOD,
                per_column_threshold={c: limits.column[c] for c in features},
            )
        )
    for single, threshold in ((prediction, limits.prediction), (label, limits.label)):
        if single is not None and threshold is not None:
            name, numeric_values = single
            method = NUMERIC_METHOD if numeric_values else CATEGORICAL_METHOD
            items.append(ValueDrift(column=name, method=method, threshold=threshold))
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
    a metric on a handful of rows is noise. Predictions: P(positive) for binary, a number for
    regression; for multiclass the class probabilities the log keeps (so log loss is measured
    too), or the predicted label where a row was logged without them. The drop's lower bound
    resamples whole days of the labelled rows (`null_draws` times), as the drift null does.
    """
    if config.target not in current.columns or prediction_column not in current.columns:
        return None
    labelled = current[current[config.target].notna() & current[prediction_column].notna()]
    if len(labelled) < config.monitoring.min_labelled_rows:
        return None
    from tasks.inference_log import PROBABILITIES  # pandera: only when labels arrive

    def metric_of(rows: pd.DataFrame) -> float:
        probabilities = rows[PROBABILITIES] if PROBABILITIES in rows.columns else None
        return gate_metric(config, rows[config.target], rows[prediction_column], probabilities)

    metric = config.gate.metric
    value = metric_of(labelled)
    higher = METRIC_DIRECTIONS[config.task][metric]
    sign = 1.0 if higher else -1.0  # drop = sign * (reference - current): positive is worse
    drop = sign * (reference_value - value)
    drop_low = math.nan
    if math.isfinite(drop) and config.timestamp in labelled.columns:
        from tasks.drift_null import SIGNALS_DECIDED_HERE, DayBlocks

        blocks = DayBlocks.of(labelled[config.timestamp])
        rng = np.random.default_rng(config.tuning.seed + 2)
        # only the columns the metric reads: each draw copies its rows, hundreds of times
        needed = labelled[[c for c in (config.target, prediction_column, PROBABILITIES) if c in labelled.columns]]
        draws = np.array(
            [metric_of(needed.iloc[blocks.sample(rng, blocks.days)]) for _ in range(config.monitoring.null_draws)]
        )
        drops = sign * (reference_value - draws[np.isfinite(draws)])
        if len(drops):
            drop_low = float(np.quantile(drops, config.monitoring.false_alarm_rate / SIGNALS_DECIDED_HERE))
    return PerformanceCheck(metric, float(reference_value), value, float(drop), len(labelled), drop_low)


def gate_metric(
    config: TrainingConfig, y_true: pd.Series, predicted: pd.Series, probabilities: pd.Series | None = None
) -> float:
    """The gate metric of logged predictions; multiclass from the class probabilities when every row has them."""
    from tasks.model import metric_value, multiclass_label_metrics  # sklearn: only when labels arrive

    metric = config.gate.metric
    if config.task == "multiclass":
        if probabilities is not None and probabilities.notna().all():
            matrix, classes = probability_matrix(probabilities)
            return float(metric_value("multiclass", metric, y_true.astype(str).to_numpy(), matrix, classes))
        labels = multiclass_label_metrics(y_true.astype(str).to_numpy(), predicted.astype(str).to_numpy())
        return labels.get(metric, math.nan)
    # one metric, not all of them: the performance bound asks for it `null_draws` times
    if config.task == "binary":
        return metric_value("binary", metric, y_true.astype("int64").to_numpy(), predicted.astype(float).to_numpy())
    return metric_value("regression", metric, y_true.astype(float).to_numpy(), predicted.astype(float).to_numpy())


def probability_matrix(probabilities: pd.Series) -> tuple[np.ndarray, list[str]]:
    """JSON objects of class -> probability, one per row, as a matrix over every class any row names.

    A class a row does not name (a version that never saw it) has probability 0 in that row.
    """
    import json

    rows = [json.loads(text) for text in probabilities]
    classes = sorted({name for row in rows for name in row})
    matrix = np.array([[float(row.get(name, 0.0)) for name in classes] for row in rows], dtype=float)
    return matrix, classes
