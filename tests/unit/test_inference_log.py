"""The inference log: append-only, one partition per batch, validated, labels joined late.

Real 2013 NYC flights (two January days, ~1,600 rows) through the shipped config, written to a
file:// data store in the test's own folder; synthetic frames for the multiclass and regression
shapes and for the pure label join.
"""

from __future__ import annotations

import math
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pandera.errors import SchemaErrors

from tasks.inference_log import (
    CONFIDENCE,
    PREDICTION,
    PROBABILITIES,
    REQUEST_ID,
    InferenceLog,
    join_labels,
    log_columns,
    log_schema,
)
from tasks.ingest import load_bundled
from tasks.settings import TimeWindow, TrainingConfig, load_config
from tasks.stores import DataStore
from tasks.validate import check_frame, select_window

TWO_DAYS = TimeWindow(start=date(2013, 1, 1), end=date(2013, 1, 3))
KEY = ["time_hour", "carrier", "flight", "origin"]
SCORED_AT = pd.Timestamp("2013-01-03 06:00", tz="UTC")


@pytest.fixture(scope="module")
def flights_config(repo_root: Path) -> TrainingConfig:
    return load_config(repo_root / "configs" / "flights.yaml")


@pytest.fixture(scope="module")
def flights_raw(flights_config: TrainingConfig) -> pd.DataFrame:
    return load_bundled(flights_config, TWO_DAYS)


@pytest.fixture(scope="module")
def scored_frame(flights_config: TrainingConfig, flights_raw: pd.DataFrame) -> pd.DataFrame:
    """What the scoring flow hands the log: validated without the target, keys kept."""
    validated, failures = check_frame(
        flights_config, flights_raw.drop(columns=[flights_config.target]), "two-days", require_target=False
    )
    assert failures == []
    return select_window(flights_config, validated, TWO_DAYS, require_target=False)


@pytest.fixture
def store(tmp_path: Path) -> DataStore:
    return DataStore((tmp_path / "data").as_uri())


@pytest.fixture
def log(store: DataStore, flights_config: TrainingConfig) -> InferenceLog:
    return InferenceLog(store, flights_config)


def predictions_for(frame: pd.DataFrame, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, len(frame))


def append(
    log: InferenceLog, frame: pd.DataFrame, batch_id: str, predictions=None, version: str = "3", scored_at=SCORED_AT
) -> str:
    preds = predictions_for(frame) if predictions is None else predictions
    return log.append(frame, preds, batch_id, "flights-late-arrival", version, scored_at)


def day(frame: pd.DataFrame, which: date) -> pd.DataFrame:
    return frame[frame["time_hour"].dt.date == which].reset_index(drop=True)


# --- join_labels: pure ------------------------------------------------------------------------


def small_log() -> pd.DataFrame:
    return pd.DataFrame(
        {"k": [1, 2, 3, 2], "ts": pd.to_datetime(["2024-01-01"] * 4, utc=True), "p": [0.1, 0.2, 0.3, 0.4]},
        index=[10, 11, 12, 13],
    )


def test_join_labels_matches_by_key_and_leaves_unlabelled_rows_null():
    labels = pd.DataFrame({"k": [3, 1, 99], "ts": pd.to_datetime(["2024-01-01"] * 3, utc=True), "y": [1, 0, 1]})

    joined = join_labels(small_log(), labels, ["k", "ts"], "y")

    assert list(joined.index) == [10, 11, 12, 13]  # the log's rows, order and index
    assert list(joined["p"]) == [0.1, 0.2, 0.3, 0.4]
    assert joined["y"].tolist()[0] == 0
    assert joined["y"].tolist()[2] == 1
    assert joined["y"].isna().tolist() == [False, True, False, True]


def test_join_labels_never_multiplies_rows_and_the_last_duplicate_wins():
    labels = pd.DataFrame({"k": [2, 2, 2, 1], "ts": pd.to_datetime(["2024-01-01"] * 4, utc=True), "y": [0, 0, 1, 1]})

    joined = join_labels(small_log(), labels, ["k", "ts"], "y")

    assert len(joined) == 4
    assert joined.loc[[10, 11, 13], "y"].tolist() == [1, 1, 1]  # k=2 labelled 0, 0, then 1: the 1 wins
    assert pd.isna(joined.loc[12, "y"])


