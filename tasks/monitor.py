"""Monitor: has production data drifted from what the champion was trained on?

This is the Prefect stage around the drift module: it loads the data, decides with reasons,
and publishes the report, the summary and the numbers.

Reference data is the champion's own: the sample of its training window, with its out-of-sample
predictions on the holdout rows, that tasks/train.py logged next to the model. The holdout value of
the gate metric recorded at training is the baseline for measured performance once labels arrive.
Feature drift reads every logged row of the window; prediction drift and measured performance read
only the rows the champion itself scored (`scored_by`).
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import mlflow
import pandas as pd
from mlflow import MlflowClient
from prefect import get_run_logger, runtime, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from tasks.alerts import last_alert_at, record_alert
from tasks.drift import DriftResult, drift_report, performance_check
from tasks.drift_null import NULL_ARTIFACT, NullThresholds, calibrate
from tasks.drift_policy import DriftDecision, decide_drift
from tasks.drift_summary import save_report_html, summary_markdown
from tasks.inference_log import CONFIDENCE, MODEL_VERSION, PREDICTION, PROBABILITIES, InferenceLog
from tasks.notify import artifact_key, emit_drift_event, notify_people
from tasks.registry import TAG_FLOW_RUN, VersionRef, ensure_experiment
from tasks.settings import TimeWindow, TrainingConfig
from tasks.stores import DataStore, Stores

REFERENCE_ARTIFACT = "reference/reference.parquet"


@dataclass(frozen=True)
class Reference:
    frame: pd.DataFrame
    model_version: str
    run_id: str
    holdout_value: float
    null: NullThresholds


@dataclass(frozen=True)
class MonitoringOutcome:
    model_name: str
    model_version: str | None
    window: TimeWindow
    as_of: datetime
    decision: DriftDecision
    result: DriftResult | None
    report_path: str | None
    event_id: str | None = None
    event_at: datetime | None = None

    @property
    def status(self) -> str:
        return self.decision.status


def days_before(as_of: datetime, days: int) -> TimeWindow:
    """The `days` whole days before the day of `as_of`, as a half-open window of dates (a retrain window)."""
    end = as_of.astimezone(UTC).date()
    return TimeWindow(start=end - timedelta(days=days), end=end)


def check_bounds(as_of: datetime, days: int) -> tuple[pd.Timestamp, pd.Timestamp, TimeWindow]:
    """What a drift check at `as_of` reads: the instants [as_of - days, as_of), and the days they touch.

    A check at 18:00 sees that day's rows before 18:00; the window of dates only labels the check.
    """
    end = pd.Timestamp(as_of).tz_convert(UTC)
    start = end - pd.Timedelta(days=days)
    last_day = end.date() if end == end.normalize() else end.date() + timedelta(days=1)
    return start, end, TimeWindow(start=start.date(), end=last_day)


def scored_by(current: pd.DataFrame, model_version: str, min_rows: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(for drift, for performance): the window with predictions kept only where `model_version` scored.

    The inputs do not depend on which model scored them, so every row counts for feature drift. The
    predictions and their quality are the champion's own: rows an earlier version scored must not
    count against it, or for a window's length after a promotion they re-trigger retraining. With
    fewer than `min_rows` of its own rows, the prediction is left out of the drift report (not
    measured, rather than judged on a handful); performance applies its own labelled-row minimum.
    """
    if PREDICTION not in current.columns or MODEL_VERSION not in current.columns:
        return current, current
    others = current[MODEL_VERSION].astype(str) != str(model_version)
    own = current.copy()
    prediction_columns = [c for c in (PREDICTION, CONFIDENCE, PROBABILITIES) if c in own.columns]
    for column in prediction_columns:
        own[column] = own[column].where(~others)
    if int((~others).sum()) < min_rows:
        return own.drop(columns=prediction_columns), own
    return own, own


@task(cache_policy=NO_CACHE)
def load_reference(config: TrainingConfig, champion: VersionRef) -> Reference:
    """The champion's reference sample, its drift null, and the holdout value of the gate metric.

    A model trained before the null was stored with it gets one calibrated here from its reference
    (the same function, a few seconds), so every check judges against chance.
    """
    if champion.run_id is None:
        raise ValueError(f"{champion.uri} has no run: it was not trained by driftloop, so it has no reference")
    client = MlflowClient()
    stored = {a.path for a in client.list_artifacts(champion.run_id, "reference")}
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(
            run_id=champion.run_id, artifact_path=REFERENCE_ARTIFACT, dst_path=tmp
        )
        frame = pd.read_parquet(path)
    if NULL_ARTIFACT in stored:
        null = NullThresholds.from_dict(mlflow.artifacts.load_dict(f"runs:/{champion.run_id}/{NULL_ARTIFACT}"))
    else:
        null = calibrate(frame, config)
    metrics = client.get_run(champion.run_id).data.metrics
    holdout = metrics.get(f"holdout_{config.gate.metric}", math.nan)
    return Reference(
        frame=frame, model_version=champion.version, run_id=champion.run_id, holdout_value=holdout, null=null
    )


