"""Scoring and monitoring on real 2013 flights, under Prefect's test harness.

One champion is trained for the module (Jan-Feb); each test then scores and checks what it
needs. Scoring is idempotent per batch, so tests may score the same window again safely.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml
from prefect import flow
from prefect.settings import PREFECT_API_URL

from flows.monitoring import monitoring
from flows.scoring import scoring
from flows.training import training
from tasks.alerts import last_alert_at
from tasks.drift_policy import DriftDecision
from tasks.inference_log import PREDICTION, REQUEST_ID, InferenceLog
from tasks.ingest import load_bundled
from tasks.monitor import MonitoringOutcome, raise_alert
from tasks.notify import DRIFT_EVENT
from tasks.settings import TimeWindow, TrainingConfig
from tasks.stores import DataStore, Stores
from tests.flows.conftest import with_changes
from tests.serving.conftest import records_for_requests, start_service
from tests.shifts import february_moved_to_june_with_summer_weather

pytestmark = pytest.mark.flow

FEBRUARY = TimeWindow(start="2013-02-01", end="2013-03-01")
FIRST_WEEK_OF_MARCH = TimeWindow(start="2013-03-01", end="2013-03-08")
# The four weeks after the champion's window (Jan-Feb): rows it never saw, from the same season.
MARCH = TimeWindow(start="2013-03-01", end="2013-03-29")


@pytest.fixture(scope="module")
def loop_home(tmp_path_factory: pytest.TempPathFactory, flights_config: TrainingConfig) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("loop") / "home"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DRIFTLOOP_HOME", str(home))
        assert training(config=flights_config).outcome == "promoted"
        yield home


def inference_log(config: TrainingConfig) -> InferenceLog:
    return InferenceLog(DataStore(Stores.from_env().data_uri), config)


def drift_events(model_name: str, since: datetime) -> list[dict[str, Any]]:
    """Events as the Prefect server stored them (delivery is asynchronous: poll a little)."""
    body = {
        "filter": {"event": {"name": [DRIFT_EVENT]}, "occurred": {"since": since.isoformat()}},
        "limit": 50,
    }
    for _ in range(30):
        response = httpx.post(f"{PREFECT_API_URL.value()}/events/filter", json=body, timeout=10)
        response.raise_for_status()
        events = [e for e in response.json()["events"] if e["resource"]["prefect.resource.name"] == model_name]
        if events:
            return events
        time.sleep(1)
    return []


def test_scoring_logs_predictions_and_joins_delayed_labels(loop_home: Path, flights_config: TrainingConfig) -> None:
    february = scoring(config=flights_config, window=FEBRUARY)
    again = scoring(config=flights_config, window=FEBRUARY)  # re-scoring replaces, never duplicates
    scoring(config=flights_config, window=FIRST_WEEK_OF_MARCH, labels_window=FEBRUARY)

    log = inference_log(flights_config)
    feb = log.read(pd.Timestamp("2013-02-01", tz="UTC"), pd.Timestamp("2013-03-01", tz="UTC"))
    march = log.read(pd.Timestamp("2013-03-01", tz="UTC"), pd.Timestamp("2013-03-08", tz="UTC"))
    assert len(february) == len(again) == 1
    assert len(feb) == february[0].rows > 20_000
    assert set(feb["model_version"]) == {"1"}
    assert feb[PREDICTION].between(0, 1).all()
    assert feb[flights_config.target].notna().all()  # February's labels arrived with March's batch
    assert march[flights_config.target].isna().all()  # March's have not arrived yet
    assert 0.1 < feb[flights_config.target].mean() < 0.4


def test_monitoring_a_quiet_window_emits_no_event(loop_home: Path, flights_config: TrainingConfig) -> None:
    """Out of sample: the weeks after the training window, judged by Evidently's default distances.

    The calibrated null calls March drift against January-February (its destinations and weather
    moved further than four weeks of the reference ever do), which is true; this test is the quiet
    path, so it fixes the thresholds a user who kept Evidently's defaults would have.
    """
    scoring(config=flights_config, window=MARCH, labels_window=MARCH)
    started = datetime.now(UTC)
    evidently_defaults = with_changes(
        flights_config, monitoring={"column_threshold": 0.1, "drifted_share": 0.5, "prediction_threshold": 0.1}
    )

    outcome = monitoring(config=evidently_defaults, as_of=datetime(2013, 3, 29, tzinfo=UTC))

    assert outcome.status == "no_drift", outcome.decision.reasons
    assert outcome.event_id is None
    assert outcome.result is not None
    assert outcome.result.rows_current > 20_000
    assert outcome.window.label() == MARCH.label()
    assert outcome.result.performance is not None  # labels were there: quality was measured
    assert outcome.result.performance.labelled_rows == outcome.result.rows_current
    assert outcome.report_path is not None
    assert Path(outcome.report_path).read_text().lstrip().lower().startswith("<!doctype html")
    assert drift_events(flights_config.model_name, started) == []


@pytest.fixture
def shifted_batches(tmp_path: Path, flights_config: TrainingConfig) -> Path:
    """February's flights moved to June with summer weather injected, as a CSV batch."""
    frame = february_moved_to_june_with_summer_weather(flights_config)
    folder = tmp_path / "incoming"
    folder.mkdir()
    frame.to_csv(folder / "2013-06-shifted.csv", index=False)
    return folder