def test_join_labels_matches_timestamps_of_another_unit_or_as_text():
    log = small_log()
    micro = pd.DataFrame({"k": [1], "ts": pd.to_datetime(["2024-01-01"], utc=True).astype("datetime64[us, UTC]")})
    text = pd.DataFrame({"k": [3], "ts": ["2024-01-01T00:00:00Z"]})
    labels = pd.concat([micro.assign(y=1), text.assign(y=0)], ignore_index=True)

    joined = join_labels(log, labels, ["k", "ts"], "y")

    assert joined["y"].tolist()[0] == 1
    assert joined["y"].tolist()[2] == 0


def test_join_labels_ignores_null_keys_and_replaces_an_existing_target():
    log = small_log().assign(y=7.0)
    labels = pd.DataFrame({"k": [None, 1.0], "ts": pd.to_datetime(["2024-01-01"] * 2, utc=True), "y": [1, 0]})

    joined = join_labels(log, labels, ["k", "ts"], "y")

    assert list(joined.columns) == ["k", "ts", "p", "y"]
    assert joined["y"].tolist()[0] == 0
    assert joined["y"].isna().sum() == 3  # the old 7.0 is gone, a null key labels nothing


def test_join_labels_without_a_key_raises():
    labels = pd.DataFrame({"k": [1], "y": [1]})

    with pytest.raises(ValueError, match=r"needs validation\.unique_key to join labels"):
        join_labels(small_log(), labels, [], "y")


# --- append and read ----------------------------------------------------------------------------


def test_append_writes_one_hive_partition_that_reads_back_identical(log, store, scored_frame, flights_config):
    preds = predictions_for(scored_frame)

    path = append(log, scored_frame, "b-0001", preds)

    assert path.endswith("/inference/flights/batch_id=b-0001/part-0.parquet")
    assert store.find("inference", "flights") == [path]
    back = log.read()
    assert list(back.columns) == [*log_columns(flights_config), "late"]
    assert len(back) == len(scored_frame) > 1000
    assert (back["batch_id"] == "b-0001").all()
    assert (back["model_name"] == "flights-late-arrival").all()
    assert (back["model_version"] == "3").all()
    assert (back["scored_at"] == SCORED_AT).all()
    assert str(back["time_hour"].dtype) == "datetime64[ns, UTC]"
    assert back["late"].isna().all()  # no labels yet
    expected = scored_frame.assign(**{PREDICTION: preds}).sort_values("time_hour", kind="stable")
    np.testing.assert_allclose(back[PREDICTION], expected[PREDICTION])
    pd.testing.assert_frame_equal(
        back[[*KEY, "distance", "dest"]], expected[[*KEY, "distance", "dest"]].reset_index(drop=True)
    )
    # hive style: the folder carries batch_id, so a plain dataset read sees each column once
    as_dataset = pd.read_parquet(Path(path).parents[1])
    assert len(as_dataset) == len(scored_frame)
    assert set(as_dataset["batch_id"].astype(str)) == {"b-0001"}


def test_reappending_a_batch_replaces_it(log, scored_frame):
    append(log, scored_frame, "b1", np.full(len(scored_frame), 0.2), version="3")
    first_day = day(scored_frame, date(2013, 1, 1))
    append(log, first_day, "b2", np.full(len(first_day), 0.5))

    later = SCORED_AT + timedelta(hours=1)
    append(log, scored_frame, "b1", np.full(len(scored_frame), 0.8), version="4", scored_at=later)

    back = log.read()
    assert log.batches() == ["b1", "b2"]
    assert len(back) == len(scored_frame)  # the first day, also in b2, counts once: its latest scoring
    assert (back["batch_id"] == "b1").all()
    assert (back[PREDICTION] == 0.8).all()
    assert (back["model_version"] == "4").all()