@task(cache_policy=NO_CACHE)
def recent_window(config: TrainingConfig, stores: Stores, as_of: datetime) -> tuple[pd.DataFrame, TimeWindow]:
    """The inference log's rows in the check window, delayed labels joined where they arrived."""
    start, end, window = check_bounds(as_of, config.monitoring.window_days)
    log = InferenceLog(DataStore(stores.data_uri), config)
    frame = log.read(start, end)
    get_run_logger().info("inference log %s: %d rows", window.label(), len(frame))
    return frame, window


@task(cache_policy=NO_CACHE)
def check_drift(
    config: TrainingConfig,
    reference: Reference,
    current: pd.DataFrame,
    window: TimeWindow,
    as_of: datetime,
    stores: Stores,
) -> MonitoringOutcome:
    """Report, decide, and publish: HTML report, Prefect artifacts, numbers in MLflow."""
    logger = get_run_logger()
    store = DataStore(stores.data_uri)
    for_drift, for_performance = scored_by(current, reference.model_version, config.monitoring.min_rows)
    result, snapshot = drift_report(reference.frame, for_drift, config, null=reference.null)
    performance = performance_check(for_performance, config, reference.holdout_value) if len(current) else None
    result = dataclasses.replace(result, performance=performance)
    decision = decide_drift(result, config.monitoring, last_alert_at(store, config.name, config.model_name), as_of)

    report_path = None
    if snapshot is not None:
        report_path = save_report_html(snapshot, store, config.name, f"drift-{config.model_name}-{window.label()}")
        create_link_artifact(
            link=store.uri(report_path),
            link_text=f"Evidently drift report {window.label()}",
            key=artifact_key("drift-report", config.model_name),
        )
    title = f"Drift check: {config.model_name} v{reference.model_version}, {window.label()}"
    markdown = summary_markdown(result, decision, store.uri(report_path) if report_path else None, title)
    create_markdown_artifact(markdown, key=artifact_key("drift", config.model_name), description=title)
    _log_to_mlflow(stores, config, reference, result, decision, window, as_of, markdown, report_path)
    logger.info("drift check %s: %s (%s)", window.label(), decision.status, "; ".join(decision.reasons))
    return MonitoringOutcome(
        model_name=config.model_name,
        model_version=reference.model_version,
        window=window,
        as_of=as_of,
        decision=decision,
        result=result,
        report_path=report_path,
    )


def _log_to_mlflow(
    stores: Stores,
    config: TrainingConfig,
    reference: Reference,
    result: DriftResult,
    decision: DriftDecision,
    window: TimeWindow,
    as_of: datetime,
    markdown: str,
    report_path: str | None,
) -> None:
    """One run per check in `<model>-monitoring`, so drift can be followed over time."""
    experiment_id = ensure_experiment(stores, f"{config.model_name}-monitoring")
    flow_run = {TAG_FLOW_RUN: str(runtime.flow_run.id or "")}  # at creation: a killed check can be found
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"drift {window.label()}", tags=flow_run):
        mlflow.set_tags(
            {
                "driftloop.status": decision.status,
                "driftloop.window": window.label(),
                "driftloop.model_version": reference.model_version,
                "driftloop.as_of": as_of.isoformat(),
            }
        )
        metrics = {k: v for k, v in result.metrics().items() if isinstance(v, int | float) and math.isfinite(v)}
        mlflow.log_metrics(metrics, timestamp=int(as_of.timestamp() * 1000))
        mlflow.log_dict(result.to_dict(), "drift/result.json")
        mlflow.log_text(markdown, "drift/summary.md")
        if report_path is not None:  # read through the store: a report in an object store is attached too
            name = report_path.rsplit("/", 1)[-1]
            mlflow.log_text(DataStore(stores.data_uri).read_bytes(report_path).decode("utf-8"), f"drift/{name}")


def retrain_window(config: TrainingConfig, as_of: datetime, labelled_until: date | None = None) -> TimeWindow:
    """The trailing `retrain_window_days` a drift retrain trains on: up to as_of, or to where labels end."""
    end = as_of if labelled_until is None else datetime.combine(labelled_until, datetime.min.time(), tzinfo=UTC)
    return days_before(min(end, as_of), config.monitoring.retrain_window_days)


@task(cache_policy=NO_CACHE)
def raise_alert(
    config: TrainingConfig, outcome: MonitoringOutcome, stores: Stores, labelled_until: date | None = None
) -> tuple[str, datetime] | None:
    """Emit the drift event (it starts retraining), remember the alert for the cool-down, tell people."""
    store = DataStore(stores.data_uri)
    retrain = retrain_window(config, outcome.as_of, labelled_until)
    payload = {
        "model": config.model_name,
        "model_version": outcome.model_version,
        "checked_window": outcome.window.model_dump(mode="json"),
        "retrain_window": retrain.model_dump(mode="json"),
        "reasons": outcome.decision.reasons,
        "scores": outcome.result.metrics() if outcome.result else {},
        "report": store.uri(outcome.report_path) if outcome.report_path else None,
    }
    emitted = emit_drift_event(model_name=config.model_name, payload=payload)
    event_id = emitted[0] if emitted else None
    record_alert(store, config.name, config.model_name, outcome.as_of, {**payload, "event_id": event_id})
    notify_people(
        title=f"driftloop: drift on {config.model_name}",
        body="\n".join([f"window {outcome.window.label()}", *outcome.decision.reasons, "retraining requested"]),
    )
    return emitted
