"""Scoring: a tiny real Pipeline on a real week of flights, loaded back from a real MLflow registry.

The registry is SQLite in the test's folder; MLflow's global URIs are restored afterwards so no
other test sees them. Tasks run through `.fn()` with the run logger disabled (no Prefect server).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking._model_registry import utils as registry_utils
from mlflow.tracking._tracking_service import utils as tracking_utils
from prefect.logging import disable_run_logger
from sklearn.pipeline import Pipeline

from tasks.artifacts import SKOPS_TRUSTED_TYPES, hash_tags
from tasks.inference_log import CONFIDENCE, PREDICTION, InferenceLog
from tasks.ingest import LandedBatch, frame_to_parquet_bytes, load_bundled
from tasks.model import build_pipeline, features_and_target
from tasks.registry import VersionRef, get_version
from tasks.score import ScoringResult, record_labels, score, score_frame
from tasks.settings import TimeWindow, TrainingConfig, load_config
from tasks.stores import DataStore, Stores
from tasks.validate import BatchRejected, build_schema, validate

WEEK = TimeWindow(start=date(2013, 1, 1), end=date(2013, 1, 8))
KEY = ["time_hour", "carrier", "flight", "origin"]


@pytest.fixture(scope="module")
def flights_config(repo_root: Path) -> TrainingConfig:
    return load_config(repo_root / "configs" / "flights.yaml")


@pytest.fixture(scope="module")
def week(flights_config: TrainingConfig) -> pd.DataFrame:
    """A real week (~5,900 flights), through the training schema."""
    return build_schema(flights_config).validate(load_bundled(flights_config, WEEK), lazy=True)


@pytest.fixture(scope="module")
def pipeline(flights_config: TrainingConfig, week: pd.DataFrame) -> Pipeline:
    x, y = features_and_target(flights_config, week)
    return build_pipeline(flights_config, {"max_iter": 15, "max_leaf_nodes": 8}).fit(x, y)


@pytest.fixture
def stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Stores:
    monkeypatch.setenv("DRIFTLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DRIFTLOOP_DATA_URI", raising=False)
    return Stores.from_env()


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """MLflow pointed at a SQLite store of this test's own; the previous URIs come back after."""
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(tracking_utils, "_tracking_uri", tracking_utils._tracking_uri)
    monkeypatch.setattr(registry_utils, "_registry_uri", registry_utils._registry_uri)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    yield uri
    mlflow.set_tracking_uri(None)  # also unsets MLFLOW_TRACKING_URI; monkeypatch restores the rest


def register(pipeline: Pipeline, name: str, artifacts: Path) -> VersionRef:
    experiment = mlflow.create_experiment(f"score-test-{name}", artifact_location=artifacts.as_uri())
    with mlflow.start_run(experiment_id=experiment):
        info = mlflow.sklearn.log_model(
            pipeline,
            name="model",
            serialization_format="skops",
            skops_trusted_types=SKOPS_TRUSTED_TYPES,
            pip_requirements=[],
        )
    version = mlflow.register_model(info.model_uri, name, tags=hash_tags(info.model_uri))
    return get_version(name, str(version.version))


def unlabelled(config: TrainingConfig, frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=[config.target, *config.leakage])


# --- score_frame: pure ----------------------------------------------------------------------


def test_binary_scores_are_probabilities_one_per_row(flights_config, week, pipeline):
    sample = week.iloc[::7]

    predictions, confidence = score_frame(pipeline, sample, flights_config)

    assert confidence is None
    assert predictions.name == PREDICTION
    assert predictions.index.equals(sample.index)
    assert predictions.dtype == np.float64
    assert predictions.between(0, 1).all()
    assert predictions.nunique() > 10  # a real model, not a constant
    x, _ = features_and_target(flights_config, sample)
    np.testing.assert_allclose(predictions, pipeline.predict_proba(x)[:, 1])


def test_score_frame_ignores_extra_columns_and_names_missing_features(flights_config, week, pipeline):
    sample = week.head(50)
    shuffled = sample[list(reversed(sample.columns))].assign(unrelated=1)

    np.testing.assert_allclose(
        score_frame(pipeline, shuffled, flights_config)[0], score_frame(pipeline, sample, flights_config)[0]
    )
    with pytest.raises(ValueError, match=r"features missing: \['temp', 'dest'\]"):
        score_frame(pipeline, sample.drop(columns=["temp", "dest"]), flights_config)


def test_multiclass_scores_are_labels_with_their_probability(make_config, make_frame):
    config = make_config("multiclass")
    frame = make_frame("multiclass", rows=300)
    model = build_pipeline(config, {"max_iter": 10}).fit(*features_and_target(config, frame))

    labels, confidence = score_frame(model, frame, config)

    assert confidence is not None
    assert confidence.name == CONFIDENCE
    proba = model.predict_proba(frame[config.features.all])
    assert labels.tolist() == list(model.classes_[proba.argmax(axis=1)])
    np.testing.assert_allclose(confidence, proba.max(axis=1))
    assert (confidence >= 1 / 3).all()
    assert (confidence <= 1).all()
    assert (labels == frame["y"]).mean() > 0.6  # learnt something


def test_regression_scores_are_the_predicted_values(make_config, make_frame):
    config = make_config("regression")
    frame = make_frame("regression", rows=200)
    model = build_pipeline(config, {"max_iter": 10}).fit(*features_and_target(config, frame))

    values, confidence = score_frame(model, frame, config)

    assert confidence is None
    np.testing.assert_allclose(values, model.predict(frame[config.features.all]))