def test_rows_scored_twice_under_two_batch_ids_count_once_as_their_latest_scoring(log, scored_frame):
    first_day = day(scored_frame, date(2013, 1, 1))
    append(log, scored_frame, "whole-window", np.full(len(scored_frame), 0.2), version="3")
    append(log, first_day, "overlap", np.full(len(first_day), 0.9), version="4", scored_at=SCORED_AT + timedelta(1))

    back = log.read()

    assert len(back) == len(scored_frame)
    assert not back.duplicated(subset=["time_hour", "carrier", "flight", "origin"]).any()
    again = back[back["time_hour"] < pd.Timestamp("2013-01-02", tz="UTC")]
    assert (again["model_version"] == "4").all()
    assert (back.loc[back["time_hour"] >= pd.Timestamp("2013-01-02", tz="UTC"), "model_version"] == "3").all()


def test_read_returns_the_half_open_window_sorted(log, scored_frame):
    second, first = day(scored_frame, date(2013, 1, 2)), day(scored_frame, date(2013, 1, 1))
    append(log, second, "a-later-day")  # written first, sorts later
    append(log, first, "b-earlier-day")

    everything = log.read()
    assert everything["time_hour"].is_monotonic_increasing
    assert everything["batch_id"].iloc[0] == "b-earlier-day"

    boundary = pd.Timestamp("2013-01-02", tz="UTC")
    assert (first["time_hour"] < boundary).all()
    assert (second["time_hour"] >= boundary).all()
    assert len(log.read(start=boundary)) == len(second)
    assert len(log.read(end=boundary)) == len(first)  # end is exclusive
    hour = log.read(pd.Timestamp("2013-01-02 15:00", tz="UTC"), pd.Timestamp("2013-01-02 16:00", tz="UTC"))
    assert len(hour) == (second["time_hour"] == pd.Timestamp("2013-01-02 15:00", tz="UTC")).sum() > 0
    assert log.read(start=pd.Timestamp("2014-01-01", tz="UTC")).empty


def test_a_window_reads_only_the_partitions_that_may_hold_its_rows(log, store, scored_frame):
    """Pruned by each partition's Parquet statistics (its footer): the other day's file is not read whole."""
    import pyarrow.parquet as pq

    from tasks.inference_log import may_hold

    first, second = day(scored_frame, date(2013, 1, 1)), day(scored_frame, date(2013, 1, 2))
    first_path, second_path = append(log, first, "day-1"), append(log, second, "day-2")
    boundary = pd.Timestamp("2013-01-02", tz="UTC")
    with store.open(first_path) as handle:
        parquet = pq.ParquetFile(handle)
        assert not may_hold(parquet, "time_hour", boundary, None)
        assert may_hold(parquet, "time_hour", None, boundary)
        assert may_hold(parquet, "time_hour", boundary - pd.Timedelta(hours=1), boundary)  # its last hour
        assert not may_hold(parquet, "time_hour", None, first["time_hour"].min())  # end is exclusive
        assert may_hold(parquet, "no_such_column", boundary, None)  # cannot tell: read it

    assert len(log.read(start=boundary)) == len(second)  # day 1 skipped, day 2 read whole
    assert len(log.read(end=boundary)) == len(first)
    assert second_path in store.find("inference", "flights")


def test_labels_recorded_later_are_joined_on_read(log, scored_frame, flights_raw, flights_config):
    append(log, scored_frame, "scored")
    truth = flights_raw[[*KEY, "late"]]
    first_day = truth[truth["time_hour"] < pd.Timestamp("2013-01-02", tz="UTC")]
    # labels arrive as text timestamps (e.g. from a CSV feed): they must still match after Parquet
    arriving = first_day.assign(time_hour=first_day["time_hour"].dt.strftime("%Y-%m-%dT%H:%M:%S%z"))

    path = log.record_labels(arriving, "labels-day-1")

    assert path.endswith("/labels/flights/batch_id=labels-day-1/part-0.parquet")
    back = log.read()
    assert len(back) == len(scored_frame)  # labels never add rows
    labelled = back[back["late"].notna()]
    assert len(labelled) == len(first_day)
    assert (labelled["time_hour"] < pd.Timestamp("2013-01-02", tz="UTC")).all()
    merged = labelled.merge(truth, on=KEY, suffixes=("", "_true"))
    assert (merged["late"] == merged["late_true"]).all()
    assert back["late"].dtype == np.float64


