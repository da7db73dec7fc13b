"""The data contract of configs/flights.yaml, tested on a real week of 2013 NYC flights.

Every defect is planted in real rows and every test names the failure it expects exactly: the
file, the column, the rule, how many rows break it and an offending value.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime

import numpy as np
import pandas as pd
import pytest
from prefect.logging import disable_run_logger

from tasks.ingest import BatchReadError, LandedBatch, frame_to_parquet_bytes, parse_batch
from tasks.settings import TimeWindow, TrainingConfig
from tasks.stores import DataStore, Stores
from tasks.validate import BatchRejected, Failure, check_frame, validate

FILE = "flights-batch.parquet"
CARRIERS = "isin(['9E', 'AA', 'AS', 'B6', 'DL', 'EV', 'F9', 'FL', 'HA', 'MQ', 'OO', 'UA', 'US', 'VX', 'WN', 'YV'])"
KEY = "time_hour,carrier,flight,origin"
ROW_COUNT = "expect_table_row_count_to_be_between"


def failures_of(config: TrainingConfig, frame: pd.DataFrame, file: str = FILE) -> list[Failure]:
    return check_frame(config, frame, file)[1]


def summary(failures: list[Failure]) -> set[tuple[str | None, str, int | None]]:
    return {(f.column, f.rule, f.failing_rows) for f in failures}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- check_frame: the schema and the suite on frames -------------------------------------------


def test_real_week_passes_and_timestamp_is_utc(flights_config, good):
    validated, failures = check_frame(flights_config, good, FILE)

    assert failures == []
    assert len(validated) == len(good) > 5000
    assert str(validated["time_hour"].dtype) == "datetime64[ns, UTC]"
    assert validated["temp"].dtype == np.float64  # ints and floats both coerce to float


def test_missing_column_is_named(flights_config, good):
    failures = failures_of(flights_config, good.drop(columns=["temp"]))

    assert failures == [Failure(FILE, "temp", "column is missing", None)]
    assert failures[0].describe() == f"{FILE}: column 'temp': column is missing"


def test_renamed_column_reports_the_expected_name_missing(flights_config, good):
    failures = failures_of(flights_config, good.rename(columns={"carrier": "airline"}))

    # the unique key includes carrier, so its expectation is skipped: the schema names the column once
    assert failures == [Failure(FILE, "carrier", "column is missing", None)]


def test_words_in_a_numeric_column_fail_the_coercion_once(flights_config, good):
    good["temp"] = good["temp"].astype(object)
    good.loc[[0, 5, 9], "temp"] = "warm"

    failures = failures_of(flights_config, good)

    # one failure: not the raw dtype check again, nor the range checks crashing on the strings
    assert failures == [Failure(FILE, "temp", "coerce_dtype('float64')", 3, ["warm"])]


def test_numeric_strings_are_coerced_not_rejected(flights_config, good):
    good["temp"] = good["temp"].map(lambda v: None if pd.isna(v) else f"{v:.2f}")

    validated, failures = check_frame(flights_config, good, FILE)

    assert failures == []
    assert validated["temp"].dtype == np.float64


def test_value_outside_the_closed_set(flights_config, good):
    good.loc[[3, 400, 4000], "carrier"] = "ZZ"

    failures = failures_of(flights_config, good)

    assert failures == [Failure(FILE, "carrier", CARRIERS, 3, ["ZZ"])]


@pytest.mark.parametrize(
    ("value", "rule"),
    [(150.0, "less_than_or_equal_to(100.0)"), (-5.0, "greater_than_or_equal_to(0.0)")],
)
def test_out_of_range_names_the_bound(flights_config, good, value, rule):
    good.loc[[10, 20], "humid"] = value

    failures = failures_of(flights_config, good)

    assert failures == [Failure(FILE, "humid", rule, 2, [value])]


def test_nan_flood_breaks_the_null_ratio(flights_config, good):
    good["temp"] = np.nan

    failures = failures_of(flights_config, good)

    assert failures == [Failure(FILE, "temp", "max_null_ratio(0.05)", len(good), ["null ratio 1.000"])]


def test_null_ratio_limit_is_inclusive(flights_config, good):
    allowed = int(len(good) * 0.05)  # the real week already misses some temperatures; top it up
    missing = good.index[good["temp"].isna()]
    extra = good.index[good["temp"].notna()][: allowed - len(missing)]
    good.loc[extra, "temp"] = np.nan
    assert good["temp"].isna().sum() == allowed

    assert failures_of(flights_config, good) == []

    good.loc[good.index[good["temp"].notna()][0], "temp"] = np.nan
    assert failures_of(flights_config, good) == [
        Failure(FILE, "temp", "max_null_ratio(0.05)", allowed + 1, [f"null ratio {(allowed + 1) / len(good):.3f}"])
    ]


@pytest.mark.parametrize(
    ("column", "value", "rule"),
    [
        ("temp", np.inf, "less_than_or_equal_to(120.0)"),
        ("temp", -np.inf, "greater_than_or_equal_to(-30.0)"),
        ("wind_gust", np.inf, "less_than_or_equal_to(150.0)"),  # mostly null, still bounded
    ],
)
def test_infinity_is_rejected_by_the_range_check(flights_config, good, column, value, rule):
    good.loc[[1, 2], column] = value

    failures = failures_of(flights_config, good)

    assert failures == [Failure(FILE, column, rule, 2, [value]), Failure(FILE, column, "finite", 2, [value])]


def test_infinity_is_rejected_where_no_bounds_are_declared(flights_config, good):
    raw = flights_config.model_dump(mode="json")
    del raw["validation"]["columns"]["temp"]  # temp now has no range and no null rule
    unbounded = TrainingConfig.model_validate(raw)
    good["temp"] = good["temp"].fillna(50.0)
    good.loc[[3, 4, 5], "temp"] = np.inf

    assert failures_of(unbounded, good) == [Failure(FILE, "temp", "finite", 3, [np.inf])]


def test_duplicate_rows_break_the_unique_key(flights_config, good):
    doubled = pd.concat([good, good.iloc[[10, 20, 30]]], ignore_index=True)

    failures = failures_of(flights_config, doubled)

    # Great Expectations counts every row of a duplicated key: 3 originals + 3 copies
    assert failures == [Failure(FILE, KEY, "expect_compound_columns_to_be_unique", 6, [])]


def test_a_duplicate_breaks_a_one_column_key_and_a_derived_timestamp_is_checked_like_any(repo_root):
    from tasks.ingest import read_source
    from tasks.settings import load_config

    seattle = load_config(repo_root / "configs" / "seattle-weather.yaml")  # key: [date]
    days = read_source(seattle)
    doubled = pd.concat([days, days.iloc[[5]]], ignore_index=True)

    assert failures_of(seattle, days, "seattle-weather.csv") == []
    assert failures_of(seattle, doubled, "seattle-weather.csv") == [
        Failure("seattle-weather.csv", "date", "expect_column_values_to_be_unique", 2, [])
    ]
    bikes = load_config(repo_root / "configs" / "bikeshare.yaml")  # key: [time], derived from day and hr
    hours = read_source(bikes).drop(columns=["time"])
    hours.loc[7, "hr"] = hours.loc[6, "hr"]  # two rows of the same hour
    assert failures_of(bikes, hours, "Bikeshare.csv") == [
        Failure("Bikeshare.csv", "time", "expect_column_values_to_be_unique", 2, [])
    ]


def test_too_few_rows(flights_config, good):
    failures = failures_of(flights_config, good.head(10))

    assert failures == [
        Failure(FILE, None, ROW_COUNT, None, ["observed 10, expected {'min_value': 1000, 'max_value': 2000000}"])
    ]
    assert failures[0].describe().startswith(f"{FILE}: table: {ROW_COUNT}")


def test_binary_target_outside_zero_one(label_provided, good):
    good.loc[[7], "late"] = 2

    failures = failures_of(label_provided, good)

    assert failures == [Failure(FILE, "late", "isin([0, 1])", 1, [2.0])]


def test_unlabelled_rows_are_rejected(flights_config, good):
    good.loc[[4, 8], "arr_delay"] = np.nan  # the label is derived from it: no arrival, no label

    failures = failures_of(flights_config, good)

    assert [(f.column, f.rule, f.failing_rows) for f in failures] == [("late", "not_nullable", 2)]


def test_label_shift_breaks_the_mean_bound(flights_config, good):
    good["arr_delay"] = 100.0  # every flight late

    failures = failures_of(flights_config, good)

    assert [(f.column, f.rule) for f in failures] == [("late", "expect_column_mean_to_be_between")]
    assert failures[0].examples == ["observed 1.0, expected {'min_value': 0.05, 'max_value': 0.6}"]


def test_every_defect_is_reported_in_one_call(label_provided, good):
    bad = good.drop(columns=["dewp"])
    bad.loc[[100, 101], "carrier"] = "ZZ"
    bad.loc[[200], "humid"] = 150.0
    bad.loc[[300], "late"] = 2
    bad = pd.concat([bad, bad.iloc[[500, 600]]], ignore_index=True)

    failures = failures_of(label_provided, bad, "many-defects.csv")

    assert {f.file for f in failures} == {"many-defects.csv"}
    assert summary(failures) == {
        ("dewp", "column is missing", None),
        ("carrier", CARRIERS, 2),
        ("humid", "less_than_or_equal_to(100.0)", 1),
        ("late", "isin([0, 1])", 1),
        (KEY, "expect_compound_columns_to_be_unique", 4),
    }


# --- parse_batch: bytes that cannot become a frame ----------------------------------------------


def test_zero_byte_file():
    with pytest.raises(BatchReadError, match="empty") as info:
        parse_batch("batch.csv", b"")
    assert info.value.path == "batch.csv"
    assert str(info.value).startswith("batch.csv: ")


def test_blank_csv_has_no_columns():
    with pytest.raises(BatchReadError, match="no columns"):
        parse_batch("batch.csv", b"\n\n")


def test_header_only_csv_parses_to_zero_rows_then_fails_the_row_count(flights_config, good):
    frame = parse_batch("header-only.csv", good.head(0).to_csv(index=False).encode())

    assert frame.empty
    assert list(frame.columns) == list(good.columns)
    failures = failures_of(flights_config, frame, "header-only.csv")
    observed = ["observed 0, expected {'min_value': 1000, 'max_value': 2000000}"]
    assert [f for f in failures if f.rule == ROW_COUNT] == [Failure("header-only.csv", None, ROW_COUNT, None, observed)]
    # an empty column has no null ratio: no spurious null-ratio failures beside the row count
    assert not [f for f in failures if f.rule.startswith("max_null_ratio")]


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_truncated_parquet(flights_week_parquet, keep):
    cut = flights_week_parquet[: int(len(flights_week_parquet) * keep)]

    with pytest.raises(BatchReadError, match="unreadable parquet") as info:
        parse_batch("cut.parquet", cut)
    assert info.value.path == "cut.parquet"


def test_latin1_csv_is_not_utf8(good):
    text = good.head(20).to_csv(index=False)
    data = text.encode() + text.splitlines()[1].replace(",JFK,", ",Zürich,", 1).encode("latin-1") + b"\n"

    with pytest.raises(BatchReadError, match="not UTF-8") as info:
        parse_batch("latin1.csv", data)
    assert info.value.path == "latin1.csv"
    assert f"at byte {data.index('ü'.encode('latin-1'))}" in info.value.problem


@pytest.mark.parametrize("name", ["batch.json", "batch.xlsx", "batch.csv.gz", "batch"])
def test_unsupported_suffix(name):
    with pytest.raises(BatchReadError, match="unsupported file type"):
        parse_batch(name, b"a,b\n1,2\n")


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_real_week_round_trips_through_both_formats(flights_config, good, fmt):
    data = good.to_csv(index=False).encode() if fmt == "csv" else frame_to_parquet_bytes(good)

    validated, failures = check_frame(flights_config, parse_batch(f"week.{fmt}", data), f"week.{fmt}")

    assert failures == []
    assert str(validated["time_hour"].dtype) == "datetime64[ns, UTC]"  # CSV text is parsed back to UTC
    assert validated["time_hour"].equals(good["time_hour"])


# --- the validate task end to end, with a real data store and no Prefect server -----------------


def land(stores: Stores, config: TrainingConfig, name: str, data: bytes) -> LandedBatch:
    path, digest = DataStore(stores.data_uri).land(config.name, name, data)
    return LandedBatch(path=path, digest=digest, name=name)


def run_validate(config: TrainingConfig, batches: list[LandedBatch], stores: Stores, window: TimeWindow):
    with disable_run_logger():
        return validate.fn(config=config, batches=batches, window=window, stores=stores)


def test_bad_batch_is_quarantined_byte_identical_with_its_reason(flights_config, good, stores):
    good.loc[[3, 400, 4000], "carrier"] = "ZZ"
    data = frame_to_parquet_bytes(good)
    batch = land(stores, flights_config, "bad-carriers.parquet", data)
    store = DataStore(stores.data_uri)

    with pytest.raises(BatchRejected) as info:
        run_validate(flights_config, [batch], stores, flights_config.window)

    message = str(info.value)
    assert f"  - bad-carriers.parquet: column 'carrier': {CARRIERS}, 3 row(s), e.g. ['ZZ']" in message
    [target] = info.value.quarantined
    assert f"quarantined: {target}" in message
    assert [(f.file, f.column, f.failing_rows) for f in info.value.failures] == [("bad-carriers.parquet", "carrier", 3)]

    assert not store.fs.exists(batch.path)
    assert store.listing("landed", flights_config.name) == []
    assert store.listing("quarantine", flights_config.name) == sorted([target, f"{target}.reason.json"])
    assert target.rsplit("/", 1)[-1] == batch.path.rsplit("/", 1)[-1]
    assert sha256(store.read_bytes(target)) == batch.digest == sha256(data)

    reason = json.loads(store.read_bytes(f"{target}.reason.json"))
    assert reason["file"] == "bad-carriers.parquet"
    assert reason["sha256"] == batch.digest
    assert reason["landed_path"] == batch.path
    assert datetime.fromisoformat(reason["rejected_at"]).tzinfo is not None
    assert reason["failures"] == [
        {"file": "bad-carriers.parquet", "column": "carrier", "rule": CARRIERS, "failing_rows": 3, "examples": ["ZZ"]}
    ]


@pytest.mark.parametrize(
    ("name", "cut", "problem"),
    [
        ("empty.csv", lambda data: b"", "readable: empty file (0 bytes)"),
        ("cut.parquet", lambda data: data[: len(data) // 2], "readable: unreadable parquet"),
    ],
)
def test_unreadable_batch_is_quarantined(flights_config, flights_week_parquet, stores, name, cut, problem):
    batch = land(stores, flights_config, name, cut(flights_week_parquet))

    with pytest.raises(BatchRejected, match=name) as info:
        run_validate(flights_config, [batch], stores, flights_config.window)

    [failure] = info.value.failures
    assert (failure.file, failure.column, failure.failing_rows) == (name, None, None)
    assert failure.rule.startswith(problem)
    store = DataStore(stores.data_uri)
    assert store.listing("landed", flights_config.name) == []
    reason = json.loads(store.read_bytes(f"{info.value.quarantined[0]}.reason.json"))
    assert reason["failures"][0]["rule"].startswith(problem)


def test_good_batch_returns_the_window_with_model_columns_only(flights_config, flights_week_parquet, good, stores):
    batch = land(stores, flights_config, "week.parquet", flights_week_parquet)
    window = TimeWindow(start=date(2013, 1, 2), end=date(2013, 1, 5))

    frame = run_validate(flights_config, [batch], stores, window)

    expected_columns = [flights_config.timestamp, *flights_config.features.all, flights_config.target]
    assert list(frame.columns) == expected_columns
    assert not set(flights_config.leakage) & set(frame.columns)
    inside = (good["time_hour"] >= pd.Timestamp("2013-01-02", tz="UTC")) & (
        good["time_hour"] < pd.Timestamp("2013-01-05", tz="UTC")
    )
    assert len(frame) == int(inside.sum()) == 915 + 901 + 909
    assert frame["time_hour"].min() >= pd.Timestamp("2013-01-02", tz="UTC")
    assert frame["time_hour"].max() < pd.Timestamp("2013-01-05", tz="UTC")
    assert str(frame["time_hour"].dtype) == "datetime64[ns, UTC]"
    assert frame.index.equals(pd.RangeIndex(len(frame)))
    # a good batch moves, byte-identical, from landed/ to processed/
    store = DataStore(stores.data_uri)
    assert store.listing("landed", flights_config.name) == []
    [processed] = store.listing("processed", flights_config.name)
    assert processed == store.processed_path(flights_config.name, batch.path)
    assert sha256(store.read_bytes(processed)) == batch.digest
    # landing the same bytes again finds the processed batch instead of landing a second copy
    assert store.land(flights_config.name, batch.name, store.read_bytes(processed)) == (processed, batch.digest)


def test_one_bad_batch_stops_the_run_and_the_good_one_is_processed(flights_config, good, stores):
    first, second = good.iloc[:3000].copy(), good.iloc[3000:].copy()
    second.loc[second.index[:2], "humid"] = 150.0
    ok = land(stores, flights_config, "part-1.parquet", frame_to_parquet_bytes(first))
    bad = land(stores, flights_config, "part-2.csv", second.to_csv(index=False).encode())
    store = DataStore(stores.data_uri)

    with pytest.raises(BatchRejected) as info:
        run_validate(flights_config, [ok, bad], stores, flights_config.window)

    assert summary(info.value.failures) == {("humid", "less_than_or_equal_to(100.0)", 2)}
    assert {f.file for f in info.value.failures} == {"part-2.csv"}
    assert "part-1.parquet" not in str(info.value)
    assert str(info.value).startswith("1 batch(es) rejected and quarantined (1 failure(s)):")
    assert store.listing("landed", flights_config.name) == []
    assert store.listing("processed", flights_config.name) == [store.processed_path(flights_config.name, ok.path)]
    [target] = info.value.quarantined
    assert store.listing("quarantine", flights_config.name) == [target, f"{target}.reason.json"]
    assert sha256(store.read_bytes(target)) == bad.digest


# --- landing -------------------------------------------------------------------------------------


def test_landing_is_content_addressed_and_immutable(flights_config, flights_week_parquet, stores):
    store = DataStore(stores.data_uri)

    first = store.land(flights_config.name, "week.parquet", flights_week_parquet)
    again = store.land(flights_config.name, "week.parquet", flights_week_parquet)

    assert first == again
    path, digest = first
    assert digest == sha256(flights_week_parquet)
    assert path.rsplit("/", 1)[-1] == f"{digest[:16]}-week.parquet"
    assert store.listing("landed", flights_config.name) == [path]  # one file, no .partial left behind
    assert not store.fs.exists(f"{path}.partial")

    # other bytes under the same name land beside it; the first batch is untouched
    other_path, other_digest = store.land(flights_config.name, "week.parquet", flights_week_parquet[:-1] + b"!")
    assert other_path != path
    assert other_digest != digest
    assert sorted(store.listing("landed", flights_config.name)) == sorted([path, other_path])
    assert sha256(store.read_bytes(path)) == digest
