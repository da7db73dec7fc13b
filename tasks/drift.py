"""Drift monitoring: measure (Evidently), decide (pure policy), and remember alerts (DataStore).

Three layers, kept apart so the policy can be tested without data and the data without a policy:

- `drift_report` and `performance_check` turn a reference and a current frame into a `DriftResult`
  of effect sizes. Evidently is imported lazily: it costs seconds, and most importers of this
  module (the policy, the flows' argument parsing) never need it.
- `decide_drift` is pure: a `DriftResult`, the `MonitoringConfig` policy, the time of the last
  alert and "now" in, a `DriftDecision` out.
- `record_alert` / `last_alert_at` keep the alert history for the cool-down as one small JSON file
  per alert, so an object store (no appends, no locks) is enough.

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

import json
import logging
import math
import re
import tempfile
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from tasks.settings import METRIC_DIRECTIONS, MonitoringConfig, TrainingConfig
from tasks.stores import DataStore

log = logging.getLogger(__name__)

# Effect sizes, never p-values: with enough rows every p-value is tiny, and below 1000 rows
# Evidently would pick KS / chi-square by default. Names as in evidently's stattest registry.
NUMERIC_METHOD = "wasserstein"  # Wasserstein distance normed by the reference std
CATEGORICAL_METHOD = "jensenshannon"  # Jensen-Shannon distance, in [0, 1]
ALL_NULL_METHOD = "all_null"  # decided here, not by Evidently (see the module docstring)

DriftStatus = Literal["drift", "no_drift", "insufficient_data", "cooldown"]


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
        return sorted((c for c in self.columns if is_drifted(c)), key=_score_key, reverse=True)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only: non-finite floats become None, since strict JSON has no NaN."""
        return _json_safe(asdict(self))

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


@dataclass(frozen=True)
class DriftDecision:
    """What the policy concluded, whether to retrain, and every reason in words."""

    status: DriftStatus
    retrain: bool
    reasons: list[str]


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