def test_a_later_recorded_correction_wins(log, scored_frame, flights_raw):
    append(log, scored_frame, "scored")
    row = flights_raw[[*KEY, "late"]].iloc[[0]]
    log.record_labels(
        row.assign(late=1 - row["late"]), "zz-correction", recorded_at=pd.Timestamp("2013-02-01", tz="UTC")
    )
    log.record_labels(row, "aa-original", recorded_at=pd.Timestamp("2013-01-15", tz="UTC"))

    back = log.read()

    hit = back.merge(row[KEY], on=KEY)
    assert hit["late"].tolist() == [1 - row["late"].iloc[0]]  # the later recording, not the later batch id


def test_a_binary_prediction_outside_zero_one_is_rejected_before_writing(log, store, scored_frame):
    preds = predictions_for(scored_frame)
    preds[[5, 9]] = [1.7, -0.1]

    with pytest.raises(SchemaErrors) as info:
        append(log, scored_frame, "bad", preds)

    cases = info.value.failure_cases
    assert set(cases.loc[cases["column"] == PREDICTION, "failure_case"]) == {1.7, -0.1}
    assert store.find("inference", "flights") == []


@pytest.mark.parametrize("batch_id", [None, "", "../escape", "a/b"])
def test_a_missing_or_unsafe_batch_id_is_rejected_before_writing(log, store, scored_frame, batch_id):
    with pytest.raises(SchemaErrors) as info:
        append(log, scored_frame, batch_id)

    assert "batch_id" in set(info.value.failure_cases["column"])
    assert store.find("inference", "flights") == []


def test_every_schema_problem_is_reported_at_once(log, store, scored_frame):
    broken = scored_frame.copy()
    broken.loc[3, "flight"] = None  # a row the labels could never find
    preds = predictions_for(scored_frame)
    preds[0] = np.nan

    with pytest.raises(SchemaErrors) as info:
        log.append(broken, preds, "b1", "flights-late-arrival", "", SCORED_AT)

    assert {"flight", PREDICTION, "model_version"} <= set(info.value.failure_cases["column"])
    assert store.find("inference", "flights") == []


def test_an_empty_log_reads_as_an_empty_frame_with_every_column(log, flights_config):
    empty = log.read()

    assert empty.empty
    assert list(empty.columns) == [*log_columns(flights_config), "late"]
    assert str(empty["time_hour"].dtype) == "datetime64[ns, UTC]"
    assert empty[PREDICTION].dtype == np.float64
    assert log.batches() == []


def test_record_labels_names_the_missing_columns(log, store, flights_raw):
    labels = flights_raw[["time_hour", "carrier", "origin"]]

    with pytest.raises(ValueError, match=r"labels lack columns \['flight', 'late'\]"):
        log.record_labels(labels, "labels-1")

    assert store.find("labels", "flights") == []


def test_record_labels_rejects_a_binary_label_other_than_zero_or_one(log, store, flights_raw):
    labels = flights_raw[[*KEY, "late"]].head(10).copy()
    labels.loc[2, "late"] = 2

    with pytest.raises(SchemaErrors):
        log.record_labels(labels, "labels-1")

    assert store.find("labels", "flights") == []


def test_a_row_count_mismatch_is_an_error(log, scored_frame):
    with pytest.raises(ValueError, match="predictions for"):
        append(log, scored_frame, "b1", np.zeros(len(scored_frame) - 1))


# --- the other task types -------------------------------------------------------------------