def test_monitoring_a_shifted_window_emits_the_event_once(
    loop_home: Path, flights_config: TrainingConfig, shifted_batches: Path
) -> None:
    files = with_changes(flights_config, source={"kind": "files", "path": str(shifted_batches)})
    scoring(config=files)
    as_of = datetime(2013, 6, 30, tzinfo=UTC)
    started = datetime.now(UTC) - timedelta(seconds=1)

    first = monitoring(config=flights_config, as_of=as_of)
    second = monitoring(config=flights_config, as_of=as_of + timedelta(hours=1))

    assert first.status == "drift", first.decision.reasons
    assert first.event_id is not None
    assert any("temp" in reason or "share" in reason for reason in first.decision.reasons)
    events = drift_events(flights_config.model_name, started)
    assert [e["id"] for e in events] == [first.event_id]
    payload = events[0]["payload"]
    assert payload["retrain_window"] == {"start": "2013-05-02", "end": "2013-06-30"}  # 59 days to as_of
    assert payload["checked_window"] == {"start": "2013-06-02", "end": "2013-06-30"}  # 28 days
    assert last_alert_at(DataStore(Stores.from_env().data_uri), flights_config.name, flights_config.model_name) == as_of

    assert second.status == "cooldown"  # the same alert an hour later starts nothing
    assert second.event_id is None
    assert len(drift_events(flights_config.model_name, started)) == 1


def test_raise_alert_emits_the_event_with_the_retrain_window_and_starts_the_cooldown(
    loop_home: Path, flights_config: TrainingConfig
) -> None:
    """The alert a drift decision raises: the event the trigger waits for, and the record the cool-down reads."""
    config = with_changes(flights_config, model_name="flights-alert-only")  # its own alerts: no other test's cool-down
    as_of = datetime(2013, 7, 1, 6, tzinfo=UTC)
    outcome = MonitoringOutcome(
        model_name=config.model_name,
        model_version="1",
        window=TimeWindow(start="2013-06-03", end="2013-07-01"),
        as_of=as_of,
        decision=DriftDecision("drift", retrain=True, reasons=["feature drift: test"]),
        result=None,
        report_path=None,
    )
    started = datetime.now(UTC)

    @flow
    def alerting() -> tuple[str, datetime] | None:
        return raise_alert(
            config=config, outcome=outcome, stores=Stores.from_env(), labelled_until=as_of.date() - timedelta(days=10)
        )

    emitted = alerting()

    assert emitted is not None
    (event,) = drift_events(config.model_name, started)
    assert event["id"] == emitted[0]
    retrain = event["payload"]["retrain_window"]
    assert retrain["end"] == "2013-06-21"  # where labels end, not as_of: nothing unlabelled to train on
    assert retrain["start"] == str(datetime(2013, 6, 21).date() - timedelta(days=config.monitoring.retrain_window_days))
    assert event["payload"]["reasons"] == ["feature drift: test"]
    assert last_alert_at(DataStore(Stores.from_env().data_uri), config.name, config.model_name) == as_of


def test_monitoring_reads_what_the_online_service_answered(
    loop_home: Path, flights_config: TrainingConfig, tmp_path: Path
) -> None:
    """Rows answered over HTTP are production traffic: the next drift check judges exactly them."""
    april = TimeWindow(start="2013-04-01", end="2013-04-29")
    rows = load_bundled(flights_config, april).drop_duplicates(subset=list(flights_config.validation.unique_key))
    rows = rows.sample(n=1200, random_state=0).sort_values(flights_config.timestamp)
    records = records_for_requests(flights_config, rows)
    config_path = tmp_path / "flights.yaml"
    raw = flights_config.model_dump(mode="json")
    raw["serving"] = {**raw["serving"], "log_flush_seconds": 0.2}
    config_path.write_text(yaml.safe_dump(raw))
    service = start_service(config_path, loop_home, tmp_path / "serve.log")
    try:
        for start in range(0, len(records), 400):
            answer = httpx.post(f"{service.url}/predict", json=records[start : start + 400], timeout=60)
            assert answer.status_code == 200, answer.text
    finally:
        service.stop()  # a graceful stop writes every answered row

    outcome = monitoring(config=flights_config, as_of=datetime(2013, 4, 29, tzinfo=UTC))

    assert outcome.result is not None, outcome.decision.reasons
    assert outcome.result.rows_current == len(records)
    assert outcome.model_version == answer.json()["model"]["version"]
    logged = inference_log(flights_config).read(
        pd.Timestamp("2013-04-01", tz="UTC"), pd.Timestamp("2013-04-29", tz="UTC")
    )
    assert logged[REQUEST_ID].notna().all()
