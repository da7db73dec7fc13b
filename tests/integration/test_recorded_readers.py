"""What the loop reads back from MLflow: a monitoring reference, and the decision a triggered run recorded.

Real SQLite registry, real logged models (tests/candidates.py); no Prefect needed.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from prefect.logging import disable_run_logger

from tasks.evaluate import Fitted, judge
from tasks.gate import Check, GateReport
from tasks.model import features_and_target, fit_pipeline
from tasks.monitor import REFERENCE_ARTIFACT, load_reference
from tasks.promote import apply_decision
from tasks.registry import TAG_FITTED_UNTIL, VersionRef
from tasks.replay import decision_of
from tasks.settings import TrainingConfig
from tasks.split import time_split
from tasks.stores import DataStore
from tests.candidates import logged_candidate, registry_of_its_own
from tests.unit.conftest import config_dict, synthetic_frame

NAME = "readers-model"


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    return registry_of_its_own(tmp_path, monkeypatch, "readers")


@pytest.fixture
def config() -> TrainingConfig:
    return TrainingConfig.model_validate({**config_dict("binary"), "model_name": NAME})


def gate(passed: bool) -> GateReport:
    why = "improvement 0.0100 over champion" if passed else "worse by 0.0100 than champion"
    return GateReport(
        metric="roc_auc",
        passed=passed,
        checks=[Check("beats champion", passed, why)],
        challenger_value=0.7 if passed else 0.68,
        champion_value=0.69,
        champion_version=None,
    )


def test_decision_of_reads_the_version_its_reason_registered(client, config, tmp_path) -> None:  # type: ignore[no-untyped-def]
    for reason, passed in (("drift event A", True), ("drift event B", False)):
        candidate = logged_candidate(NAME)
        tagged = dataclasses.replace(candidate, version_tags={**candidate.version_tags, "driftloop.reason": reason})
        champion = client.get_registered_model(NAME).aliases.get("champion") if passed is False else None
        apply_decision(client, tagged, gate(passed), compared_with=champion and str(champion), locks=tmp_path)

    promoted, why = decision_of(config, "drift event A")
    rejected, why_not = decision_of(config, "drift event B")

    assert promoted is True
    assert rejected is False
    assert why != why_not
    assert "worse by 0.0100" in why_not
    assert decision_of(config, "drift event C") == (None, "the triggered run registered no version")


def test_load_reference_returns_the_logged_sample_and_the_holdout_metric(client, config, tmp_path) -> None:  # type: ignore[no-untyped-def]
    sample = pd.DataFrame(
        {
            "ts": pd.to_datetime(["2024-01-01", "2024-01-02"], utc=True),
            "x1": [1.0, 2.0],
            "c1": ["a", "b"],
            "prediction": [None, 0.3],
        }
    )
    path = tmp_path / "reference.parquet"
    sample.to_parquet(path, index=False)
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(path), artifact_path=REFERENCE_ARTIFACT.rsplit("/", 1)[0])
        mlflow.log_metric("holdout_roc_auc", 0.71)
    champion = VersionRef(name=NAME, version="4", run_id=run.info.run_id, tags={})

    with disable_run_logger():
        reference = load_reference.fn(config=config, champion=champion)
        with pytest.raises(ValueError, match="has no run: it was not trained by driftloop"):
            load_reference.fn(config=config, champion=dataclasses.replace(champion, run_id=None))

    pd.testing.assert_frame_equal(reference.frame, sample)
    assert (reference.model_version, reference.run_id, reference.holdout_value) == ("4", run.info.run_id, 0.71)
    # a run that stored no null (trained before calibration) gets one from its reference sample
    assert (reference.null.reference_days, reference.null.window_days) == (2, config.monitoring.window_days)


def test_a_drift_report_in_an_object_store_is_attached_to_its_monitoring_run(
    client, config, tmp_path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """The data store is fsspec's in-memory filesystem: no local path exists for the report."""
    from datetime import UTC, datetime

    from tasks.drift import drift_report
    from tasks.drift_null import calibrate
    from tasks.drift_policy import DriftDecision
    from tasks.drift_summary import save_report_html
    from tasks.monitor import Reference, _log_to_mlflow
    from tasks.settings import TimeWindow
    from tasks.stores import DataStore, Stores

    uri = mlflow.get_tracking_uri()
    stores = Stores.from_env(
        {
            "DRIFTLOOP_HOME": str(tmp_path),
            "DRIFTLOOP_DATA_URI": "memory://driftloop-report-test",
            "DRIFTLOOP_MLFLOW_TRACKING_URI": uri,
        }
    )

    frame = synthetic_frame("binary", rows=300)
    result, snapshot = drift_report(frame, frame, config)  # a real Evidently snapshot
    report_path = save_report_html(snapshot, DataStore(stores.data_uri), config.name, "drift-test")
    assert not Path(report_path).exists()  # nothing on the local disk to attach by path
    reference = Reference(frame=frame, model_version="1", run_id="r", holdout_value=0.7, null=calibrate(frame, config))
    decision = DriftDecision("no_drift", retrain=False, reasons=[])
    window = TimeWindow(start="2024-01-01", end="2024-01-08")

    _log_to_mlflow(
        stores,
        config,
        reference,
        result,
        decision,
        window,
        datetime(2024, 1, 8, tzinfo=UTC),
        "# s",
        report_path,
    )

    experiment = client.get_experiment_by_name(f"{config.model_name}-monitoring")
    (run,) = client.search_runs([experiment.experiment_id])
    attached = Path(client.download_artifacts(run.info.run_id, "drift/drift-test.html", str(tmp_path)))
    assert attached.read_bytes() == DataStore(stores.data_uri).read_bytes(report_path)
    assert attached.read_text().lstrip().lower().startswith("<!doctype html")


def test_a_champion_fitted_on_every_row_of_the_holdout_is_not_comparable_and_nothing_crashes(
    client, config, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    # A champion refitted on its whole window, judged again on that same window: no row is new to
    # both models. The evaluation must say "not comparable" (the gate rejects), not fail on zero rows.
    frame = synthetic_frame("binary", rows=400, days=31)
    splits = time_split(frame, config.timestamp, config.split)
    challenger = fit_pipeline(config, {"max_iter": 20}, *features_and_target(config, splits.train))
    with mlflow.start_run() as run:
        pass
    window = config.window
    champion = VersionRef(
        name=NAME,
        version="1",
        run_id=run.info.run_id,
        tags={"driftloop.window": window.label(), TAG_FITTED_UNTIL: pd.Timestamp(window.end, tz="UTC").isoformat()},
    )
    fitted = Fitted.of_splits(window, splits.holdout_start)
    evaluation = judge(
        config, DataStore((tmp_path / "data").as_uri()), challenger, fitted, lambda: splits.holdout, champion
    )
    assert evaluation.champion_error is not None
    assert "not comparable: 0 of the" in evaluation.champion_error
    assert evaluation.champion is None
    assert evaluation.holdout_rows == len(splits.holdout)  # the challenger reported on its own holdout
    assert math.isfinite(evaluation.challenger.overall["roc_auc"])