def test_multiclass_logs_the_label_and_its_confidence(tmp_path, make_config, make_frame):
    config = make_config("multiclass", validation={"unique_key": ["ts"]})
    frame = make_frame("multiclass", rows=50)
    log = InferenceLog(DataStore((tmp_path / "d").as_uri()), config)
    labels = np.array(["low", "mid", "high"])[np.arange(50) % 3]
    confidence = np.linspace(0.34, 1.0, 50)

    with pytest.raises(ValueError, match="confidence"):
        log.append(frame, labels, "b1", "synthetic-model", "1", SCORED_AT)
    with pytest.raises(SchemaErrors):
        log.append(frame, labels, "b1", "synthetic-model", "1", SCORED_AT, confidence=confidence * 1.5)
    log.append(frame, labels, "b1", "synthetic-model", "1", SCORED_AT, confidence=confidence)
    log.record_labels(frame[["ts", "y"]].head(10), "labels")

    back = log.read()
    assert list(back.columns[-5:]) == [PREDICTION, CONFIDENCE, PROBABILITIES, REQUEST_ID, "y"]
    assert back[REQUEST_ID].isna().all()  # batch scoring answers no request
    assert back[PROBABILITIES].isna().all()  # a writer without class probabilities: unknown, not invented
    assert back[PREDICTION].tolist() == labels.tolist()
    np.testing.assert_allclose(back[CONFIDENCE], confidence)
    assert back["y"].tolist()[:10] == frame["y"].head(10).tolist()
    assert back["y"].iloc[10:].isna().all()
    assert "after" not in back.columns  # only timestamp, key, features and predictions are logged
    assert set(log_schema(config).columns) == set(back.columns) - {"y"}


def test_multiclass_class_probabilities_reach_the_log_and_make_log_loss_measurable(tmp_path, make_config, make_frame):
    """Scored through `scored_frame`, logged, labelled, read back: log loss equals sklearn's on the model."""
    from sklearn.metrics import log_loss

    from tasks.drift import performance_check
    from tasks.model import build_pipeline, features_and_target
    from tasks.score import scored_frame

    config = make_config(
        "multiclass",
        validation={"unique_key": ["ts"]},
        gate={"metric": "log_loss"},
        monitoring={"min_labelled_rows": 50},
    )
    frame = make_frame("multiclass", rows=300)
    model = build_pipeline(config, {"max_iter": 10}).fit(*features_and_target(config, frame))
    labels, confidence, probabilities = scored_frame(model, frame, config)
    log = InferenceLog(DataStore((tmp_path / "d").as_uri()), config)
    with pytest.raises(ValueError, match="class probabilities for"):
        log.append(frame, labels, "b1", "m", "1", SCORED_AT, confidence=confidence, probabilities=probabilities[:-1])
    log.append(frame, labels, "b1", "m", "1", SCORED_AT, confidence=confidence, probabilities=probabilities)
    log.record_labels(frame[["ts", "y"]], "labels")

    back = log.read()
    expected = log_loss(frame["y"], model.predict_proba(frame[config.features.all]), labels=model.classes_)
    check = performance_check(back, config, reference_value=0.5)
    assert check is not None
    assert check.current_value == pytest.approx(expected, rel=1e-9)
    assert check.drop == pytest.approx(expected - 0.5)  # lower is better: a rise is a positive drop
    stripped = back.assign(**{PROBABILITIES: None})  # rows from before probabilities were logged
    assert math.isnan(performance_check(stripped, config, reference_value=0.5).current_value)


def test_regression_logs_finite_values_and_refuses_inf(tmp_path, make_config, make_frame):
    config = make_config("regression", validation={"unique_key": ["ts"]})
    frame = make_frame("regression", rows=40)
    log = InferenceLog(DataStore((tmp_path / "d").as_uri()), config)
    values = np.linspace(-5, 30, 40)

    bad = values.copy()
    bad[7] = np.inf
    with pytest.raises(SchemaErrors):
        log.append(frame, bad, "b1", "synthetic-model", "1", SCORED_AT)
    log.append(frame, values, "b1", "synthetic-model", "1", SCORED_AT)

    np.testing.assert_allclose(log.read()[PREDICTION], values)


def test_without_a_unique_key_the_log_still_reads_but_labels_are_refused(tmp_path, make_config, make_frame):
    config = make_config("binary")
    frame = make_frame("binary", rows=20)
    log = InferenceLog(DataStore((tmp_path / "d").as_uri()), config)
    log.append(frame, np.full(20, 0.5), "b1", "synthetic-model", "1", SCORED_AT)

    assert len(log.read()) == 20
    assert log.read()["y"].isna().all()
    with pytest.raises(ValueError, match=r"needs validation\.unique_key"):
        log.record_labels(frame[["ts", "y"]], "labels")