# --- the score task, with the model from a real registry --------------------------------------


def test_score_loads_the_registered_champion_and_logs_the_batch(
    flights_config, week, pipeline, stores, registry, tmp_path
):
    champion = register(pipeline, flights_config.model_name, tmp_path / "artifacts")
    batch = unlabelled(flights_config, week)

    with disable_run_logger():
        result = score.fn(config=flights_config, frame=batch, batch_id="week-1", champion=champion, stores=stores)

    assert isinstance(result, ScoringResult)
    assert (result.batch_id, result.rows, result.model_name, result.model_version) == (
        "week-1",
        len(week),
        "flights-late-arrival",
        "1",
    )
    assert result.log_path.endswith("/inference/flights/batch_id=week-1/part-0.parquet")
    store = DataStore(stores.data_uri)
    assert store.find("inference", "flights") == [result.log_path]
    log = InferenceLog(store, flights_config).read()
    assert len(log) == len(week)
    assert set(log["batch_id"]) == {"week-1"}
    assert set(log["model_version"]) == {"1"}
    assert (log["scored_at"] == pd.Timestamp(result.scored_at)).all()
    # the model that scored is the registered one: same numbers as the pipeline we logged
    expected = score_frame(pipeline, week, flights_config)[0]
    by_key = log.merge(week[KEY].assign(expected=expected.to_numpy()), on=KEY, validate="one_to_one")
    np.testing.assert_allclose(by_key[PREDICTION], by_key["expected"])

    # labels arrive later, for part of the week, through the task
    truth = week[[*KEY, "late"]].head(1000)
    with disable_run_logger():
        record_labels.fn(config=flights_config, labels=truth, batch_id="labels-1", stores=stores)
    joined = InferenceLog(store, flights_config).read()
    assert joined["late"].notna().sum() == 1000
    assert len(joined) == len(week)


def test_score_refuses_a_missing_or_foreign_champion(flights_config, week, stores):
    batch = unlabelled(flights_config, week.head(20))

    with disable_run_logger(), pytest.raises(ValueError, match="no champion"):
        score.fn(config=flights_config, frame=batch, batch_id="b", champion=None, stores=stores)
    other = VersionRef(name="another-model", version="1", run_id=None, tags={})
    with disable_run_logger(), pytest.raises(ValueError, match="not a version of this config's model"):
        score.fn(config=flights_config, frame=batch, batch_id="b", champion=other, stores=stores)
    assert DataStore(stores.data_uri).find("inference", "flights") == []


# --- validate(require_target=False): batches to score carry no labels ---------------------------


def land(stores: Stores, name: str, frame: pd.DataFrame) -> LandedBatch:
    path, digest = DataStore(stores.data_uri).land("flights", name, frame_to_parquet_bytes(frame))
    return LandedBatch(path=path, digest=digest, name=name)


def run_validate(config: TrainingConfig, batch: LandedBatch, stores: Stores, **kwargs) -> pd.DataFrame:
    with disable_run_logger():
        return validate.fn(config=config, batches=[batch], window=WEEK, stores=stores, **kwargs)


def test_an_unlabelled_batch_validates_for_scoring_with_its_key_columns(flights_config, stores):
    raw = load_bundled(flights_config, WEEK)
    batch = land(stores, "to-score.parquet", unlabelled(flights_config, raw))

    frame = run_validate(flights_config, batch, stores, require_target=False)

    assert list(frame.columns) == [
        "time_hour",
        "carrier",
        "flight",
        "origin",
        *[c for c in flights_config.features.all if c not in KEY],
    ]
    assert len(frame) == len(raw)
    assert str(frame["time_hour"].dtype) == "datetime64[ns, UTC]"
    with pytest.raises(BatchRejected, match="column 'late': column is missing"):
        run_validate(flights_config, land(stores, "again.parquet", unlabelled(flights_config, raw)), stores)


def test_a_scoring_batch_may_carry_partial_labels_but_not_wrong_ones(flights_config, stores):
    raw = load_bundled(flights_config, WEEK).drop(columns=flights_config.leakage)
    partial = raw.assign(late=raw["late"].where(raw.index % 2 == 0))  # half not known yet
    frame = run_validate(flights_config, land(stores, "partial.parquet", partial), stores, require_target=False)
    assert frame.columns[-1] == "late"
    assert frame["late"].isna().sum() == (raw.index % 2 == 1).sum()

    unknown = raw.assign(late=np.nan)  # the column is there, no label yet: no mean bound applies
    assert len(run_validate(flights_config, land(stores, "none.parquet", unknown), stores, require_target=False)) > 0

    wrong = partial.copy()
    wrong.loc[[0, 2], "late"] = 3
    with pytest.raises(BatchRejected, match=r"column 'late': isin\(\[0, 1\]\), 2 row\(s\)"):
        run_validate(flights_config, land(stores, "wrong.parquet", wrong), stores, require_target=False)


def test_a_scoring_batch_without_its_row_key_is_rejected(flights_config, stores):
    raw = unlabelled(flights_config, load_bundled(flights_config, WEEK)).drop(columns=["flight"])

    with pytest.raises(BatchRejected, match="column 'flight': column is missing"):
        run_validate(flights_config, land(stores, "keyless.parquet", raw), stores, require_target=False)