def _score_key(column: ColumnDrift) -> float:
    return column.score if math.isfinite(column.score) else math.inf


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _require_aware(moment: datetime, name: str) -> datetime:
    """Naive datetimes are refused: a local `now()` read as UTC would shift the cool-down by hours."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {moment.isoformat()}")
    return moment


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


# --------------------------------------------------------------------------- deciding (pure)


def decide_drift(
    result: DriftResult,
    policy: MonitoringConfig,
    last_alert_at: datetime | None,
    as_of: datetime,
) -> DriftDecision:
    """The drift policy, pure. Every triggered signal is reported, not just the first.

    1. Fewer than `min_rows` current rows: insufficient data, whatever the scores say.
    2. Signals: share of drifted features >= `drifted_share`; prediction score >= `prediction_threshold`;
       performance drop > `max_performance_drop` (strictly: a drop equal to the allowance is allowed).
       The share is recounted from the columns with `is_drifted`, so a NaN score counts as drifted.
    3. No signal: no drift. Signals, but an alert less than `cooldown_hours` before `as_of`: cool-down
       (no retrain; the window is half-open, so at exactly its end a new alert goes through). An alert
       stamped after `as_of` (a backfilled check) also blocks. Otherwise: drift, retrain.
    """
    _require_aware(as_of, "as_of")
    if last_alert_at is not None:
        _require_aware(last_alert_at, "last_alert_at")
    if result.rows_current < policy.min_rows:
        return DriftDecision(
            "insufficient_data",
            retrain=False,
            reasons=[f"insufficient data: {result.rows_current} current rows, at least {policy.min_rows} needed"],
        )
    signals, notes = _signals(result, policy)
    if not signals:
        return DriftDecision("no_drift", retrain=False, reasons=notes)
    if last_alert_at is not None and policy.cooldown_hours > 0:
        ends = last_alert_at + timedelta(hours=policy.cooldown_hours)
        if as_of < ends:
            cooldown = f"cool-down: last alert at {last_alert_at.isoformat()}, no retraining before {ends.isoformat()}"
            return DriftDecision("cooldown", retrain=False, reasons=[*signals, cooldown])
    return DriftDecision("drift", retrain=True, reasons=signals)


def _signals(result: DriftResult, policy: MonitoringConfig) -> tuple[list[str], list[str]]:
    """(triggered signals, notes on the signals that did not trigger), both as sentences."""
    signals: list[str] = []
    notes: list[str] = []

    drifted = result.drifted_columns()
    share = drifted_share(result.columns) if result.columns else result.drifted_share
    share_text = f"{len(drifted)}/{len(result.columns)} features drifted (share {share:.2f})"
    if not math.isfinite(share) or share >= policy.drifted_share:
        names = ", ".join(f"{c.column} {c.score:.3f}" for c in drifted) or "no feature could be scored"
        signals.append(f"feature drift: {share_text} >= {policy.drifted_share:.2f}: {names}")
    else:
        notes.append(f"features: {share_text} < {policy.drifted_share:.2f}")

    if (pred := result.prediction) is not None:
        if not math.isfinite(pred.score) or pred.score >= policy.prediction_threshold:
            signals.append(f"prediction drift: {pred.method} {pred.score:.3f} >= {policy.prediction_threshold:.3f}")
        else:
            notes.append(f"prediction: {pred.method} {pred.score:.3f} < {policy.prediction_threshold:.3f}")
    else:
        notes.append("prediction: not measured")

    if (perf := result.performance) is not None:
        measured = f"{perf.metric} {perf.current_value:.4f} vs {perf.reference_value:.4f} at training"
        if not math.isfinite(perf.drop):
            notes.append(f"performance: not measurable ({measured}, {perf.labelled_rows} labelled rows)")
        elif perf.drop > policy.max_performance_drop:
            signals.append(
                f"performance drop: {measured}, worse by {perf.drop:.4f} > {policy.max_performance_drop:.4f} "
                f"({perf.labelled_rows} labelled rows)"
            )
        else:
            notes.append(f"performance: {measured}, drop {perf.drop:.4f} <= {policy.max_performance_drop:.4f}")
    else:
        notes.append("performance: not enough labelled rows yet")
    return signals, notes


# --------------------------------------------------------------------------- presenting


_HEADLINE: dict[DriftStatus, str] = {
    "drift": "DRIFT: retraining triggered",
    "no_drift": "No drift",
    "insufficient_data": "Insufficient data: no conclusion",
    "cooldown": "Drift, inside the cool-down: no retraining",
}


def summary_markdown(
    result: DriftResult, decision: DriftDecision, report_uri: str | None, title: str, top: int = 10
) -> str:
    """A short markdown summary for a Prefect artifact: decision, reasons, top columns, links."""
    lines = [f"# {title}", "", f"**{_HEADLINE[decision.status]}**", ""]
    lines += [f"- {_md(reason)}" for reason in decision.reasons]
    lines += ["", f"Rows: {result.rows_current} current, {result.rows_reference} reference.", ""]
    if result.columns:
        ranked = sorted(result.columns, key=_score_key, reverse=True)[:top]
        lines += [
            f"Drifted features: {len(result.drifted_columns())}/{len(result.columns)} "
            f"(share {result.drifted_share:.2f}). Top scores:",
            "",
            "| column | method | score | threshold | drifted |",
            "| --- | --- | ---: | ---: | --- |",
        ]
        lines += [
            f"| {_md(c.column)} | {c.method} | {c.score:.4f} | {c.threshold:.2f} | {'yes' if is_drifted(c) else 'no'} |"
            for c in ranked
        ]
        lines.append("")
    if (pred := result.prediction) is not None:
        flag = "drifted" if is_drifted(pred) else "stable"
        lines.append(f"Prediction drift: {pred.method} {pred.score:.4f} (threshold {pred.threshold:.2f}, {flag}).")
    else:
        lines.append("Prediction drift: not measured.")
    if (perf := result.performance) is not None:
        lines.append(
            f"Performance: {perf.metric} {perf.current_value:.4f} on {perf.labelled_rows} labelled rows, "
            f"{perf.reference_value:.4f} at training (drop {perf.drop:+.4f}, positive = worse)."
        )
    else:
        lines.append("Performance: not enough labelled rows yet.")
    lines += ["", f"Report: [{report_uri}]({report_uri})" if report_uri else "Report: none (Evidently not run)."]
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    """Table cells must not contain a bare pipe."""
    return text.replace("|", "\\|")


# --------------------------------------------------------------------------- storing


def save_report_html(snapshot: Any, store: DataStore, dataset: str, name: str) -> str:
    """Evidently writes to a local path only: render to a temp file, then put the bytes in the store."""
    with tempfile.TemporaryDirectory(prefix="driftloop-report-") as folder:
        path = Path(folder) / "report.html"
        snapshot.save_html(str(path))
        data = path.read_bytes()
    return store.put("reports", dataset, f"{name}.html", data)


def record_alert(store: DataStore, dataset: str, model_name: str, as_of: datetime, payload: dict[str, Any]) -> str:
    """One JSON object per alert (no appends: object stores have none); returns its path.

    The name starts with the UTC time so a listing reads in order, and ends with a short random
    suffix so two alerts in the same second never overwrite each other.
    """
    stamp = _require_aware(as_of, "as_of").astimezone(UTC)
    name = f"alerts/{model_name}/{stamp:%Y%m%dT%H%M%S%z}-{uuid.uuid4().hex[:8]}.json"
    body = {"as_of": stamp.isoformat(), "dataset": dataset, "model_name": model_name, "payload": payload}
    return store.put("monitoring", dataset, name, json.dumps(_json_safe(body), indent=2, default=str).encode())


def last_alert_at(store: DataStore, dataset: str, model_name: str) -> datetime | None:
    """The latest `as_of` recorded inside the alert files (names can lie; contents are the record).

    An unreadable file is skipped with a warning rather than blocking every later check.
    """
    folder = f"/alerts/{model_name}/"
    latest: datetime | None = None
    for path in store.find("monitoring", dataset, ".json"):
        if folder not in path or "/" in path.split(folder, 1)[1]:
            continue  # another model's alerts, or something else kept under monitoring/
        try:
            moment = datetime.fromisoformat(json.loads(store.read_bytes(path))["as_of"])
            _require_aware(moment, "as_of")
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("skipping unreadable alert record %s: %s", path, exc)
            continue
        if latest is None or moment > latest:
            latest = moment
    return latest
